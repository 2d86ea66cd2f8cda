// sparse_mla backward (launch.h states the gradient): dq and the float32 dkv accumulator from q,
// kv, the indices, the forward's o and lse, and d_o (the ATen side has already applied w_vc).
//
// Two kernels on the caller's stream:
//   1. delta[t, h] = sum_l d_o[t, h, l] * o[t, h, l]  (float32; one warp per (t, h) row).
//   2. The main kernel: one CTA of two warpgroups (256 threads) per (token t, block of 64 heads);
//      heads past `heads` are masked rows (zero Q and dO, lse = +inf, so P = dS = 0). Per CTA:
//        Q [64, Dqk] and dO [64, Lat] staged once in shared memory (cp.async, zero-filled past
//        dqk / latent and for masked rows); dQ accumulated in float32 registers over the whole
//        index row. Then, per key block of 64 index slots (blocks with no valid slot are
//        skipped; slots past topk count as -1):
//          K  = kv[idx[t, block]]  [64, Dqk] gathered with cp.async, -1 rows zero-filled
//          S  = Q K^T, dP = dO V^T (V = K[:, :Lat]): warpgroup wg takes keys [32 wg, +32) of
//               both, wgmma m64n32k16 from shared memory (Q, dO, K all K-major)
//          P  = exp2(S * scale * log2 e - lse * log2 e), 0 for -1 slots (float32, in registers)
//          dS = P * (dP - delta) * scale; P and dS rounded to bf16 into [head, key] tiles
//          dQ += dS K   (wgmma m64n64k16, K read MN-major: its 64-channel blocks are N atoms)
//          (the next block's gather is issued here: K is free; it lands during the dK step)
//          dK = dS^T Q + P^T dO, one 64-column atom at a time (wgmma m64n64k16 with both
//               operands MN-major: the [head, key] tiles transposed, Q and dO rows), float32,
//               added to dkv[slot] with 16-byte float atomics (valid slots and columns < dqk)
//        and at the end dq = bf16(dQ).
//   Work split of the 64-column atoms of dQ and dK between the warpgroups: the first kPaired
//   (an even count, all of them latent) go whole, atom 2 i + wg of dQ and 2 i + 1 - wg of dK, so
//   each does the same work; the rest (the RoPE atom at GLM widths, the only atom at width 64)
//   are split along the reduction: each warpgroup adds its 32 keys to a partial dQ (summed
//   through shared memory at the end) and its 32 heads to dK (the atomics sum them). So no wgmma
//   sits behind a branch on the warpgroup: ptxas reports no serialized wgmma (C7520).
//
// Widths: templates on padded widths (Dqk, Lat) = (64, 64), (128, 128), (576, 512), the
// forward's set; a call takes the smallest that holds (dqk, latent), extra channels are zeros.
// Numerics match the torch reference's (plugins/backends/torch/sparse_mla.cpp) up to summation
// order and where bf16 rounding happens: here dS is rounded to bf16 before dQ += dS K and
// dK += dS^T Q (the reference keeps float32) while dP stays float32 (the reference rounds it),
// and delta = d_o . o uses the bf16 o (the reference sums dP * P).
//
// Budget at GLM-5 widths (Dqk 576, Lat 512), per key block of a CTA:
//   FLOPs 2 * 64 * 64 * (2 * 512 + 3 * 576) = 22.5 M (perf.md's convention, masked slots and
//   masked heads counted): ~5.5 k cycles of tensor-core issue at the dense wgmma rate (4096
//   FLOP/cycle/SM). Operand bytes the tensor cores read from shared memory: S and dP (36 + 32)
//   k steps x 2 warpgroups of m64n32k16 at 3 KiB = 408 KiB, dQ 36 and dK 68 m64n64k16 at 4 KiB
//   = 416 KiB: ~824 KiB, ~6.6 k cycles at 128 B/cycle, so shared-memory bandwidth, not the tensor
//   cores, bounds it (~7 k cycles per block: ~750 TFLOP/s on 132 SMs at 1.83 GHz, before the
//   gather, the softmax, the atomics (64 x 576 x 4 = 144 KiB per block, to L2) and the barriers).
// Shared memory (one CTA per SM at 576/512), in the wgmma 128-byte-swizzle layout: Q 72 KiB +
// dO 64 KiB + K 72 KiB + P 8 KiB + dS 8 KiB + slots 0.5 KiB + 1 KiB alignment slack = 225.5 KiB;
// K is single-buffered, its next gather overlaps the dK step and its atomics.
// ptxas (sm_90a, CUDA 13.0, -Xptxas -v):
//   <64, 64>:   110 registers, no spills
//   <128, 128>: 153 registers, no spills
//   <576, 512>: 236 registers, no spills, 230912 bytes shared (dynamic); dQ takes 160 of them
//   delta:      32 registers
// Achieved (H200, 2026-12-05, tools/bench/RESULTS.md; H=64, topk 2048, perf.md's backward
// FLOPs, incl. the w_vc bmms): 270.6 TFLOP/s at T=4K, 245.0 at 8K, 233.2 at 16K, 220.7 at 32K;
// the mma.sync version it replaces got 226.5, 204.2, 193.2, 190.0 in the same run.
#include "device.cuh"
#include "launch.h"

