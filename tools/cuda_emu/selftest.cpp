// The emulator's own checks (tools/cuda_emu/run selftest): warp collectives against results
// written from the CUDA programming guide's definitions (not from device.cuh's PTX rule), a warp
// whose upper half has exited, and misuse that must be reported: each misuse kernel runs in a
// forked child that must abort with the expected words on stderr (-v shows them).
#include "device.cuh"

#include <cmath>
#include <cstdio>
#include <cstring>
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

// ---- hazards: a clean kernel (no report, results right) and misuse that must be reported
// ---------
namespace dev = kiln::backends::cuda::dev;
using kiln::backends::cuda::smem;

uint16_t bf16_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return static_cast<uint16_t>(u >> 16); // the test values are exact in bf16
}
float a_value(int r, int k) {
  return static_cast<float>((r * 3 + k * 5) % 7 - 3);
}
float b_value(int n, int k) {
  return static_cast<float>((n * 2 + k) % 5 - 2);
}
// A (64 x 16) and B (32 x 16), K-major in the 128-byte swizzle at 0 and 8192.
__device__ void store_operands() {
  for (int i = static_cast<int>(threadIdx.x); i < 64 * 16; i += 128) {
    const int r = i / 16, k = i % 16;
    const uint16_t h = bf16_bits(a_value(r, k));
    std::memcpy(smem + dev::sw128(r, k / 8, 64) + (k % 8) * 2, &h, 2);
    if (r < 32) {
      const uint16_t g = bf16_bits(b_value(r, k));
      std::memcpy(smem + 8192 + dev::sw128(r, k / 8, 32) + (k % 8) * 2, &g, 2);
    }
  }
}

// Barriers, a __syncwarp, cp.async retired before use, a wgmma from fenced operands: out[t] is
// (for thread t) the sum its warp's neighbour wrote, the copied word, the accumulator before the
// wait (NaN), and its 16 product elements.
__global__ void clean_hazards(const uint32_t* src, float* out) {
  const int t = static_cast<int>(threadIdx.x), lane = t % 32;
  auto* words = reinterpret_cast<uint32_t*>(smem + 16384);
  words[t] = static_cast<uint32_t>(t);
  __syncwarp();
  const uint32_t neighbour = words[(t & ~31) | ((lane + 1) % 32)];
  __syncthreads();
  const uint32_t across = words[(t + 64) % 128]; // another warp's word, after the barrier
  __syncthreads();                               // every read is done before the writes
  words[t] = neighbour + across;
  if (t < 32) dev::cp_async_16(dev::smem_addr(smem + 20480 + 16 * t), src + 4 * t, 16);
  dev::cp_async_commit();
  store_operands();
  dev::cp_async_wait<0>();
  dev::fence_proxy_async();
  __syncthreads();
  float d[16];
  for (float& v : d) v = 1.0f;
  dev::wgmma_fence();
  dev::wgmma_m64n32k16(d, dev::sw128_desc(0), dev::sw128_desc(8192), true);
  dev::wgmma_commit();
  float* o = out + t * 19;
  o[2] = d[0];
  dev::wgmma_wait<0>();
  o[0] = static_cast<float>(words[t]);
  o[1] = static_cast<float>(reinterpret_cast<const uint32_t*>(smem + 20480)[t]);
  for (int i = 0; i < 16; ++i) o[3 + i] = d[i];
}

bool check_clean_hazards() {
  std::vector<uint32_t> src(128);
  for (int i = 0; i < 128; ++i) src[i] = 1000u + i;
  std::vector<float> out(128 * 19, -1);
  emu_launch(&clean_hazards, EmuCfg(1, 128, 32768), src.data(), out.data());
  int bad = 0;
  for (int t = 0; t < 128; ++t) {
    const int lane = t % 32, w = t / 32;
    const float* o = out.data() + t * 19;
    const float neighbour = static_cast<float>((t & ~31) | ((lane + 1) % 32));
    bad += o[0] != neighbour + static_cast<float>((t + 64) % 128);
    bad += o[1] != static_cast<float>(1000 + t);
    bad += !std::isnan(o[2]);
    const int g = lane / 4, c = 2 * (lane % 4);
    for (int i = 0; i < 16; ++i) {
      const int row = 16 * w + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + c + i % 2;
      float ref = 1.0f;
      for (int k = 0; k < 16; ++k) ref += a_value(row, k) * b_value(col, k);
      bad += o[3 + i] != ref;
    }
  }
  printf("%-44s %s\n", "barriers, cp.async and wgmma used correctly", bad == 0 ? "OK" : "FAIL");
  return bad == 0;
}

