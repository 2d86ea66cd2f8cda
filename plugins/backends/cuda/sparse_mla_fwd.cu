// sparse_mla forward: gather-top-k attention on the absorbed MLA latent (launch.h states the
// math), flash-style with online softmax, bf16 tensor cores (wgmma for both S = Q K^T and
// O += P V), float32 accumulation.
//
// Work split: one CTA per (token, block of 64 heads). All heads of a token share its top-k
// slots, so the heads are the MMA's M dimension and every gathered kv row serves 64 heads (the
// FlashMLA observation). The CTA keeps Q [64, Dqk] in shared memory for its lifetime and walks
// the token's slots in blocks of 64 gathered kv rows, double-buffered: while block b is
// computed, cp.async gathers block b + 1 (zero-filled for -1 slots and padding channels). Blocks
// whose 64 slots are all -1 (early causal rows) are skipped without loading.
//
// 8 warps = 2 warpgroups:
//   S = Q K^T:   warpgroup j computes all 64 rows x keys [32 j, +32) with wgmma m64n32k16 (Q and
//                the kv block read by the tensor cores straight from shared memory);
//   softmax:     row maxima of the two halves meet in shared memory; row sums stay per thread
//                until the end;
//   P (bf16) -> shared memory; O += P V: warpgroup j owns all 64 rows x latent columns
//                [j L/2, +L/2) with wgmma m64n256k16 (128 float32 registers at L = 512), P
//                K-major and V MN-major (the gathered rows as they are) from shared memory; each
//                thread's O rows are its S rows, so one running maximum serves both.
// Shared memory (tiles in the wgmma 128-byte-swizzle layout, device.cuh): Q + 2 kv blocks
// (3 x 64 x Dqk bf16, 216 KiB at Dqk 576) + P (8 KiB) + row statistics + 1 KiB alignment slack:
// 226.5 KiB at GLM-5 width, one CTA per SM.
//
// Widths are template parameters padded to multiples of 64 (instantiated: (Dqk, L) = (128, 128),
// (576, 512)); narrower inputs run zero-padded (fixtures and tests). No (64, 64) instance: its
// warpgroups would read V from the middle of a 64-column swizzle atom (N = 32 each), which no
// documented wgmma layout covers (tools/cuda_emu reports it). dqk and latent multiples of 8,
// topk <= 16384.
//
// Gather: each warp copies 8 of the block's rows; one lane loads a row's slot index and passes it
// to the lanes copying that row's 16-byte chunks by shuffle. The first version loaded the index
// from global memory again for every chunk (72 loads per row at Dqk 576), and those dependent
// loads sat in front of every cp.async: the same kernel ran 18-22% slower (259.7 against 315.4
// TFLOP/s at T=16K, H=64, in one run).
//
// ptxas (sm_90a, nvcc 13.0, KILN_CUDA_PTXAS_VERBOSE=ON): (576, 512) 191 registers, 0 spills,
// 0 stack, 1 barrier; (128, 128) 95 registers; 231,968 bytes of dynamic
// shared memory at (576, 512).
// Achieved (H200, 2026-12-05, tools/bench/RESULTS.md; topk 2048, incl. the w_vc bmm), TFLOP/s at
// T = 4K, 8K, 16K, 32K: H=64 365.5, 326.1, 311.6, 306.9; H=128 370.8, 331.2, 316.0, 308.0. ncu at
// T=16K, H=64 (previous gather): L2 hit rate 95%, L2 throughput 22% of peak, DRAM 3%; per issued
// instruction 0.98 cycles waiting on fixed-latency dependencies, 0.65 at the barrier, 0.25
// math-pipe throttle. What remains: the tensor cores idle during the softmax and its barriers (no
// warpgroup ping-pong), and the S phase (N = 32 per warpgroup) reads ~1.5x more shared memory per
// FLOP than the tensor cores need.
#include "device.cuh"
#include "launch.h"

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