#include <cuda_runtime.h>

#include <cstdint>

namespace kiln::backends::cuda {
namespace {

constexpr int kHeads = 64; // query heads per CTA: the rows of Q, dO, dQ
constexpr int kKeys = 64;  // index slots per key block: the rows of K
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;

// Shared-memory layout of the main kernel, byte offsets from a 1024-byte aligned base. Every
// tile is bf16 in the wgmma K-major 128-byte-swizzle layout of 64 rows (device.cuh, sw128):
// 64-column blocks of 8 KiB one after another.
template <int Dqk, int Lat>
struct BwdSmem {
  static_assert(Dqk % 64 == 0 && Lat % 64 == 0 && Lat <= Dqk, "padded widths");
  static constexpr int kAtom = kHeads * 128;              // one 64-column block of a 64-row tile
  static constexpr int kQ = 0;                            // Q [kHeads, Dqk]
  static constexpr int kDo = kQ + kHeads * Dqk * 2;       // dO [kHeads, Lat]
  static constexpr int kK = kDo + kHeads * Lat * 2;       // K [kKeys, Dqk]
  static constexpr int kP = kK + kKeys * Dqk * 2;         // P [kHeads, kKeys]
  static constexpr int kDs = kP + kHeads * kKeys * 2;     // dS [kHeads, kKeys]
  static constexpr int kSlots = kDs + kHeads * kKeys * 2; // int32 [2][kKeys]
  static constexpr int kBytes = kSlots + 2 * kKeys * 4 + 1024; // + slack to align the base
  static_assert(kBytes <= 232448, "sm_90 allows 227 KiB of shared memory per block");
};

__device__ __forceinline__ float bf16_bits_to_float(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

// Sum of the products of two rows of 8 bf16 values (16 bytes each).
__device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
  const uint32_t x[4] = {a.x, a.y, a.z, a.w};
  const uint32_t y[4] = {b.x, b.y, b.z, b.w};
  float sum = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    sum = fmaf(__uint_as_float(x[i] << 16), __uint_as_float(y[i] << 16), sum);
    sum = fmaf(__uint_as_float(x[i] & 0xffff0000u), __uint_as_float(y[i] & 0xffff0000u), sum);
  }
  return sum;
}

// delta[r] = sum_l d_o[r, l] * o[r, l] for the rows r < rows of two contiguous bf16 [rows,
// latent] tensors: one warp per row, 16-byte loads when rows are 16-byte aligned.
__global__ void __launch_bounds__(kThreads)
    sparse_mla_bwd_delta(const uint16_t* __restrict__ o, const uint16_t* __restrict__ d_o,
                         float* __restrict__ delta, int64_t rows, int latent) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= rows) return; // a whole warp
  const int lane = threadIdx.x % 32;
  const uint16_t* a = o + row * latent;
  const uint16_t* b = d_o + row * latent;
  float sum = 0;
  if (latent % 8 == 0) {
    for (int k = lane; k < latent / 8; k += 32) {
      sum += dot8(*reinterpret_cast<const uint4*>(a + 8 * k),
                  *reinterpret_cast<const uint4*>(b + 8 * k));
    }
  } else {
    for (int l = lane; l < latent; l += 32) {
      sum = fmaf(bf16_bits_to_float(a[l]), bf16_bits_to_float(b[l]), sum);
    }
  }