__global__ void missing_syncthreads() {
  auto* words = reinterpret_cast<uint32_t*>(smem);
  words[threadIdx.x] = threadIdx.x;
  if (words[(threadIdx.x + 32) % 64] == 12345u) words[0] = 0;
}
__global__ void missing_syncwarp() {
  auto* words = reinterpret_cast<uint32_t*>(smem);
  words[threadIdx.x] = threadIdx.x;
  __syncthreads();
  words[threadIdx.x] += 1;
  if (words[threadIdx.x ^ 1] == 12345u) words[0] = 0; // same warp, no __syncwarp
}
__global__ void reads_before_cp_async_wait(const uint32_t* src) {
  dev::cp_async_16(dev::smem_addr(smem + 16 * threadIdx.x), src + 4 * threadIdx.x, 16);
  dev::cp_async_commit();
  // the thread's own copy, before its wait
  if (reinterpret_cast<const uint32_t*>(smem)[4 * threadIdx.x] == 12345u) smem[0] = 0;
  dev::cp_async_wait<0>();
}
__global__ void cp_async_over_a_tile_being_read(const uint32_t* src) {
  dev::cp_async_16(dev::smem_addr(smem + 16 * threadIdx.x), src, 16);
  dev::cp_async_commit();
  dev::cp_async_wait<0>();
  __syncthreads();
  const uint32_t v = reinterpret_cast<const uint32_t*>(smem)[4 * ((threadIdx.x + 1) % 64)];
  // the next tile into the same bytes, with no barrier after the reads above
  dev::cp_async_16(dev::smem_addr(smem + 16 * threadIdx.x), src + v % 4, 16);
  dev::cp_async_commit();
  dev::cp_async_wait<0>();
}
__global__ void wgmma_without_proxy_fence() {
  store_operands();
  __syncthreads();
  float d[16] = {};
  dev::wgmma_fence();
  dev::wgmma_m64n32k16(d, dev::sw128_desc(0), dev::sw128_desc(8192), false);
  dev::wgmma_commit();
  dev::wgmma_wait<0>();
}
__global__ void wgmma_never_waited() {
  float d[16] = {};
  dev::wgmma_fence();
  dev::wgmma_m64n32k16(d, dev::sw128_desc(0), dev::sw128_desc(8192), false);
  dev::wgmma_commit();
}

// Stores the operands, hands them to the tensor cores (proxy fence, barrier, wgmma fence) and
// runs one m64n32 product into d of the descriptors a (K-major) and b (K-major; MN-major when
// mn_b). Each misuse below changes one descriptor or what follows.
__device__ void one_product(float (&d)[16], uint64_t a, uint64_t b, bool mn_b) {
  store_operands();
  dev::fence_proxy_async();
  __syncthreads();
  dev::wgmma_fence();
  if (mn_b) {
    dev::wgmma_m64k16_bt<32>(d, a, b, false);
  } else {
    dev::wgmma_m64n32k16(d, a, b, false);
  }
  dev::wgmma_commit();
  dev::wgmma_wait<0>();
}
// B MN-major from the middle of a 128-byte swizzle row (columns 32-63 of a 64-wide atom).
__global__ void wgmma_mn_major_inside_an_atom() {
  float d[16];
  one_product(d, dev::sw128_desc(0), dev::sw128_desc_mn(8192 + 64, 8192), true);
}
// A K-major starting at row 1 of an 8-row swizzle pattern.
__global__ void wgmma_start_off_the_pattern() {
  float d[16];
  one_product(d, dev::sw128_desc(128), dev::sw128_desc(8192), false);
}
// A second wgmma after a wait with no wgmma_fence in between.
__global__ void wgmma_without_fence() {
  float d[16];
  one_product(d, dev::sw128_desc(0), dev::sw128_desc(8192), false);
  for (float& v : d) v *= 0.5f; // the accumulators rewritten by plain code
  dev::wgmma_m64n32k16(d, dev::sw128_desc(0), dev::sw128_desc(8192), true);
  dev::wgmma_commit();
  dev::wgmma_wait<0>();
}