namespace kiln::backends::cuda {
namespace {

constexpr int kRows = 64;     // heads per CTA
constexpr int kKeys = 64;     // gathered kv rows per block
constexpr int kThreads = 256; // 8 warps
constexpr int kMaxTopk = 16384;
constexpr int kMaskWords = kMaxTopk / kKeys / 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int kDqk, int kDl>
struct Layout {
  static_assert(kDqk % 64 == 0 && kDl % 64 == 0 && kDl <= kDqk);
  static constexpr int kChunks = kDqk / 8;            // 16-byte chunks per q / kv row
  static constexpr int kTile = kRows * kDqk * 2;      // bytes of Q and of each kv block
  static constexpr int kP = 3 * kTile;                // P [64, 64] bf16
  static constexpr int kMax = kP + kRows * kKeys * 2; // float [2][64] block row maxima
  static constexpr int kSum = kMax + 2 * kRows * 4;   // float [2][64] row sums
  static constexpr int kSlot = kSum + 2 * kRows * 4;  // int [2][64] slot of each gathered row
  static constexpr int kMask = kSlot + 2 * kKeys * 4; // uint32 [kMaskWords] non-empty blocks
  static constexpr int kBytes = kMask + kMaskWords * 4 + 1024; // + slack to align to 1024
  static constexpr int kOCols = kDl / 2;        // O columns of one warpgroup (the wgmma N)
  static_assert(kOCols == 64 || kOCols == 256); // whole 64-column atoms of the V tile
};

// The first block index > `after` whose bit is set, or -1.
__device__ __forceinline__ int next_block(const uint32_t* mask, int blocks, int after) {
  for (int b = after + 1; b < blocks;) {
    const uint32_t bits = mask[b >> 5] >> (b & 31);
    if (bits != 0) {
      const int found = b + __ffs(bits) - 1;
      return found < blocks ? found : -1;
    }
    b = (b | 31) + 1;
  }
  return -1;
}

template <int kDqk, int kDl>
__global__ void __launch_bounds__(kThreads, 1) sparse_mla_fwd_kernel(SparseMlaFwdParams p) {
  using L = Layout<kDqk, kDl>;
  extern __shared__ __align__(1024) unsigned char smem[];
  // The swizzled tiles need a 1024-byte aligned start.
  unsigned char* tile = smem + ((1024 - (dev::smem_addr(smem) & 1023)) & 1023);
  const uint32_t s_q = dev::smem_addr(tile);
  const uint32_t s_p = s_q + L::kP;
  float* row_max = reinterpret_cast<float*>(tile + L::kMax);
  float* row_sum = reinterpret_cast<float*>(tile + L::kSum);
  int* slots = reinterpret_cast<int*>(tile + L::kSlot);
  uint32_t* mask = reinterpret_cast<uint32_t*>(tile + L::kMask);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int head_blocks = (p.heads + kRows - 1) / kRows;
  const int t = blockIdx.x / head_blocks;
  const int h0 = (blockIdx.x % head_blocks) * kRows;
  const int32_t* idx = p.idx + t * p.idx_t;
  const auto* q = static_cast<const __nv_bfloat16*>(p.q) + t * p.q_t;
  const auto* kv = static_cast<const __nv_bfloat16*>(p.kv);
  const int blocks = (p.topk + kKeys - 1) / kKeys;

  // Which blocks hold at least one valid slot.
  if (tid < kMaskWords) mask[tid] = 0;
  __syncthreads();
  for (int b = warp; b < blocks; b += kThreads / 32) {
    const int j = b * kKeys + 2 * lane;
    const bool valid = (j < p.topk && idx[j] >= 0) || (j + 1 < p.topk && idx[j + 1] >= 0);
    if (__any_sync(0xffffffffu, valid) && lane == 0) atomicOr(&mask[b >> 5], 1u << (b & 31));
  }
  // Q rows (heads past the end and channels past dqk are zeros).
  for (int i = tid; i < kRows * L::kChunks; i += kThreads) {
    const int r = i / L::kChunks, c = i % L::kChunks;
    const bool in = h0 + r < p.heads && c * 8 < p.dqk;
    dev::cp_async_16(s_q + dev::sw128(r, c, kRows), in ? q + (h0 + r) * p.q_h + c * 8 : q,
                     in ? 16 : 0);
  }
  __syncthreads();

  // Warp w gathers rows [8 w, +8) of the block: one index load per row (lanes 0-7), passed to
  // the lanes that copy the row's 16-byte chunks by shuffle, consecutive lanes on consecutive
  // chunks.
  auto gather = [&](int block, int buf) {
    static_assert(kKeys == 8 * (kThreads / 32) && L::kChunks % 4 == 0);
    const uint32_t s_k = s_q + (1 + buf) * L::kTile;
    const int row0 = 8 * warp, j = block * kKeys + row0 + (lane & 7);
    const int mine = j < p.topk ? idx[j] : -1;
    if (lane < 8) slots[buf * kKeys + row0 + lane] = mine;
#pragma unroll 3
    for (int k = 0; k < L::kChunks / 4; ++k) {
      const int flat = 32 * k + lane, r = flat / L::kChunks, c = flat % L::kChunks;
      const int slot = __shfl_sync(0xffffffffu, mine, r);
      const bool in = slot >= 0 && c * 8 < p.dqk;
      dev::cp_async_16(s_k + dev::sw128(row0 + r, c, kKeys),
                       in ? kv + static_cast<int64_t>(slot) * p.kv_t + c * 8 : kv, in ? 16 : 0);
    }
  };

  const float scale_log2 = p.scale * kLog2e;
  const int g = lane >> 2, c2 = 2 * (lane & 3);
  // S side: warpgroup sj holds keys [32 sj, +32), its warp sw rows 16 sw + g (+8).
  const int sj = warp >> 2, sw = warp & 3;
  // O side: warpgroup sj holds all 64 rows x latent columns [sj L/2, +L/2): each thread the
  // same two rows as its S values, so one running maximum per row serves both.
  float o[L::kOCols / 2];
#pragma unroll
  for (int i = 0; i < L::kOCols / 2; ++i) o[i] = 0.f;
  float m_s[2], l_s[2]; // running maxima (log2 units) and this thread's partial sums per row
  m_s[0] = m_s[1] = -INFINITY;
  l_s[0] = l_s[1] = 0.f;

  int block = next_block(mask, blocks, -1);
  if (block >= 0) gather(block, 0);
  dev::cp_async_commit();
  int buf = 0;
  while (block >= 0) {
    dev::cp_async_wait<0>();
    dev::fence_proxy_async(); // the tensor cores read what cp.async wrote
    __syncthreads();
    const int next = next_block(mask, blocks, block);
    if (next >= 0) gather(next, buf ^ 1);
    dev::cp_async_commit();
    const uint32_t s_k = s_q + (1 + buf) * L::kTile;

    // S = Q K^T: this warpgroup's 64 rows x 32 keys.
    float s[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) s[i] = 0.f;
    dev::wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < kDqk / 16; ++kc) {
      const uint32_t step = (kc >> 2) * kRows * 128 + (kc & 3) * 32;
      dev::wgmma_m64n32k16(
          s, dev::sw128_desc(s_q + step),
          dev::sw128_desc(s_k + (kc >> 2) * kKeys * 128 + 32 * sj * 128 + (kc & 3) * 32), kc > 0);
    }
    dev::wgmma_commit();
    dev::wgmma_wait<0>();

    // Scale to log2 units, mask -1 slots, row maxima of the two key halves.
    const int* block_slots = slots + buf * kKeys;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool valid = block_slots[32 * sj + 8 * i + c2 + e] >= 0;
        s[4 * i + e] = valid ? s[4 * i + e] * scale_log2 : -INFINITY;
        s[4 * i + 2 + e] = valid ? s[4 * i + 2 + e] * scale_log2 : -INFINITY;
      }
    }
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float mx = -INFINITY;
#pragma unroll
      for (int i = 0; i < 4; ++i) mx = fmaxf(mx, fmaxf(s[4 * i + 2 * hf], s[4 * i + 2 * hf + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      if ((lane & 3) == 0) row_max[sj * kRows + 16 * sw + 8 * hf + g] = mx;
    }
    __syncthreads();

    // Online softmax: P = exp2(s - m) to shared memory as bf16, O rescaled.
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = 16 * sw + 8 * hf + g;
      const float mx = fmaxf(m_s[hf], fmaxf(row_max[row], row_max[kRows + row]));
      const float base = mx == -INFINITY ? 0.f : mx; // a row with nothing valid yet
      const float corr = dev::fast_exp2(m_s[hf] - base);
      m_s[hf] = mx;
      float sum = 0.f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float p0 = dev::fast_exp2(s[4 * i + 2 * hf] - base);
        const float p1 = dev::fast_exp2(s[4 * i + 2 * hf + 1] - base);
        sum += p0 + p1;
        const int col = 32 * sj + 8 * i + c2;
        *reinterpret_cast<uint32_t*>(tile + L::kP + dev::sw128(row, col >> 3, kRows) +
                                     (col & 7) * 2) = dev::pack_bf16(p0, p1);
      }
      l_s[hf] = l_s[hf] * corr + sum;
#pragma unroll
      for (int i = 0; i < L::kOCols / 8; ++i) {
        o[4 * i + 2 * hf] *= corr;
        o[4 * i + 2 * hf + 1] *= corr;
      }
    }
    dev::fence_proxy_async(); // the tensor cores read P next
    __syncthreads();