#pragma unroll
  for (int m = 16; m > 0; m /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, m);
  if (lane == 0) delta[row] = sum;
}

// The first key block at or after `kb` with a valid slot (n_blocks if none); its kKeys slots
// (-1 past topk) are left in `slots`. Every thread of the CTA calls it (it holds barriers), and
// the barrier it ends on also tells the caller that all threads are past their earlier work.
__device__ __forceinline__ int next_block(int kb, int n_blocks, const int32_t* idx_row, int topk,
                                          int32_t* slots) {
  for (; kb < n_blocks; ++kb) {
    int32_t slot = -1;
    if (threadIdx.x < kKeys) {
      const int j = kb * kKeys + threadIdx.x;
      if (j < topk) slot = idx_row[j];
      slots[threadIdx.x] = slot;
    }
    if (__syncthreads_or(slot >= 0)) break;
  }
  return kb;
}

// Issues the cp.async gather of the key block whose slots are `slots` into the K tile: row r is
// kv[slots[r], :dqk], zeros for a -1 slot and for the channels past dqk.
template <int Dqk>
__device__ __forceinline__ void gather_keys(uint32_t s_k, const int32_t* slots, const uint16_t* kv,
                                            int64_t kv_t, int dqk) {
  constexpr int kChunks = Dqk / 8;
#pragma unroll 1 // rolled: unrolled, its addresses are hoisted out of the key-block loop
  for (int i = 0; i < kKeys * kChunks / kThreads; ++i) {
    const int e = static_cast<int>(threadIdx.x) + i * kThreads;
    const int r = e / kChunks, k = e % kChunks;
    const int32_t slot = slots[r];
    const bool ok = slot >= 0 && 8 * k < dqk;
    const uint16_t* src = ok ? kv + slot * kv_t + 8 * k : kv;
    dev::cp_async_16(s_k + dev::sw128(r, k, kKeys), src, ok ? 16 : 0);
  }
}

