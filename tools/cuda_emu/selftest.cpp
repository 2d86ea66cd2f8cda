// The emulator's own checks (tools/cuda_emu/run selftest): warp collectives against results
// written from the CUDA programming guide's definitions (not from device.cuh's PTX rule), a warp
// whose upper half has exited, and misuse that must be reported: each misuse kernel runs in a
// forked child that must abort with the expected words on stderr (-v shows them).
#include "device.cuh"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include <fcntl.h>
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
  // `words` may list alternatives, "a|b" (a report that depends on the interleaving).
  const std::string alternatives = words;
  bool said = false;
  for (size_t from = 0;;) {
    const size_t bar = alternatives.find('|', from);
    said |= err.find(alternatives.substr(from, bar - from)) != err.npos;
    if (bar == std::string::npos) break;
    from = bar + 1;
  }
  const bool ok = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && said;
  printf("%-44s %s\n", name, ok ? "OK (reported)" : "FAIL");
  if (!ok) printf("  expected an abort saying '%s'; stderr:\n", words);
  if (!ok || verbose) printf("%s", err.c_str());
  return ok;
}

// ---- TMA, mbarriers, acq_rel atomics ------------------------------------------------------------
// The tensor-map encoder as a launcher gets it (cudaGetDriverEntryPointByVersion).
using EncodeTiled = decltype(&cuTensorMapEncodeTiled);
EncodeTiled encoder() {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                       &found) != cudaSuccess ||
      found != cudaDriverEntryPointSuccess) {
    return nullptr;
  }
  return reinterpret_cast<EncodeTiled>(fn);
}
// A bf16 matrix of `rows` rows of `cols` elements, rows 128 bytes apart, in boxes of 64 x
// box_rows with the 128-byte swizzle (the variations: what the encoder must refuse).
struct MapArgs {
  void* base;
  cuuint64_t dims[2];
  cuuint64_t stride;
  cuuint32_t box[2];
  cuuint32_t rank = 2;
  CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B;
};
CUresult encode(CUtensorMap* map, const MapArgs& m) {
  const cuuint32_t element_strides[2] = {1, 1};
  return encoder()(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, m.rank, m.base, m.dims, &m.stride, m.box,
                   element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, m.swizzle,
                   CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

// Global A: 61 rows of 56 bf16 (rows of 64, the padding NaN); B: 40 rows of 64. Small integers,
// so that every product and sum is exact.
constexpr int kARows = 61, kACols = 56, kBRows = 40;
alignas(128) uint16_t global_a[kARows * 64];
alignas(128) uint16_t global_b[kBRows * 64];
float ga(int r, int c) {
  return static_cast<float>((r * 5 + c * 3) % 7 - 3);
}
float gb(int r, int c) {
  return static_cast<float>((r * 3 + c) % 5 - 2);
}
// The boxes of the two phases: A's at (x, y) = (-8, 4) and (8, -5), B's at (0, 0) and (0, 20):
// zeros left of and below A, right of and above it, below B.
constexpr int kAx[2] = {-8, 8}, kAy[2] = {4, -5}, kBy[2] = {0, 20};
float tile_a(int phase, int r, int c) {
  const int y = kAy[phase] + r, x = kAx[phase] + c;
  return y >= 0 && y < kARows && x >= 0 && x < kACols ? ga(y, x) : 0.0f;
}
float tile_b(int phase, int r, int c) {
  const int y = kBy[phase] + r;
  return y < kBRows ? gb(y, c) : 0.0f;
}
void fill_globals() {
  for (int r = 0; r < kARows; ++r) {
    for (int c = 0; c < 64; ++c) global_a[r * 64 + c] = c < kACols ? bf16_bits(ga(r, c)) : 0x7fc0;
  }
  for (int r = 0; r < kBRows; ++r) {
    for (int c = 0; c < 64; ++c) global_b[r * 64 + c] = bf16_bits(gb(r, c));
  }
}
MapArgs a_args() {
  return MapArgs{global_a, {kACols, kARows}, 128, {64, 64}};
}
MapArgs b_args() {
  return MapArgs{global_b, {64, kBRows}, 128, {64, 32}};
}

// Shared memory: the A tile (64 rows of 128 bytes) at 0, the B tile (32 rows) at 8192, the
// mbarriers "full" (the tiles landed) and "empty" (the consumers are done with them) after.
constexpr uint32_t kABytes = 64 * 128, kBBytes = 32 * 128, kFull = 12288, kEmpty = 12296;
constexpr size_t kTmaSmem = 16384;
__device__ void init_barriers(uint32_t full_count, uint32_t empty_count) {
  if (threadIdx.x == 0) {
    dev::mbarrier_init(kFull, full_count);
    dev::mbarrier_init(kEmpty, empty_count);
    dev::fence_mbarrier_init();
  }
  __syncthreads();
}
// Threads 0..127 store the operand tiles (fenced for the tensor cores), every thread meets at
// the barrier, and the warpgroup's threads (the caller's, t < 128) issue the wgmma that
// multiplies them, not yet retired. Called by every thread, with d used by t < 128 only.
__device__ void issue_stored_wgmma(float (&d)[16]) {
  const int t = static_cast<int>(threadIdx.x);
  if (t < 128) {
    store_operands();
    dev::fence_proxy_async();
  }
  __syncthreads();
  if (t < 128) {
    dev::wgmma_fence();
    dev::wgmma_m64n32k16(d, dev::sw128_desc(0), dev::sw128_desc(8192), false);
    dev::wgmma_commit();
  }
}
// Element (r, c) of a 128-byte-swizzled tile of 128-byte rows at `base` (sw128's layout).
__device__ uint16_t tile_bits(uint32_t base, int r, int c) {
  uint16_t h;
  std::memcpy(&h, smem + base + dev::sw128(r, c / 8, 64) + (c % 8) * 2, 2);
  return h;
}

// Two phases of a producer/consumer pipeline: warp 4's lane 0 loads A and B boxes (full,
// expect_tx), the warpgroup of warps 0-3 waits for phase 0 and then phase 1 by parity, checks the
// tiles by hand, multiplies them (wgmma, k 0..63) and releases them (empty, 128 arrivals), which
// the producer waits for before the next boxes overwrite them. At the end every thread reads A
// after a __syncthreads (warp 4 never waited for full's phase 1: the barrier hands it on).
// bad[p * 128 + t]: thread t's mismatches in phase p; bad[256 + lane]: warp 4's at the end.
__global__ void tma_pipeline(const __grid_constant__ CUtensorMap map_a,
                             const __grid_constant__ CUtensorMap map_b, float* out, int* bad) {
  const int t = static_cast<int>(threadIdx.x);
  init_barriers(1, 128);
  for (int phase = 0; phase < 2; ++phase) {
    if (t == 128) {
      if (phase == 1) dev::mbarrier_wait(kEmpty, 0);
      dev::mbarrier_arrive_expect_tx(kFull, kABytes + kBBytes);
      dev::tma_load_2d(0, &map_a, kAx[phase], kAy[phase], kFull);
      dev::tma_load_2d(kABytes, &map_b, 0, kBy[phase], kFull);
    }
    if (t >= 128) continue;
    dev::mbarrier_wait(kFull, static_cast<uint32_t>(phase));
    int wrong = 0;
    for (int c = (t % 2) * 32; c < (t % 2) * 32 + 32; ++c) {
      wrong += tile_bits(0, t / 2, c) != bf16_bits(tile_a(phase, t / 2, c));
      if (t < 64) wrong += tile_bits(kABytes, t / 2, c) != bf16_bits(tile_b(phase, t / 2, c));
    }
    bad[phase * 128 + t] = wrong;
    float d[16];
    dev::wgmma_fence();
    for (int ks = 0; ks < 4; ++ks) {
      dev::wgmma_m64n32k16(d, dev::desc_advance(dev::sw128_desc(0), 32 * ks),
                           dev::desc_advance(dev::sw128_desc(kABytes), 32 * ks), ks > 0);
    }
    dev::wgmma_commit();
    dev::wgmma_wait<0>();
    for (int i = 0; i < 16; ++i) out[(phase * 128 + t) * 16 + i] = d[i];
    if (phase == 0) dev::mbarrier_wait(kFull, 0); // completed: returns at once
    dev::mbarrier_arrive_expect_tx(kEmpty, 0);
  }
  __syncthreads();
  if (t >= 128) bad[256 + t - 128] = tile_bits(0, t - 128, 5) != bf16_bits(tile_a(1, t - 128, 5));
}

bool check_tma_pipeline() {
  fill_globals();
  CUtensorMap map_a, map_b;
  if (encoder() == nullptr || encode(&map_a, a_args()) != CUDA_SUCCESS ||
      encode(&map_b, b_args()) != CUDA_SUCCESS) {
    printf("%-44s FAIL (encoding)\n", "TMA boxes, mbarrier phases, wgmma on them");
    return false;
  }
  std::vector<float> out(2 * 128 * 16, -1);
  std::vector<int> bad(256 + 32, -1);
  emu_launch(&tma_pipeline, EmuCfg(1, 160, kTmaSmem), map_a, map_b, out.data(), bad.data());
  int wrong = 0;
  for (int v : bad) wrong += v != 0;
  for (int phase = 0; phase < 2; ++phase) {
    for (int t = 0; t < 128; ++t) {
      const int lane = t % 32, w = t / 32, g = lane / 4, c = 2 * (lane % 4);
      for (int i = 0; i < 16; ++i) {
        const int row = 16 * w + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + c + i % 2;
        float ref = 0;
        for (int k = 0; k < 64; ++k) ref += tile_a(phase, row, k) * tile_b(phase, col, k);
        wrong += out[(phase * 128 + t) * 16 + i] != ref;
      }
    }
  }
  printf("%-44s %s\n", "TMA boxes, mbarrier phases, wgmma on them", wrong == 0 ? "OK" : "FAIL");
  return wrong == 0;
}

// Without swizzle: a box of 8 x 5 uint32 at (-3, 6) of a 9 x 9 tensor (rows of 48 bytes), rows
// packed 32 bytes apart at shared 128; thread t checks word t (out: mismatches, or -1 if the
// thread did not check).
alignas(16) uint32_t global_c[9 * 12];
__global__ void tma_no_swizzle(const __grid_constant__ CUtensorMap map_c, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  init_barriers(1, 1);
  if (t == 0) {
    dev::mbarrier_arrive_expect_tx(kFull, 8 * 5 * 4);
    dev::tma_load_2d(128, &map_c, -3, 6, kFull);
  }
  dev::mbarrier_wait(kFull, 0);
  uint32_t got;
  std::memcpy(&got, smem + 128 + 4 * t, 4);
  const int r = t / 8, x = t % 8 - 3, y = r + 6;
  out[t] = got != (x >= 0 && x < 9 && y < 9 ? global_c[y * 12 + x] : 0u);
}
bool check_tma_no_swizzle() {
  for (int i = 0; i < 9 * 12; ++i) global_c[i] = 1000u + static_cast<uint32_t>(i);
  CUtensorMap map_c;
  const cuuint64_t dims[2] = {9, 9}, stride = 48;
  const cuuint32_t box[2] = {8, 5}, ones[2] = {1, 1};
  bool ok =
      encoder()(&map_c, CU_TENSOR_MAP_DATA_TYPE_UINT32, 2, global_c, dims, &stride, box, ones,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
  std::vector<int> out(40, -1);
  if (ok) emu_launch(&tma_no_swizzle, EmuCfg(1, 40, kTmaSmem), map_c, out.data());
  for (int v : out) ok &= v == 0;
  printf("%-44s %s\n", "TMA without swizzle, out of bounds", ok ? "OK" : "FAIL");
  return ok;
}

// What the encoder and the entry point answer (each refusal prints its reason: shown with -v).
bool check_encoder() {
  int wrong = 0;
  const int saved = dup(2);
  if (!verbose) {
    const int null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    close(null);
  }
  CUtensorMap map;
  auto refused = [&](MapArgs m) { wrong += encode(&map, m) != CUDA_ERROR_INVALID_VALUE; };
  wrong += encode(&map, a_args()) != CUDA_SUCCESS;
  MapArgs m = a_args();
  m.base = reinterpret_cast<char*>(global_a) + 8; // not 16-byte aligned
  refused(m);
  m = a_args();
  m.stride = 120; // not a multiple of 16
  refused(m);
  m = a_args();
  m.dims[1] = 0;
  refused(m);
  m = a_args();
  m.box[1] = 257;
  refused(m);
  m = a_args();
  m.box[0] = 72; // 144 bytes: above the 128-byte swizzle's span
  refused(m);
  m = a_args();
  m.box[0] = 60; // 120 bytes: not a multiple of 16
  m.swizzle = CU_TENSOR_MAP_SWIZZLE_NONE;
  refused(m);
  m = a_args();
  m.rank = 6;
  refused(m);
  alignas(128) unsigned char buf[256]; // a tensor map 32 bytes past a 128-byte boundary
  m = a_args();
  const cuuint32_t ones[2] = {1, 1};
  wrong += encoder()(reinterpret_cast<CUtensorMap*>(buf + 32), CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
                     m.base, m.dims, &m.stride, m.box, ones, CU_TENSOR_MAP_INTERLEAVE_NONE,
                     CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_ERROR_INVALID_VALUE;
  void* fn = &map;
  cudaDriverEntryPointQueryResult found{};
  wrong += cudaGetDriverEntryPointByVersion("notADriverFunction", &fn, 12000, 0, &found) !=
               cudaSuccess ||
           fn != nullptr || found != cudaDriverEntryPointSymbolNotFound;
  fn = &map;
  wrong += cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 11080, 0, &found) !=
               cudaSuccess ||
           fn != nullptr || found != cudaDriverEntryPointVersionNotSufficent;
  wrong += cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, CUDA_VERSION + 10, 0,
                                            &found) != cudaErrorInvalidValue;
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  printf("%-44s %s\n", "tensor map encoder, driver entry point", wrong == 0 ? "OK" : "FAIL");
  return wrong == 0;
}

// acq_rel atomics order without any barrier: thread 0 writes a word and adds to flag 0; thread
// 32 adds to flag 0 and, seeing 1 (after thread 0), writes a word and adds to flag 1; thread 64
// adds to flag 1 and, seeing 1, reads both words. out: the two old values and the sum read (in
// the default order; under EMU_SHUFFLE a thread that comes early skips its part).
constexpr uint32_t kFlag0 = 1024, kFlag1 = 1028;
__global__ void atomic_chain(uint32_t* out) {
  const int t = static_cast<int>(threadIdx.x);
  auto* words = reinterpret_cast<uint32_t*>(smem);
  if (t == 0) words[kFlag0 / 4] = words[kFlag1 / 4] = 0;
  __syncthreads();
  if (t == 0) {
    words[0] = 41;
    dev::atomic_add_acq_rel(kFlag0, 1);
  } else if (t == 32) {
    out[0] = dev::atomic_add_acq_rel(kFlag0, 1);
    if (out[0] == 1) {
      words[1] = words[0] + 1;
      dev::atomic_add_acq_rel(kFlag1, 1);
    }
  } else if (t == 64) {
    out[1] = dev::atomic_add_acq_rel(kFlag1, 1);
    if (out[1] == 1) out[2] = words[0] + words[1];
  }
}
// A TMA's landing ordered through an atomic: warp 0 waits for A and thread 0 adds to a flag;
// thread 32 waits for its own box (B: both complete when everybody waits), adds to the flag and,
// seeing 1, reads A. out[0]: the element read (tile_a(0, 0, 3) at (x, y) = (0, 0)).
__global__ void landing_through_atomic(const __grid_constant__ CUtensorMap map_a,
                                       const __grid_constant__ CUtensorMap map_b, uint32_t* out) {
  const int t = static_cast<int>(threadIdx.x);
  constexpr uint32_t flag = kEmpty + 8; // after the mbarriers
  if (t == 0) reinterpret_cast<uint32_t*>(smem)[flag / 4] = 0;
  init_barriers(1, 1);
  if (t == 0) {
    dev::mbarrier_arrive_expect_tx(kFull, kABytes);
    dev::tma_load_2d(0, &map_a, 0, 0, kFull);
  }
  if (t < 32) {
    dev::mbarrier_wait(kFull, 0);
    if (t == 0) dev::atomic_add_acq_rel(flag, 1);
  } else if (t == 32) {
    dev::mbarrier_arrive_expect_tx(kEmpty, kBBytes);
    dev::tma_load_2d(kABytes, &map_b, 0, 0, kEmpty);
    dev::mbarrier_wait(kEmpty, 0);
    if (dev::atomic_add_acq_rel(flag, 1) == 1) out[0] = tile_bits(0, 0, 3);
  }
}
bool check_atomic_chain() {
  std::vector<uint32_t> out(3, 0xdeadu);
  emu_launch(&atomic_chain, EmuCfg(1, 96, 2048), out.data());
  const bool shuffled = getenv("EMU_SHUFFLE") != nullptr;
  const bool ok = out[1] == 1 ? out[0] == 1 && out[2] == 83 : shuffled;
  printf("%-44s %s\n", "acq_rel atomics: a chain of two", ok ? "OK" : "FAIL");
  fill_globals();
  CUtensorMap map_a, map_b;
  uint32_t read = 0xdeadu;
  if (encode(&map_a, a_args()) == CUDA_SUCCESS && encode(&map_b, b_args()) == CUDA_SUCCESS) {
    emu_launch(&landing_through_atomic, EmuCfg(1, 64, kTmaSmem), map_a, map_b, &read);
  }
  const bool landed = read == bf16_bits(ga(0, 3)) || (shuffled && read == 0xdeadu);
  printf("%-44s %s\n", "acq_rel atomics: a TMA landing passed on", landed ? "OK" : "FAIL");
  return ok && landed;
}

// ---- their misuse
// Thread 32 adds to the other flag: nothing orders its read after thread 0's write.
__global__ void atomics_on_two_words() {
  const int t = static_cast<int>(threadIdx.x);
  auto* words = reinterpret_cast<uint32_t*>(smem);
  if (t == 0) {
    words[0] = 41;
    dev::atomic_add_acq_rel(kFlag0, 1);
  } else if (t == 32) {
    dev::atomic_add_acq_rel(kFlag1, 1);
    if (words[0] == 12345u) words[2] = 0;
  }
}
// Warp 0 waits for a phase of 2 arrivals that gets 1.
__global__ void mbarrier_phase_never_completes() {
  init_barriers(2, 1);
  if (threadIdx.x >= 32) return;
  if (threadIdx.x == 0) dev::mbarrier_arrive_expect_tx(kFull, 0);
  dev::mbarrier_wait(kFull, 0);
}
// expect_tx announces A and B, only A is loaded.
__global__ void expect_tx_more_than_loaded(const __grid_constant__ CUtensorMap map_a) {
  init_barriers(1, 1);
  if (threadIdx.x == 0) {
    dev::mbarrier_arrive_expect_tx(kFull, kABytes + kBBytes);
    dev::tma_load_2d(0, &map_a, 0, 0, kFull);
  }
  dev::mbarrier_wait(kFull, 0);
}
// The issuing thread reads the tile before waiting for it.
__global__ void reads_tma_bytes_in_flight(const __grid_constant__ CUtensorMap map_a) {
  init_barriers(1, 1);
  if (threadIdx.x == 0) {
    dev::mbarrier_arrive_expect_tx(kFull, kABytes);
    dev::tma_load_2d(0, &map_a, 0, 0, kFull);
    if (smem[200] == 0x12) smem[kTmaSmem - 1] = 0;
  }
  dev::mbarrier_wait(kFull, 0);
}
// Warp 0 loads A (full) and signals warp 1 (named barrier 1: the issue, not the landing), which
// loads B (empty as a second "full"), waits for its own box and then reads A: landed by then
// (its complete_tx comes when everybody waits) but by a completion warp 1 never observed (under
// EMU_SHUFFLE it may still be in flight).
__global__ void reads_landed_tma_bytes_unobserved(const __grid_constant__ CUtensorMap map_a,
                                                  const __grid_constant__ CUtensorMap map_b) {
  init_barriers(1, 1);
  const int t = static_cast<int>(threadIdx.x);
  const uint32_t bar = t < 32 ? kFull : kEmpty;
  if (t == 0) {
    dev::mbarrier_arrive_expect_tx(kFull, kABytes);
    dev::tma_load_2d(0, &map_a, 0, 0, kFull);
  }
  if (t < 32) {
    dev::named_barrier_arrive(1, 64);
  } else {
    dev::named_barrier_sync(1, 64);
  }
  if (t == 32) {
    dev::mbarrier_arrive_expect_tx(kEmpty, kBBytes);
    dev::tma_load_2d(kABytes, &map_b, 0, 0, kEmpty);
  }
  dev::mbarrier_wait(bar, 0);
  if (t >= 32 && tile_bits(0, t % 32, 3) == 0x1234) smem[kTmaSmem - 1] = 0;
}
// The warpgroup multiplies the tiles it stored; warp 4 loads the next A over them while the
// wgmma has not retired (the consumers wait for it only after warp 4's signal).
__global__ void tma_over_unretired_wgmma(const __grid_constant__ CUtensorMap map_a) {
  const int t = static_cast<int>(threadIdx.x);
  init_barriers(1, 1);
  float d[16];
  issue_stored_wgmma(d);
  if (t < 128) {
    dev::named_barrier_arrive(1, 160);
    dev::named_barrier_sync(2, 160);
    dev::wgmma_wait<0>();
  } else {
    dev::named_barrier_sync(1, 160);
    if (t == 128) {
      dev::mbarrier_arrive_expect_tx(kFull, kABytes);
      dev::tma_load_2d(0, &map_a, 0, 0, kFull);
    }
    dev::named_barrier_arrive(2, 160);
    if (t == 128) dev::mbarrier_wait(kFull, 0);
  }
}
// The consumers release the tiles (empty) before their wgmma_wait: warp 4's next box is not
// ordered after the tensor cores' reads.
__global__ void tma_before_wgmma_retires(const __grid_constant__ CUtensorMap map_a) {
  const int t = static_cast<int>(threadIdx.x);
  init_barriers(1, 128);
  float d[16];
  issue_stored_wgmma(d);
  if (t < 128) {
    dev::mbarrier_arrive_expect_tx(kEmpty, 0);
    dev::wgmma_wait<0>();
  } else if (t == 128) {
    dev::mbarrier_wait(kEmpty, 0);
    dev::mbarrier_arrive_expect_tx(kFull, kABytes);
    dev::tma_load_2d(0, &map_a, 0, 0, kFull);
    dev::mbarrier_wait(kFull, 0);
  }
}
__global__ void mbarrier_misaligned() {
  if (threadIdx.x == 0) dev::mbarrier_init(kFull + 4, 1);
}
__global__ void mbarrier_uninitialized() {
  if (threadIdx.x == 0) dev::mbarrier_arrive_expect_tx(kFull, 0);
}
__global__ void mbarrier_init_unordered() {
  if (threadIdx.x == 0) {
    dev::mbarrier_init(kFull, 2);
    dev::fence_mbarrier_init();
  }
  if (threadIdx.x == 32) dev::mbarrier_arrive_expect_tx(kFull, 0); // no __syncthreads before
}
__global__ void mbarrier_ends_mid_phase() {
  init_barriers(2, 1);
  if (threadIdx.x == 0) dev::mbarrier_arrive_expect_tx(kFull, 0);
}
// Thread 0 arrives announcing bytes that no copy brings; thread 32 arrives after it.
__global__ void mbarrier_one_arrival_too_many() {
  init_barriers(1, 1);
  if (threadIdx.x == 0) dev::mbarrier_arrive_expect_tx(kFull, kABytes);
  if (threadIdx.x < 32) {
    dev::named_barrier_arrive(1, 64);
  } else {
    dev::named_barrier_sync(1, 64);
  }
  if (threadIdx.x == 32) dev::mbarrier_arrive_expect_tx(kFull, 0);
}
__global__ void mbarrier_plain_store() {
  init_barriers(1, 1);
  if (threadIdx.x == 5) smem[kFull + 2] = 0;
}
__global__ void tma_never_waited(const __grid_constant__ CUtensorMap map_a) {
  init_barriers(1, 1);
  if (threadIdx.x == 0) {
    dev::mbarrier_arrive_expect_tx(kFull, kABytes);
    dev::tma_load_2d(0, &map_a, 0, 0, kFull);
  }
}
__global__ void tma_misaligned(const __grid_constant__ CUtensorMap map_a) {
  init_barriers(1, 1);
  if (threadIdx.x == 0) {
    dev::mbarrier_arrive_expect_tx(kFull, kABytes);
    dev::tma_load_2d(128, &map_a, 0, 0, kFull);
  }
}
__global__ void tma_without_init_fence(const __grid_constant__ CUtensorMap map_a) {
  if (threadIdx.x == 0) dev::mbarrier_init(kFull, 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    dev::mbarrier_arrive_expect_tx(kFull, kABytes);
    dev::tma_load_2d(0, &map_a, 0, 0, kFull);
  }
}

bool check_tma_misuse() {
  fill_globals();
  static CUtensorMap a, b;
  if (encode(&a, a_args()) != CUDA_SUCCESS || encode(&b, b_args()) != CUDA_SUCCESS) return false;
  bool ok = reported(
      "acq_rel atomics on two words",
      [] { emu_launch(&atomics_on_two_words, EmuCfg(1, 64, 2048)); }, "no __syncthreads");
  ok &= reported(
      "mbarrier: a phase that never completes",
      [] { emu_launch(&mbarrier_phase_never_completes, EmuCfg(1, 64, kTmaSmem)); },
      "1 of 2 arrivals");
  ok &= reported(
      "mbarrier: expect_tx above the copies' bytes",
      [] { emu_launch(&expect_tx_more_than_loaded, EmuCfg(1, 32, kTmaSmem), a); }, "tx-count 4096");
  ok &= reported(
      "TMA: a read before the wait",
      [] { emu_launch(&reads_tma_bytes_in_flight, EmuCfg(1, 32, kTmaSmem), a); }, "in flight");
  ok &= reported(
      "TMA: landed, read by a thread that did not wait",
      [] { emu_launch(&reads_landed_tma_bytes_unobserved, EmuCfg(1, 64, kTmaSmem), a, b); },
      "has not observed|in flight");
  ok &= reported(
      "TMA over bytes an unretired wgmma reads",
      [] { emu_launch(&tma_over_unretired_wgmma, EmuCfg(1, 160, kTmaSmem), a); },
      "has not retired");
  ok &= reported(
      "TMA unordered after a wgmma's reads",
      [] { emu_launch(&tma_before_wgmma_retires, EmuCfg(1, 160, kTmaSmem), a); }, "TMA writes it");
  ok &= reported(
      "mbarrier: not 8-byte aligned",
      [] { emu_launch(&mbarrier_misaligned, EmuCfg(1, 32, kTmaSmem)); }, "not 8-byte aligned");
  ok &= reported(
      "mbarrier: never initialized",
      [] { emu_launch(&mbarrier_uninitialized, EmuCfg(1, 32, kTmaSmem)); }, "no mbarrier_init");
  ok &= reported(
      "mbarrier: init not ordered before a use",
      [] { emu_launch(&mbarrier_init_unordered, EmuCfg(1, 64, kTmaSmem)); },
      "is not ordered before it");
  ok &= reported(
      "mbarrier: block ends mid-phase",
      [] { emu_launch(&mbarrier_ends_mid_phase, EmuCfg(1, 32, kTmaSmem)); }, "mid-phase");
  ok &= reported(
      "mbarrier: one arrival too many",
      [] { emu_launch(&mbarrier_one_arrival_too_many, EmuCfg(1, 64, kTmaSmem)); },
      "one arrival more than its count");
  ok &= reported(
      "mbarrier: a plain store to its bytes",
      [] { emu_launch(&mbarrier_plain_store, EmuCfg(1, 32, kTmaSmem)); },
      "only mbarrier operations");
  ok &= reported(
      "TMA: never waited for", [] { emu_launch(&tma_never_waited, EmuCfg(1, 32, kTmaSmem), a); },
      "no thread waited");
  ok &= reported(
      "TMA: destination not 1024-byte aligned",
      [] { emu_launch(&tma_misaligned, EmuCfg(1, 32, kTmaSmem), a); }, "not 1024-byte aligned");
  ok &= reported(
      "TMA: mbarrier init without fence",
      [] { emu_launch(&tma_without_init_fence, EmuCfg(1, 32, kTmaSmem), a); },
      "no fence_mbarrier_init");
  return ok;
}

} // namespace

int main(int argc, char** argv) {
  verbose = argc > 1 && std::string(argv[1]) == "-v";
  bool ok = check_collectives();
  ok &= check_clean_hazards();
  ok &= check_named_barriers();
  ok &= check_encoder();
  ok &= check_tma_pipeline();
  ok &= check_tma_no_swizzle();
  ok &= check_atomic_chain();
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
  ok &= check_tma_misuse();
  return ok ? 0 : 1;
}