    // O += P V: this warpgroup's 64 rows x L/2 columns, V read MN-major from the gathered rows
    // (column col0 sits in 64-column atom col0 / 64 of the kv tile, at byte (col0 % 64) * 2).
    const int col0 = L::kOCols * sj;
    dev::wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < kKeys / 16; ++kc) {
      dev::wgmma_m64k16_bt<L::kOCols>(
          o, dev::sw128_desc(s_p + kc * 32),
          dev::sw128_desc_mn(s_k + col0 / 64 * kKeys * 128 + col0 % 64 * 2 + kc * 16 * 128,
                             kKeys * 128),
          true);
    }
    dev::wgmma_commit();
    dev::wgmma_wait<0>();
    block = next;
    buf ^= 1;
  }
  dev::cp_async_wait<0>();

  // Row sums of the two key halves, then O / l and the log-sum-exp.
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float sum = l_s[hf];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    if ((lane & 3) == 0) row_sum[sj * kRows + 16 * sw + 8 * hf + g] = sum;
  }
  __syncthreads();
  auto* out = static_cast<__nv_bfloat16*>(p.o);
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int row = 16 * sw + 8 * hf + g;
    const int h = h0 + row;
    const float total = row_sum[row] + row_sum[kRows + row];
    if (h >= p.heads) continue;
    const float inv = total > 0.f ? 1.f / total : 0.f;
    __nv_bfloat16* dst = out + (static_cast<int64_t>(t) * p.heads + h) * p.latent;