// ---- named barriers: producer/consumer hand-offs (no report, results right) and misuse
// Warps 0 and 1 (the producers) fill 64 words and arrive at barrier 2 (96 threads); warp 2 (the
// consumer) waits there and reads them. Then a ring of 2 slots used 4 times: "full" barriers 2
// and 3, "empty" barriers 4 and 5 (the producers wait there before overwriting a slot the consumer
// has read), after a __syncthreads. out: the consumer's 32 sums of the first hand-off, then 32 per
// ring round.
__global__ void producer_consumer(uint32_t* out) {
  const int t = static_cast<int>(threadIdx.x), lane = t % 32;
  auto* words = reinterpret_cast<uint32_t*>(smem);
  if (t < 64) {
    words[t] = 7u * static_cast<uint32_t>(t) + 1;
    dev::named_barrier_arrive(2, 96);
  } else {
    dev::named_barrier_sync(2, 96);
    out[lane] = words[lane] + words[lane + 32];
  }
  // Barrier 2 is the ring's too: without this, the producers' first ring arrival could complete
  // the phase above before the consumer has arrived (EMU_SHUFFLE finds that race).
  __syncthreads();
  uint32_t* ring = words + 64;
  for (int i = 0; i < 4; ++i) {
    const int slot = i % 2;
    if (t < 64) {
      if (i >= 2) dev::named_barrier_sync(4 + slot, 96); // the consumer is done with the slot
      ring[64 * slot + t] = 100u * static_cast<uint32_t>(i) + static_cast<uint32_t>(t);
      dev::named_barrier_arrive(2 + slot, 96);
    } else {
      dev::named_barrier_sync(2 + slot, 96);
      out[32 + 32 * i + lane] = ring[64 * slot + lane] + ring[64 * slot + lane + 32];
      if (i < 2) dev::named_barrier_arrive(4 + slot, 96);
    }
  }
}
// Happens-before is transitive: warp 0 writes and arrives at barrier 1; warp 1 waits there,
// writes and arrives at barrier 2; warp 2 waits at barrier 2 and reads both warps' words.
__global__ void named_barrier_chain(uint32_t* out) {
  const int t = static_cast<int>(threadIdx.x), lane = t % 32;
  auto* words = reinterpret_cast<uint32_t*>(smem);
  if (t < 32) {
    words[lane] = 3u * static_cast<uint32_t>(lane) + 5;
    dev::named_barrier_arrive(1, 64);
  } else if (t < 64) {
    dev::named_barrier_sync(1, 64);
    words[32 + lane] = words[lane] + 1000u;
    dev::named_barrier_arrive(2, 64);
  } else {
    dev::named_barrier_sync(2, 64);
    out[lane] = words[lane] + words[32 + lane];
  }
}

bool check_named_barriers() {
  std::vector<uint32_t> out(160, 0xdeadu);
  emu_launch(&producer_consumer, EmuCfg(1, 96, 1024), out.data());
  int bad = 0;
  for (int lane = 0; lane < 32; ++lane) {
    bad += out[lane] != 14u * lane + 226u;
    for (int i = 0; i < 4; ++i) bad += out[32 + 32 * i + lane] != 200u * i + 2u * lane + 32u;
  }
  printf("%-44s %s\n", "named barriers: producers, consumer, a ring", bad == 0 ? "OK" : "FAIL");
  std::vector<uint32_t> chain(32, 0xdeadu);
  emu_launch(&named_barrier_chain, EmuCfg(1, 96, 1024), chain.data());
  int bad_chain = 0;
  for (int lane = 0; lane < 32; ++lane) bad_chain += chain[lane] != 6u * lane + 1010u;
  printf("%-44s %s\n", "named barriers: a chain of two", bad_chain == 0 ? "OK" : "FAIL");
  return bad == 0 && bad_chain == 0;
}

