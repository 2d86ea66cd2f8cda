// sparse_mla forward: gather-top-k attention on the absorbed MLA latent (launch.h states the
// math), flash-style with online softmax, bf16 tensor cores (mma.sync m16n8k16), float32
// accumulation.
//
// Work split: one CTA per (token, block of 64 heads). All heads of a token share its top-k
// slots, so the heads are the MMA's M dimension and every gathered kv row serves 64 heads (the
// FlashMLA observation). The CTA keeps Q [64, Dqk] in shared memory for its lifetime and walks
// the token's slots in blocks of 64 gathered kv rows, double-buffered: while block b is
// computed, cp.async gathers block b + 1 (zero-filled for -1 slots and padding channels). Blocks
// whose 64 slots are all -1 (early causal rows) are skipped without loading.
//
// 8 warps, 2 along heads (32 rows each) x 4 along the other dimension:
//   S = Q K^T:   warp (wm, wn) computes rows [32 wm, +32) x keys [16 wn, +16) over Dqk;
//   softmax:     row maxima meet in shared memory (4 warps share a row), every warp rescales
//                its own accumulators; row sums stay per warp until the end;
//   P (bf16) -> shared memory; O += P V: warp (wm, wn) owns O rows [32 wm, +32) x latent
//                columns [wn L/4, +L/4) (128 float32 registers at L = 512), V read straight
//                from the gathered rows with ldmatrix.trans.
// Shared memory: Q + 2 kv blocks (3 x 64 x Dqk bf16, swizzled, 216 KiB at Dqk 576) + P (8 KiB)
// + row statistics: 226.5 KiB at GLM-5 width, one CTA per SM.
//
// Widths are template parameters padded to multiples of 64 (instantiated: (Dqk, L) = (64, 64),
// (128, 128), (576, 512)); narrower inputs run zero-padded (fixtures and tests). dqk and latent
// multiples of 8, topk <= 16384.
//
// ptxas (sm_90a, nvcc 13.0, KILN_CUDA_PTXAS_VERBOSE=ON): (576, 512) 247 registers, 0 spills,
// 0 stack, 1 barrier; (128, 128) 140 registers; (64, 64) 101 registers; 231,968 bytes of dynamic
// shared memory at (576, 512).
// Measured (H200, bf16, topk 2048, tools/bench/RESULTS.md): 203-218 TFLOP/s at H = 64 and
// 204-251 at H = 128 for T = 4K..32K (perf.md's convention), 7x the torch reference at H = 128,
// T = 4K. Below the 300 bar: see RESULTS.md for the next step.
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
  static constexpr int kMax = kP + kRows * kKeys * 2; // float [4][64] block row maxima
  static constexpr int kSum = kMax + 4 * kRows * 4;   // float [4][64] row sums
  static constexpr int kSlot = kSum + 4 * kRows * 4;  // int [2][64] slot of each gathered row
  static constexpr int kMask = kSlot + 2 * kKeys * 4; // uint32 [kMaskWords] non-empty blocks
  static constexpr int kBytes = kMask + kMaskWords * 4;
  static constexpr int kColsPerWarp = kDl / 4; // O columns of one warp
  static constexpr int kOTiles = kColsPerWarp / 8;
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
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t s_q = dev::smem_addr(smem);
  const uint32_t s_p = s_q + L::kP;
  float* row_max = reinterpret_cast<float*>(smem + L::kMax);
  float* row_sum = reinterpret_cast<float*>(smem + L::kSum);
  int* slots = reinterpret_cast<int*>(smem + L::kSlot);
  uint32_t* mask = reinterpret_cast<uint32_t*>(smem + L::kMask);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp & 1, wn = warp >> 1;
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
    dev::cp_async_16(s_q + dev::swizzle(r, c, L::kChunks), in ? q + (h0 + r) * p.q_h + c * 8 : q,
                     in ? 16 : 0);
  }
  __syncthreads();

  auto gather = [&](int block, int buf) {
    const uint32_t s_k = s_q + (1 + buf) * L::kTile;
    for (int i = tid; i < kKeys * L::kChunks; i += kThreads) {
      const int r = i / L::kChunks, c = i % L::kChunks;
      const int j = block * kKeys + r;
      const int slot = j < p.topk ? idx[j] : -1;
      const bool in = slot >= 0 && c * 8 < p.dqk;
      dev::cp_async_16(s_k + dev::swizzle(r, c, L::kChunks),
                       in ? kv + static_cast<int64_t>(slot) * p.kv_t + c * 8 : kv, in ? 16 : 0);
      if (c == 0) slots[buf * kKeys + r] = slot;
    }
  };

  const float scale_log2 = p.scale * kLog2e;
  const int g = lane >> 2, c2 = 2 * (lane & 3);
  float o[2][L::kOTiles][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int n = 0; n < L::kOTiles; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][n][e] = 0.f;
  float m[2][2], l[2][2]; // per (m tile, row half): running max (log2 units), partial sum
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) m[mt][hf] = -INFINITY, l[mt][hf] = 0.f;

  int block = next_block(mask, blocks, -1);
  if (block >= 0) gather(block, 0);
  dev::cp_async_commit();
  int buf = 0;
  while (block >= 0) {
    dev::cp_async_wait<0>();
    __syncthreads();
    const int next = next_block(mask, blocks, block);
    if (next >= 0) gather(next, buf ^ 1);
    dev::cp_async_commit();
    const uint32_t s_k = s_q + (1 + buf) * L::kTile;

    // S = Q K^T for rows [32 wm, +32) x keys [16 wn, +16).
    float s[2][2][4] = {};
#pragma unroll 4
    for (int kc = 0; kc < kDqk / 16; ++kc) {
      uint32_t a[2][4], b[4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        dev::ldmatrix_x4(a[mt], s_q + dev::swizzle(32 * wm + 16 * mt + (lane & 15),
                                                   2 * kc + (lane >> 4), L::kChunks));
      }
      dev::ldmatrix_x4(b, s_k + dev::swizzle(16 * wn + (lane & 7) + ((lane >> 4) << 3),
                                             2 * kc + ((lane >> 3) & 1), L::kChunks));
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        dev::mma_bf16(s[mt][0], a[mt], b[0], b[1]);
        dev::mma_bf16(s[mt][1], a[mt], b[2], b[3]);
      }
    }

    // Scale to log2 units, mask -1 slots, block row maxima across the 4 warps of a row.
    const int* block_slots = slots + buf * kKeys;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool valid = block_slots[16 * wn + 8 * nt + c2 + e] >= 0;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          s[mt][nt][e] = valid ? s[mt][nt][e] * scale_log2 : -INFINITY;
          s[mt][nt][e + 2] = valid ? s[mt][nt][e + 2] * scale_log2 : -INFINITY;
        }
      }
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = fmaxf(fmaxf(s[mt][0][2 * hf], s[mt][0][2 * hf + 1]),
                         fmaxf(s[mt][1][2 * hf], s[mt][1][2 * hf + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        if ((lane & 3) == 0) row_max[wn * kRows + 32 * wm + 16 * mt + 8 * hf + g] = mx;
      }
    }
    __syncthreads();

    // Online softmax: new maxima, rescale O, P = exp2(s - m) to shared memory as bf16.
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int row = 32 * wm + 16 * mt + 8 * hf + g;
        float mx = m[mt][hf];
#pragma unroll
        for (int w = 0; w < 4; ++w) mx = fmaxf(mx, row_max[w * kRows + row]);
        const float base = mx == -INFINITY ? 0.f : mx; // a row with nothing valid yet
        const float corr = dev::fast_exp2(m[mt][hf] - base);
        m[mt][hf] = mx;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          const float p0 = dev::fast_exp2(s[mt][nt][2 * hf] - base);
          const float p1 = dev::fast_exp2(s[mt][nt][2 * hf + 1] - base);
          sum += p0 + p1;
          const int col = 16 * wn + 8 * nt + c2;
          *reinterpret_cast<uint32_t*>(smem + L::kP + dev::swizzle(row, col >> 3, kKeys / 8) +
                                       (col & 7) * 2) = dev::pack_bf16(p0, p1);
        }
        l[mt][hf] = l[mt][hf] * corr + sum;
