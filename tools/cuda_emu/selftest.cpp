// The emulator's own checks (tools/cuda_emu/run selftest): warp collectives against results
// written from the CUDA programming guide's definitions (not from device.cuh's PTX rule), a warp
// whose upper half has exited, and misuse that must be reported: each misuse kernel runs in a
// forked child that must abort with the expected words on stderr (-v shows them).
#include "device.cuh"

#include <cstdio>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

namespace {

constexpr int kThreads = 64;
constexpr int kOut = 16; // results per thread

__global__ void collectives(uint32_t* out) {
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32;
  uint32_t* o = out + tid * kOut;
  const unsigned v = 100 + lane;
  o[0] = __ballot_sync(~0u, lane % 3 == 0);
  o[1] = __shfl_sync(~0u, v, 3, 8);
  o[2] = __shfl_sync(~0u, v, -1);
  o[3] = __shfl_up_sync(~0u, v, 2, 16);
  o[4] = __shfl_down_sync(~0u, v, 5);
  o[5] = __shfl_xor_sync(~0u, v, 4, 8);
  o[6] = __shfl_xor_sync(~0u, v, 9, 8);
  o[7] = static_cast<uint32_t>(__shfl_down_sync(~0u, 1e10 + lane, 1) - 1e10); // both halves
  o[8] = __reduce_max_sync(~0u, static_cast<unsigned>(lane * 7 % 32));
  o[9] = static_cast<uint32_t>(__reduce_min_sync(~0u, lane - 10));
  o[10] = __reduce_add_sync(~0u, static_cast<unsigned>(lane));
  o[11] = __any_sync(~0u, lane == 31 && tid < 32);
  o[12] = __all_sync(~0u, lane < 31);
  o[13] = __popc(static_cast<unsigned>(tid) * 2654435761u) + 64 * __clz(tid);
  __syncwarp();
  if (lane >= 16) return; // the rest of the warp still meets; exited lanes vote 0
  o[14] = __ballot_sync(~0u, 1);
  o[15] = __shfl_xor_sync(~0u, v, 1);
}

uint32_t expected(int tid, int i) {
  const int lane = tid % 32;
  auto own_or = [&](int src, bool valid) { return 100u + (valid ? src : lane); };
  switch (i) {
    case 0: {
      uint32_t bits = 0;
      for (int l = 0; l < 32; l += 3) bits |= 1u << l;
      return bits;
    }
    case 1:
      return 100u + lane / 8 * 8 + 3; // lane 3 of its 8-lane group
    case 2:
      return 131; // srcLane -1 is lane 31 (modulo width)
    case 3:
      return own_or(lane - 2, lane % 16 >= 2); // below the group start: own value
    case 4:
      return own_or(lane + 5, lane + 5 < 32);
    case 5:
      return own_or(lane ^ 4, true);
    case 6:
      return own_or(lane ^ 9, (lane ^ 9) / 8 < lane / 8); // earlier groups only
    case 7:
      return static_cast<uint32_t>(lane + 1 < 32 ? lane + 1 : lane);
    case 8:
      return 31;
    case 9:
      return static_cast<uint32_t>(-10);
    case 10:
      return 496;
    case 11:
      return tid < 32 ? 1 : 0;
    case 12:
      return 0;
    case 13:
      return __builtin_popcount(static_cast<unsigned>(tid) * 2654435761u) +
             64 * (tid == 0 ? 32 : __builtin_clz(static_cast<unsigned>(tid)));
    case 14:
      return lane < 16 ? 0xffffu : 0xdeadu;
    default:
      return lane < 16 ? 100u + (lane ^ 1) : 0xdeadu;
  }
}

bool check_collectives() {
  std::vector<uint32_t> out(kThreads * kOut, 0xdeadu);
  emu_launch(&collectives, EmuCfg(1, kThreads), out.data());
  int bad = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kOut; ++i) {
      if (out[t * kOut + i] == expected(t, i)) continue;
      if (++bad <= 5) {
        printf("  thread %d result %d: %u, expected %u\n", t, i, out[t * kOut + i], expected(t, i));
      }
    }
  }
  printf("%-44s %s\n", "collectives (64 threads, half a warp exited)", bad == 0 ? "OK" : "FAIL");
  return bad == 0;
}

// ---- misuse that must be reported ---------------------------------------------------------------

__global__ void part_of_warp_at_another_collective() {
  if (threadIdx.x % 32 < 16) {
    __ballot_sync(~0u, 1);
  } else {
    __syncwarp();
  }
}
__global__ void part_of_warp_at_a_shuffle_deadlocks() {
  if (threadIdx.x % 32 < 16) __shfl_sync(~0u, 1, 0);
  __syncthreads();
}
__global__ void partial_mask() {
  if (threadIdx.x % 32 < 16) __ballot_sync(0xffffu, 1);
}
__global__ void reads_an_exited_lane() {
  if (threadIdx.x % 32 >= 16) return;
  __shfl_sync(~0u, 1, 20);
}
__global__ void ldmatrix_from_two_call_sites() {
  uint32_t r[4];
  const uint32_t addr = (threadIdx.x % 32) * 16;
  if (threadIdx.x % 32 < 16) {
    kiln::backends::cuda::dev::ldmatrix_x4(r, addr);
  } else {
    kiln::backends::cuda::dev::ldmatrix_x4(r, addr);
  }
}
__global__ void writes_past_dynamic_smem() {
  if (threadIdx.x == 0) kiln::backends::cuda::smem[2000] = 1;
}

bool verbose = false; // -v: show each report

// Runs `launch` in a child; true when it aborts with `words` on stderr.
template <class F>
bool reported(const char* name, F launch, const char* words) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    launch();
    _exit(0);
  }
  close(fds[1]);
  std::string err;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) err.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  const bool ok = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && err.find(words) != err.npos;
  printf("%-44s %s\n", name, ok ? "OK (reported)" : "FAIL");
  if (!ok) printf("  expected an abort saying '%s'; stderr:\n", words);
  if (!ok || verbose) printf("%s", err.c_str());
  return ok;
}

} // namespace

int main(int argc, char** argv) {
  verbose = argc > 1 && std::string(argv[1]) == "-v";
  bool ok = check_collectives();
  ok &= reported(
      "ballot vs __syncwarp in one warp",
      [] { emu_launch(&part_of_warp_at_another_collective, EmuCfg(1, 64)); },
      "part of the warp does not reach");
  ok &= reported(
      "half a warp at a shuffle, half at __syncthreads",
      [] { emu_launch(&part_of_warp_at_a_shuffle_deadlocks, EmuCfg(1, 64)); }, "is deadlocked");
  ok &= reported(
      "partial mask", [] { emu_launch(&partial_mask, EmuCfg(1, 32)); },
      "only full-warp masks are emulated");
  ok &= reported(
      "shuffle from an exited lane", [] { emu_launch(&reads_an_exited_lane, EmuCfg(1, 32)); },
      "which has exited");
  ok &= reported(
      "ldmatrix from two call sites",
      [] { emu_launch(&ldmatrix_from_two_call_sites, EmuCfg(1, 32)); },
      "part of the warp does not reach");
  ok &= reported(
      "write past the dynamic shared memory",
      [] { emu_launch(&writes_past_dynamic_smem, EmuCfg(1, 32, 1024)); }, "past its 1024 bytes");
  return ok ? 0 : 1;
}