// The producers arrive at barrier 2, the consumer waits at barrier 3 (its own 32 threads): the
// counts balance, nothing orders the reads after the writes.
__global__ void consumer_waits_at_another_barrier() {
  const int t = static_cast<int>(threadIdx.x);
  auto* words = reinterpret_cast<uint32_t*>(smem);
  if (t < 64) {
    words[t] = static_cast<uint32_t>(t);
    dev::named_barrier_arrive(2, 64);
  } else {
    dev::named_barrier_sync(3, 32);
    if (words[t % 32] == 12345u) smem[1000] = 0;
  }
}
// Warp 1 only arrives at the phase warp 0 arrived at: it learns nothing of warp 0's writes.
__global__ void arriving_thread_reads() {
  const int t = static_cast<int>(threadIdx.x);
  auto* words = reinterpret_cast<uint32_t*>(smem);
  if (t < 32) {
    words[t] = static_cast<uint32_t>(t);
    dev::named_barrier_arrive(2, 96);
  } else if (t < 64) {
    dev::named_barrier_arrive(2, 96);
    if (words[t % 32] == 12345u) smem[1000] = 0;
  } else {
    dev::named_barrier_sync(2, 96);
  }
}
__global__ void named_barrier_count_mismatch() {
  if (threadIdx.x < 64) {
    dev::named_barrier_arrive(2, 96);
  } else {
    dev::named_barrier_sync(2, 64);
  }
}
__global__ void named_barrier_nobody_arrives() {
  if (threadIdx.x >= 64) dev::named_barrier_sync(2, 64);
}
__global__ void named_barrier_signal_unconsumed() {
  if (threadIdx.x < 64) dev::named_barrier_arrive(3, 96); // the consumer warp never syncs
}
__global__ void named_barrier_id_zero() {
  dev::named_barrier_sync(0, 32);
}
__global__ void named_barrier_count_not_whole_warps() {
  dev::named_barrier_sync(1, 48);
}
__global__ void named_barrier_part_of_a_warp() {
  if (threadIdx.x % 32 < 16) {
    dev::named_barrier_arrive(1, 32);
  } else {
    __syncwarp();
  }
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
  ok &= check_clean_hazards();
  ok &= check_named_barriers();
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
  static uint32_t src[256] __attribute__((aligned(16)));
  ok &= reported(
      "no __syncthreads between write and read",
      [] { emu_launch(&missing_syncthreads, EmuCfg(1, 64, 1024)); }, "no __syncthreads");
  ok &= reported(
      "no __syncwarp between lanes", [] { emu_launch(&missing_syncwarp, EmuCfg(1, 32, 1024)); },
      "no __syncthreads");
  ok &= reported(
      "a read before cp_async_wait",
      [] { emu_launch(&reads_before_cp_async_wait, EmuCfg(1, 32, 1024), +src); }, "in flight");
  ok &= reported(
      "cp.async over a tile others still read",
      [] { emu_launch(&cp_async_over_a_tile_being_read, EmuCfg(1, 64, 1024), +src); },
      "no __syncthreads");
  ok &= reported(
      "wgmma without fence_proxy_async",
      [] { emu_launch(&wgmma_without_proxy_fence, EmuCfg(1, 128, 16384)); }, "fence_proxy_async");
  ok &= reported(
      "wgmma never waited", [] { emu_launch(&wgmma_never_waited, EmuCfg(1, 128, 16384)); },
      "not retired");
  ok &= reported(
      "wgmma MN-major start inside an atom",
      [] { emu_launch(&wgmma_mn_major_inside_an_atom, EmuCfg(1, 128, 16384)); },
      "inside a 128-byte swizzle row");
  ok &= reported(
      "wgmma start off the swizzle pattern",
      [] { emu_launch(&wgmma_start_off_the_pattern, EmuCfg(1, 128, 16384)); }, "address bits 7-9");
  ok &= reported(
      "wgmma without wgmma_fence", [] { emu_launch(&wgmma_without_fence, EmuCfg(1, 128, 16384)); },
      "without a wgmma_fence");
  ok &= reported(
      "named barriers: consumer waits at another id",
      [] { emu_launch(&consumer_waits_at_another_barrier, EmuCfg(1, 96, 1024)); },
      "no __syncthreads");
  ok &= reported(
      "named barriers: a thread that only arrived",
      [] { emu_launch(&arriving_thread_reads, EmuCfg(1, 96, 1024)); }, "no __syncthreads");
  ok &= reported(
      "named barriers: thread counts differ",
      [] { emu_launch(&named_barrier_count_mismatch, EmuCfg(1, 96)); },
      "another thread count than its phase's");
  ok &= reported(
      "named barriers: nobody arrives",
      [] { emu_launch(&named_barrier_nobody_arrives, EmuCfg(1, 96)); },
      "wait at named_barrier_sync");
  ok &= reported(
      "named barriers: a signal nobody consumes",
      [] { emu_launch(&named_barrier_signal_unconsumed, EmuCfg(1, 96)); }, "mid-phase");
  ok &= reported(
      "named barriers: id 0", [] { emu_launch(&named_barrier_id_zero, EmuCfg(1, 32)); },
      "outside 1..15");
  ok &= reported(
      "named barriers: 48 threads",
      [] { emu_launch(&named_barrier_count_not_whole_warps, EmuCfg(1, 64)); },
      "not a positive multiple of 32");
  ok &= reported(
      "named barriers: half a warp arrives",
      [] { emu_launch(&named_barrier_part_of_a_warp, EmuCfg(1, 32)); },
      "part of the warp does not reach");
  return ok ? 0 : 1;
}