#pragma unroll
        for (int n = 0; n < L::kOTiles; ++n) {
          o[mt][n][2 * hf] *= corr;
          o[mt][n][2 * hf + 1] *= corr;
        }
      }
    }
    __syncthreads();

    // O += P V for rows [32 wm, +32) x columns [wn L/4, +L/4).
#pragma unroll
    for (int kc = 0; kc < kKeys / 16; ++kc) {
      uint32_t a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        dev::ldmatrix_x4(a[mt], s_p + dev::swizzle(32 * wm + 16 * mt + (lane & 15),
                                                   2 * kc + (lane >> 4), kKeys / 8));
      }
#pragma unroll
      for (int nb = 0; nb < L::kOTiles / 2; ++nb) {
        const int col0 = wn * L::kColsPerWarp + 16 * nb;
        uint32_t b[4];
        dev::ldmatrix_x4_trans(b,
                               s_k + dev::swizzle(16 * kc + (lane & 7) + (((lane >> 3) & 1) << 3),
                                                  (col0 >> 3) + (lane >> 4), L::kChunks));
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          dev::mma_bf16(o[mt][2 * nb], a[mt], b[0], b[1]);
          dev::mma_bf16(o[mt][2 * nb + 1], a[mt], b[2], b[3]);
        }
      }
    }
    block = next;
    buf ^= 1;
  }
  dev::cp_async_wait<0>();

  // Row sums across the 4 warps of a row, then O / l and the log-sum-exp.
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float sum = l[mt][hf];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      if ((lane & 3) == 0) row_sum[wn * kRows + 32 * wm + 16 * mt + 8 * hf + g] = sum;
    }
  }
  __syncthreads();
  auto* out = static_cast<__nv_bfloat16*>(p.o);
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = 32 * wm + 16 * mt + 8 * hf + g;
      const int h = h0 + row;
      float total = 0.f;
#pragma unroll
      for (int w = 0; w < 4; ++w) total += row_sum[w * kRows + row];
      if (h >= p.heads) continue;
      const float inv = total > 0.f ? 1.f / total : 0.f;
      __nv_bfloat16* dst = out + (static_cast<int64_t>(t) * p.heads + h) * p.latent;
#pragma unroll
      for (int n = 0; n < L::kOTiles; ++n) {
        const int col = wn * L::kColsPerWarp + 8 * n + c2;
        if (col < p.latent) {
          *reinterpret_cast<uint32_t*>(dst + col) =
              dev::pack_bf16(o[mt][n][2 * hf] * inv, o[mt][n][2 * hf + 1] * inv);
        }
      }
      if (wn == 0 && (lane & 3) == 0) {
        p.lse[static_cast<int64_t>(t) * p.heads + h] =
            total > 0.f ? (m[mt][hf] + log2f(total)) * kLn2 : INFINITY;
      }
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
  if (p.dqk <= 64 && p.latent <= 64) return launch<64, 64>(p, stream);
  if (p.dqk <= 128) return launch<128, 128>(p, stream);
  return launch<576, 512>(p, stream);
}

} // namespace kiln::backends::cuda