template <int Dqk, int Lat>
__global__ void __launch_bounds__(kThreads, 1) sparse_mla_bwd_kernel(const SparseMlaBwdParams p) {
  using Smem = BwdSmem<Dqk, Lat>;
  constexpr int kQkChunks = Dqk / 8, kLatChunks = Lat / 8;
  // 64-column blocks ("atoms") of dQ and dK. The first kPaired are shared out whole: atom
  // 2 i + wg of dQ and 2 i + 1 - wg of dK to warpgroup wg. The rest (the RoPE block at GLM
  // widths, the only one at 64) are split along the reduction: each warpgroup adds its half of
  // the keys to a partial dQ (the two meet at the end) and its half of the heads to dK (the
  // atomics sum them). Every wgmma then runs on every path: none sits behind a branch on wg.
  constexpr int kQAtoms = Dqk / 64, kLatAtoms = Lat / 64;
  constexpr int kPaired = kLatAtoms / 2 * 2, kSplit = kQAtoms - kPaired;
  extern __shared__ __align__(1024) unsigned char smem[];
  // The swizzled tiles need a 1024-byte aligned start.
  unsigned char* base = smem + ((1024 - (dev::smem_addr(smem) & 1023)) & 1023);
  const uint32_t s_q = dev::smem_addr(base + Smem::kQ);
  const uint32_t s_do = dev::smem_addr(base + Smem::kDo);
  const uint32_t s_k = dev::smem_addr(base + Smem::kK);
  const uint32_t s_p = dev::smem_addr(base + Smem::kP);
  const uint32_t s_ds = dev::smem_addr(base + Smem::kDs);
  int32_t* s_slots = reinterpret_cast<int32_t*>(base + Smem::kSlots);

  const int head_blocks = (p.heads + kHeads - 1) / kHeads;
  const int t = static_cast<int>(blockIdx.x / head_blocks);
  const int h0 = static_cast<int>(blockIdx.x % head_blocks) * kHeads;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, c = 2 * (lane % 4); // accumulator row and column pair (device.cuh)
  const int wg = warp / 4;                    // warpgroup: S/dP keys 32 wg..
  const int w = warp % 4;                     // accumulator rows 16 w + g (+8) of every product

  const auto* q = static_cast<const uint16_t*>(p.q);
  const auto* kv = static_cast<const uint16_t*>(p.kv);
  const auto* d_o = static_cast<const uint16_t*>(p.d_o);
  const int32_t* idx_row = p.idx + static_cast<int64_t>(t) * p.idx_t;

  // ---- Q and dO, once: zero rows past `heads`, zero channels past dqk / latent.
#pragma unroll 1
  for (int i = 0; i < kHeads * kQkChunks / kThreads; ++i) {
    const int e = tid + i * kThreads;
    const int r = e / kQkChunks, k = e % kQkChunks;
    const int h = h0 + r;
    const bool ok = h < p.heads && 8 * k < p.dqk;
    const uint16_t* src = ok ? q + t * p.q_t + h * p.q_h + 8 * k : q;
    dev::cp_async_16(s_q + dev::sw128(r, k, kHeads), src, ok ? 16 : 0);
  }
  if (p.latent % 8 == 0) { // 16-byte rows
#pragma unroll 1
    for (int i = 0; i < kHeads * kLatChunks / kThreads; ++i) {
      const int e = tid + i * kThreads;
      const int r = e / kLatChunks, k = e % kLatChunks;
      const int h = h0 + r;
      const bool ok = h < p.heads && 8 * k < p.latent;
      const uint16_t* src =
          ok ? d_o + (static_cast<int64_t>(t) * p.heads + h) * p.latent + 8 * k : d_o;
      dev::cp_async_16(s_do + dev::sw128(r, k, kHeads), src, ok ? 16 : 0);
    }
  } else { // rows not 16-byte aligned: element loads, plain shared stores
    for (int e = tid; e < kHeads * kLatChunks; e += kThreads) {
      const int r = e / kLatChunks, k = e % kLatChunks;
      const int h = h0 + r;
      uint32_t v[4] = {0, 0, 0, 0};
      if (h < p.heads) {
        const uint16_t* row = d_o + (static_cast<int64_t>(t) * p.heads + h) * p.latent;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int l = 8 * k + j;
          const uint32_t bits = l < p.latent ? row[l] : 0u;
          v[j / 2] |= bits << (16 * (j % 2));
        }
      }
      *reinterpret_cast<uint4*>(base + Smem::kDo + dev::sw128(r, k, kHeads)) =
          make_uint4(v[0], v[1], v[2], v[3]);
    }
  }

  // This thread's two accumulator rows (16 w + g, +8): lse in log2 units (+inf for masked rows:
  // P = 0) and delta.
  float lse2[2], delta[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int h = h0 + 16 * w + g + 8 * i;
    const int64_t row = static_cast<int64_t>(t) * p.heads + h;
    lse2[i] = h < p.heads ? p.lse[row] * kLog2e : __int_as_float(0x7f800000);
    delta[i] = h < p.heads ? p.delta[row] : 0.0f;
  }
  const float scale_log2 = p.scale * kLog2e;

  const int n_blocks = (p.topk + kKeys - 1) / kKeys;
  int buf = 0;
  int kb = next_block(0, n_blocks, idx_row, p.topk, s_slots);
  if (kb < n_blocks) gather_keys<Dqk>(s_k, s_slots, kv, p.kv_t, p.dqk);
  dev::cp_async_commit();

  // dQ as m64n64 accumulators: whole atoms 2 i + wg, then the partial split atoms.
  float dq[kPaired / 2 + kSplit][32];