#pragma unroll
    for (int i = 0; i < L::kOCols / 8; ++i) {
      const int col = L::kOCols * sj + 8 * i + c2;
      if (col < p.latent) {
        *reinterpret_cast<uint32_t*>(dst + col) =
            dev::pack_bf16(o[4 * i + 2 * hf] * inv, o[4 * i + 2 * hf + 1] * inv);
      }
    }
    if (sj == 0 && (lane & 3) == 0) {
      p.lse[static_cast<int64_t>(t) * p.heads + h] =
          total > 0.f ? (m_s[hf] + log2f(total)) * kLn2 : INFINITY;
    }
  }
}

template <int kDqk, int kDl>
cudaError_t launch(const SparseMlaFwdParams& p, cudaStream_t stream) {
  using L = Layout<kDqk, kDl>;
  auto* kernel = &sparse_mla_fwd_kernel<kDqk, kDl>;
  // Per device and cheap: set on every launch rather than once per process.
  const cudaError_t configured =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kBytes);
  if (configured != cudaSuccess) return configured;
  const int64_t ctas = static_cast<int64_t>(p.tokens) * ((p.heads + kRows - 1) / kRows);
  kernel<<<static_cast<unsigned>(ctas), kThreads, L::kBytes, stream>>>(p);
  return cudaGetLastError();
}

} // namespace

bool sparse_mla_supported(int dqk, int latent, int topk) {
  // latent % 8: the epilogue stores o two values at a time into rows of `latent` values.
  return dqk > 0 && latent > 0 && latent <= dqk && dqk % 8 == 0 && latent % 8 == 0 && topk >= 1 &&
         topk <= kMaxTopk && (dqk <= 128 || (dqk <= 576 && latent <= 512));
}

cudaError_t launch_sparse_mla_fwd(const SparseMlaFwdParams& p, cudaStream_t stream) {
  if (!sparse_mla_supported(p.dqk, p.latent, p.topk)) return cudaErrorInvalidValue;
  if (p.dqk <= 128) return launch<128, 128>(p, stream);
  return launch<576, 512>(p, stream);
}

} // namespace kiln::backends::cuda