#pragma unroll
  for (int i = 0; i < kPaired / 2 + kSplit; ++i) {
#pragma unroll
    for (int e = 0; e < 32; ++e) dq[i][e] = 0.0f;
  }

  while (kb < n_blocks) {
    dev::cp_async_wait<0>();
    dev::fence_proxy_async(); // the tensor cores read what cp.async (and the stores) wrote
    __syncthreads();          // K (Q, dO) visible; the last block's P, dS and K reads are done
    const int32_t* slots = s_slots + buf * kKeys;

    // ---- S = Q K^T and dP = dO V^T: all 64 heads x keys [32 wg, +32) of this warpgroup.
    float s[16], dp[16];
#pragma unroll
    for (int e = 0; e < 16; ++e) s[e] = dp[e] = 0.0f;
    const uint32_t b_keys = s_k + 32 * wg * 128;
    dev::wgmma_fence();
#pragma unroll
    for (int kc = 0; kc < Dqk / 16; ++kc) { // channels 16 kc..: block kc / 4, bytes 32 (kc % 4)
      const uint32_t step = (kc / 4) * Smem::kAtom + (kc % 4) * 32;
      dev::wgmma_m64n32k16(s, dev::sw128_desc(s_q + step), dev::sw128_desc(b_keys + step), true);
      if (kc < Lat / 16) {
        dev::wgmma_m64n32k16(dp, dev::sw128_desc(s_do + step), dev::sw128_desc(b_keys + step),
                             true);
      }
    }
    dev::wgmma_commit();
    dev::wgmma_wait<0>();

    // ---- P and dS (float32), rounded to bf16 into their tiles [head, key].
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const int key = 32 * wg + 8 * n + c; // and key + 1
      const bool valid0 = slots[key] >= 0, valid1 = slots[key + 1] >= 0;
#pragma unroll
      for (int i = 0; i < 2; ++i) { // row 16 w + g + 8 i
        const float p0 =
            valid0 ? dev::fast_exp2(fmaf(s[4 * n + 2 * i], scale_log2, -lse2[i])) : 0.0f;
        const float p1 =
            valid1 ? dev::fast_exp2(fmaf(s[4 * n + 2 * i + 1], scale_log2, -lse2[i])) : 0.0f;
        const float ds0 = p0 * (dp[4 * n + 2 * i] - delta[i]) * p.scale;
        const float ds1 = p1 * (dp[4 * n + 2 * i + 1] - delta[i]) * p.scale;
        const uint32_t at = dev::sw128(16 * w + g + 8 * i, key / 8, kHeads) + 2 * (key % 8);
        *reinterpret_cast<uint32_t*>(base + Smem::kP + at) = dev::pack_bf16(p0, p1);
        *reinterpret_cast<uint32_t*>(base + Smem::kDs + at) = dev::pack_bf16(ds0, ds1);
      }
    }
    dev::fence_proxy_async(); // the tensor cores read P and dS next
    __syncthreads();

    // ---- dQ += dS K: whole atoms over the 64 keys, split atoms over keys [32 wg, +32) (K read
    // MN-major: its 64-channel blocks are the N atoms, 16 key rows per k step).
    dev::wgmma_fence();
#pragma unroll
    for (int i = 0; i < kPaired / 2; ++i) {
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        dev::wgmma_m64k16_bt<64>(
            dq[i], dev::sw128_desc(s_ds + kk * 32),
            dev::sw128_desc_mn(s_k + (2 * i + wg) * Smem::kAtom + kk * 16 * 128, Smem::kAtom),
            true);
      }
    }
#pragma unroll
    for (int j = 0; j < kSplit; ++j) {
#pragma unroll
      for (int kk = 2 * wg; kk < 2 * wg + 2; ++kk) {
        dev::wgmma_m64k16_bt<64>(
            dq[kPaired / 2 + j], dev::sw128_desc(s_ds + kk * 32),
            dev::sw128_desc_mn(s_k + (kPaired + j) * Smem::kAtom + kk * 16 * 128, Smem::kAtom),
            true);
      }
    }
    dev::wgmma_commit();
    dev::wgmma_wait<0>();

    // ---- The next block's slots; its barrier frees K, so its gather starts now.
    const int next = next_block(kb + 1, n_blocks, idx_row, p.topk, s_slots + (buf ^ 1) * kKeys);
    if (next < n_blocks) gather_keys<Dqk>(s_k, s_slots + (buf ^ 1) * kKeys, kv, p.kv_t, p.dqk);
    dev::cp_async_commit();

    // ---- dK = dS^T Q + P^T dO, one 64-column atom at a time (whole atoms 2 i + 1 - wg, the
    // other warpgroup's dQ share; split atoms over heads [32 wg, +32)), added to dkv[slot] with
    // 16-byte float atomics. dS^T and P^T are the [head, key] tiles read MN-major.
    const bool odd = lane % 2 == 1;
    const int32_t slot = slots[16 * w + g + (odd ? 8 : 0)]; // the key row this lane adds to
    float* dkv_row = p.dkv + static_cast<int64_t>(slot < 0 ? 0 : slot) * p.dqk;
#pragma unroll
    for (int i = 0; i < kPaired / 2 + kSplit; ++i) {
      const bool whole = i < kPaired / 2;
      const int a = whole ? 2 * i + 1 - wg : kPaired + i - kPaired / 2;
      const int kk0 = whole ? 0 : 2 * wg, kk1 = whole ? kHeads / 16 : 2 * wg + 2;
      float acc[32];
#pragma unroll
      for (int e = 0; e < 32; ++e) acc[e] = 0.0f;
      dev::wgmma_fence();
#pragma unroll
      for (int kk = kk0; kk < kk1; ++kk) { // heads 16 kk..
        const uint32_t rows = kk * 16 * 128;
        dev::wgmma_m64k16_tt<64>(acc, dev::sw128_desc_mn(s_ds + rows, Smem::kAtom),
                                 dev::sw128_desc_mn(s_q + a * Smem::kAtom + rows, Smem::kAtom),
                                 true);
        if (whole || kPaired + i - kPaired / 2 < kLatAtoms) {
          dev::wgmma_m64k16_tt<64>(acc, dev::sw128_desc_mn(s_p + rows, Smem::kAtom),
                                   dev::sw128_desc_mn(s_do + a * Smem::kAtom + rows, Smem::kAtom),
                                   true);
        }
      }
      dev::wgmma_commit();
      dev::wgmma_wait<0>();
      // Lanes 2i and 2i+1 hold columns c..c+1 and c+2..c+3 of rows g and g + 8: swap halves so
      // that the even lane has row g, the odd lane row g + 8, four columns each.
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        const float send0 = odd ? acc[4 * n] : acc[4 * n + 2];
        const float send1 = odd ? acc[4 * n + 1] : acc[4 * n + 3];
        const float got0 = __shfl_xor_sync(0xffffffffu, send0, 1);
        const float got1 = __shfl_xor_sync(0xffffffffu, send1, 1);
        const float4 v = odd ? make_float4(got0, got1, acc[4 * n + 2], acc[4 * n + 3])
                             : make_float4(acc[4 * n], acc[4 * n + 1], got0, got1);
        const int col = 64 * a + 8 * n + 4 * ((lane / 2) % 2);
        if (slot >= 0 && col < p.dqk) atomicAdd(reinterpret_cast<float4*>(dkv_row + col), v);
      }
    }
    kb = next;
    buf ^= 1;
  }
  dev::cp_async_wait<0>();

  // ---- The split atoms' two partial dQ meet: warpgroup 1 leaves its partials in shared memory
  // (where K was), warpgroup 0 adds them.
  if constexpr (kSplit > 0) {
    float* part = reinterpret_cast<float*>(base + Smem::kK); // [kSplit][128 threads][32]
    const int slot_of = tid % 128;
    __syncthreads(); // every wgmma of the last block has read K
    if (wg == 1) {
#pragma unroll
      for (int j = 0; j < kSplit; ++j) {
#pragma unroll
        for (int e = 0; e < 32; ++e)
          part[(j * 128 + slot_of) * 32 + (e + slot_of) % 32] = dq[kPaired / 2 + j][e];
      }
    }
    __syncthreads();
    if (wg == 0) {
#pragma unroll
      for (int j = 0; j < kSplit; ++j) {
#pragma unroll
        for (int e = 0; e < 32; ++e)
          dq[kPaired / 2 + j][e] += part[(j * 128 + slot_of) * 32 + (e + slot_of) % 32];
      }
    }
  }

  // ---- dq = bf16(dQ): rows past `heads` and columns past dqk are not written; warpgroup 0
  // writes the split atoms.
  auto* dq_out = static_cast<__nv_bfloat16*>(p.dq);
#pragma unroll
  for (int i = 0; i < kPaired / 2 + kSplit; ++i) {
    const bool whole = i < kPaired / 2;
    if (!whole && wg != 0) continue;
    const int a = whole ? 2 * i + wg : kPaired + i - kPaired / 2;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const int col = 64 * a + 8 * n + c;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int h = h0 + 16 * w + g + 8 * r;
        if (h < p.heads && col < p.dqk) {
          const int64_t at = (static_cast<int64_t>(t) * p.heads + h) * p.dqk + col;
          *reinterpret_cast<uint32_t*>(dq_out + at) =
              dev::pack_bf16(dq[i][4 * n + 2 * r], dq[i][4 * n + 2 * r + 1]);
        }
      }
    }
  }
}

template <int Dqk, int Lat>
cudaError_t launch_main(const SparseMlaBwdParams& p, cudaStream_t stream) {
  constexpr int kBytes = BwdSmem<Dqk, Lat>::kBytes;
  const auto kernel = &sparse_mla_bwd_kernel<Dqk, Lat>;
  const cudaError_t status =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
  if (status != cudaSuccess) return status;
  const int64_t ctas = static_cast<int64_t>(p.tokens) * ((p.heads + kHeads - 1) / kHeads);
  kernel<<<static_cast<unsigned>(ctas), kThreads, kBytes, stream>>>(p);
  return cudaGetLastError();
}

} // namespace

cudaError_t launch_sparse_mla_bwd(const SparseMlaBwdParams& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.heads == 0) return cudaSuccess;
  const int64_t rows = static_cast<int64_t>(p.tokens) * p.heads;
  sparse_mla_bwd_delta<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0,
                         stream>>>(static_cast<const uint16_t*>(p.o),
                                   static_cast<const uint16_t*>(p.d_o), p.delta, rows, p.latent);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  if (p.dqk <= 64 && p.latent <= 64) return launch_main<64, 64>(p, stream);
  if (p.dqk <= 128 && p.latent <= 128) return launch_main<128, 128>(p, stream);
  if (p.dqk <= 576 && p.latent <= 512) return launch_main<576, 512>(p, stream);
  return cudaErrorNotSupported;
}

} // namespace kiln::backends::cuda
