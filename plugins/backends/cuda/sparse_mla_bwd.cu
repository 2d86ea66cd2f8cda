// sparse_mla backward (launch.h states the gradient): dq and the float32 dkv accumulator from q,
// kv, the indices, the forward's o and lse, and d_o (the ATen side has already applied w_vc).
//
// Two kernels on the caller's stream:
//   1. delta[t, h] = sum_l d_o[t, h, l] * o[t, h, l]  (float32; one warp per (t, h) row).
//   2. The main kernel: one CTA of 8 warps per (token t, block of 64 heads); heads past `heads`
//      are masked rows (zero Q and dO, lse = +inf, so P = dS = 0). Per CTA:
//        Q [64, Dqk] and dO [64, Lat] staged once in shared memory (cp.async, zero-filled past
//        dqk / latent and for masked rows); dQ [64, Dqk] accumulated in float32 registers over
//        the whole index row. Then, per key block of 64 index slots (blocks with no valid slot
//        are skipped; slots past topk count as -1):
//          K  = kv[idx[t, block]]  [64, Dqk] gathered with cp.async, -1 rows zero-filled
//          S  = Q K^T, dP = dO V^T (V = K[:, :Lat]; one k-loop, the K fragments shared)
//          P  = exp2(S * scale * log2 e - lse * log2 e), 0 for -1 slots (float32)
//          dS = P * (dP - delta) * scale; P and dS rounded to bf16 into shared memory
//          dQ += dS K
//          (the next block's gather is issued here: K is free; it lands during the dK step)
//          dK = dS^T Q + P^T dO (the latter on the first Lat columns), 64 columns at a time,
//               float32, added to dkv[slot] with 16-byte float atomics (valid slots and
//               columns < dqk only)
//        and at the end dq = bf16(dQ). Every product runs on mma.sync m16n8k16 (bf16 in, float32
//        accumulate); shared tiles are XOR-swizzled (device.cuh) and read with ldmatrix.
//   Warp tiles (w = warp 0..7): S/dP rows 16 (w % 4) x keys 32 (w / 4); dQ rows 16 (w % 4) x
//   every other 16-column group (w / 4), Dqk/2 columns in all (Dqk/4 float32 registers a
//   thread); dK keys 16 (w % 4) x columns 32 (w / 4) of each 64-column chunk.
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
//   masked heads counted); gathered K 72 KiB (L2), dkv atomics 64 x 576 x 4 = 144 KiB (L2);
//   shared-memory reads 2880 ldmatrix.x4 = 1.47 MB (per warp: S/dP 140, dQ 76, dK 144), i.e.
//   ~11.5 k cycles at 128 B/cycle: a ceiling near 470 TFLOP/s on 132 SMs at 1.83 GHz; the
//   mma.sync work alone (5.5 k HMMA) is ~8 k cycles at ~2/3 of the wgmma rate.
// Shared memory (one CTA per SM at 576/512): Q 72 KiB + dO 64 KiB + K 72 KiB + P 8 KiB +
// dS 8 KiB + slots 0.5 KiB = 224.5 KiB of the 227 KiB; K is single-buffered, its next gather
// overlaps the dK step (40% of the FLOPs) and its atomics.
// ptxas (sm_90a, CUDA 13.0, -Xptxas -v):
//   <64, 64>:   128 registers, no spills, 41472 bytes shared (dynamic)
//   <128, 128>: 149 registers, no spills, 66048 bytes shared
//   <576, 512>: 254 registers, no spills, 229888 bytes shared (dQ alone takes 144 registers:
//               a change that adds live state here will spill; check -Xptxas -v)
//   delta:      32 registers
// Achieved TFLOP/s: not measured yet.
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

// Shared-memory layout of the main kernel, byte offsets from the dynamic shared base. Every
// tile is bf16 and swizzled with a pitch of (its width / 8) 16-byte chunks.
template <int Dqk, int Lat>
struct BwdSmem {
  static_assert(Dqk % 64 == 0 && Lat % 64 == 0 && Lat <= Dqk, "padded widths");
  static constexpr int kQkChunks = Dqk / 8;               // chunks per row of Q and K
  static constexpr int kLatChunks = Lat / 8;              // chunks per row of dO
  static constexpr int kPChunks = kKeys / 8;              // chunks per row of P and dS
  static constexpr int kQ = 0;                            // [kHeads, Dqk]
  static constexpr int kDo = kQ + kHeads * Dqk * 2;       // [kHeads, Lat]
  static constexpr int kK = kDo + kHeads * Lat * 2;       // [kKeys, Dqk]
  static constexpr int kP = kK + kKeys * Dqk * 2;         // [kHeads, kKeys]
  static constexpr int kDs = kP + kHeads * kKeys * 2;     // [kHeads, kKeys]
  static constexpr int kSlots = kDs + kHeads * kKeys * 2; // int32 [2][kKeys]
  static constexpr int kBytes = kSlots + 2 * kKeys * 4;
  static_assert(kBytes <= 227 * 1024, "sm_90 allows 227 KiB of shared memory per block");
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

// Shared address of chunk 8 * k8 + klo (klo < 8) of a swizzled tile row that starts at `row`
// and whose row index is `s` modulo 8: dev::swizzle() split so that with k8 a compile-time
// constant the compiler keeps one register per distinct klo ^ s instead of one per chunk.
__device__ __forceinline__ uint32_t chunk_at(uint32_t row, int k8, int klo, int s) {
  return row + 128 * k8 + 16 * (klo ^ s);
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
    dev::cp_async_16(s_k + dev::swizzle(r, k, kChunks), src, ok ? 16 : 0);
  }
}

template <int Dqk, int Lat>
__global__ void __launch_bounds__(kThreads, 1) sparse_mla_bwd_kernel(const SparseMlaBwdParams p) {
  using Smem = BwdSmem<Dqk, Lat>;
  constexpr int kQkChunks = Smem::kQkChunks, kLatChunks = Smem::kLatChunks;
  constexpr int kPChunks = Smem::kPChunks;
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t s_q = dev::smem_addr(smem + Smem::kQ);
  const uint32_t s_do = dev::smem_addr(smem + Smem::kDo);
  const uint32_t s_k = dev::smem_addr(smem + Smem::kK);
  const uint32_t s_p = dev::smem_addr(smem + Smem::kP);
  const uint32_t s_ds = dev::smem_addr(smem + Smem::kDs);
  int32_t* s_slots = reinterpret_cast<int32_t*>(smem + Smem::kSlots);

  const int head_blocks = (p.heads + kHeads - 1) / kHeads;
  const int t = static_cast<int>(blockIdx.x / head_blocks);
  const int h0 = static_cast<int>(blockIdx.x % head_blocks) * kHeads;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, c = 2 * (lane % 4); // fragment row and column pair (device.cuh)
  const int wm = warp % 4;                    // S/dP/dQ: head rows 16 wm..; dK: key rows 16 wm..
  const int wn = warp / 4; // S/dP: keys 32 wn..; dQ: column groups 16 wn + 32 j..; dK: 32 wn..

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
    dev::cp_async_16(s_q + dev::swizzle(r, k, kQkChunks), src, ok ? 16 : 0);
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
      dev::cp_async_16(s_do + dev::swizzle(r, k, kLatChunks), src, ok ? 16 : 0);
    }
  } else { // rows not 16-byte aligned: element loads, plain shared stores
    for (int e = tid; e < kHeads * kLatChunks; e += kThreads) {
      const int r = e / kLatChunks, k = e % kLatChunks;
      const int h = h0 + r;
      uint32_t w[4] = {0, 0, 0, 0};
      if (h < p.heads) {
        const uint16_t* row = d_o + (static_cast<int64_t>(t) * p.heads + h) * p.latent;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int l = 8 * k + j;
          const uint32_t bits = l < p.latent ? row[l] : 0u;
          w[j / 2] |= bits << (16 * (j % 2));
        }
      }
      *reinterpret_cast<uint4*>(smem + Smem::kDo + dev::swizzle(r, k, kLatChunks)) =
          make_uint4(w[0], w[1], w[2], w[3]);
    }
  }

  // This thread's two fragment rows (g and g + 8 of its warp's 16): lse in log2 units (+inf for
  // masked rows: P = 0) and delta.
  float lse2[2], delta[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int h = h0 + 16 * wm + g + 8 * i;
    const int64_t row = static_cast<int64_t>(t) * p.heads + h;
    lse2[i] = h < p.heads ? p.lse[row] * kLog2e : __int_as_float(0x7f800000);
    delta[i] = h < p.heads ? p.delta[row] : 0.0f;
  }
  const float scale_log2 = p.scale * kLog2e;

  // ldmatrix row addresses. Every tile row an ldmatrix of this lane reads has index = lane (mod
  // 8), so one swizzle key `sw` serves them all; `hi` and `mid` pick the second 8 rows or chunk.
  const int sw = lane % 8, hi = lane / 16, mid = (lane / 8) % 2;
  // S/dP/dQ A operands (Q, dO, dS; rows 16 wm + lane % 16) and S/dP B operand (K rows, keys
  // 32 wn + lane % 8 + 8 hi, +16 for the second n16 half).
  const uint32_t a_q = s_q + (16 * wm + lane % 16) * kQkChunks * 16;
  const uint32_t a_do = s_do + (16 * wm + lane % 16) * kLatChunks * 16;
  const uint32_t a_dsr = s_ds + (16 * wm + lane % 16) * kPChunks * 16;
  const uint32_t b_k = s_k + (32 * wn + sw + 8 * hi) * kQkChunks * 16;
  // Rows 16 k + sw + 8 mid (transposed B operands: K in dQ, Q and dO in dK) and 16 k + sw + 8 hi
  // (transposed A operands: dS^T, P^T), for k = 0: add 16 k rows.
  const int row_t = sw + 8 * mid, row_ta = sw + 8 * hi;

  const int n_blocks = (p.topk + kKeys - 1) / kKeys;
  int buf = 0;
  int kb = next_block(0, n_blocks, idx_row, p.topk, s_slots);
  if (kb < n_blocks) gather_keys<Dqk>(s_k, s_slots, kv, p.kv_t, p.dqk);
  dev::cp_async_commit();
  dev::cp_async_wait<0>();
  __syncthreads();

  // dQ: rows 16 wm + g (+8); n8 tile n holds columns 32 (n / 2) + 16 wn + 8 (n % 2) + c (+1), so
  // the two warps of a row slab take alternate 16-column groups.
  float dq[Dqk / 16][4];
#pragma unroll
  for (int n = 0; n < Dqk / 16; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;

  while (kb < n_blocks) {
    const int32_t* slots = s_slots + buf * kKeys;

    // ---- S = Q K^T and dP = dO V^T: this warp's 16 heads x 32 keys of each.
    float s[4][4], dp[4][4];
#pragma unroll
    for (int n = 0; n < 4; ++n) {
#pragma unroll
      for (int i = 0; i < 4; ++i) s[n][i] = dp[n][i] = 0.0f;
    }
    // Channels 64 k8 + 16 kl.. (chunks 8 k8 + 2 kl, +1): the latent ones feed S and dP, the
    // rest (RoPE) S only. The k8 loop stays rolled to bound what the compiler keeps live.
#pragma unroll 1
    for (int k8 = 0; k8 < Dqk / 64; ++k8) {
#pragma unroll
      for (int kl = 0; kl < 4; ++kl) {
        uint32_t b[2][4]; // keys 32 wn + 16 j..: two n8 tiles each
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          dev::ldmatrix_x4(b[j], chunk_at(b_k + 16 * j * kQkChunks * 16, k8, 2 * kl + mid, sw));
        }
        uint32_t a[4];
        dev::ldmatrix_x4(a, chunk_at(a_q, k8, 2 * kl + hi, sw));
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          dev::mma_bf16(s[2 * j], a, b[j][0], b[j][1]);
          dev::mma_bf16(s[2 * j + 1], a, b[j][2], b[j][3]);
        }
        if (k8 < Lat / 64) {
          dev::ldmatrix_x4(a, chunk_at(a_do, k8, 2 * kl + hi, sw));
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            dev::mma_bf16(dp[2 * j], a, b[j][0], b[j][1]);
            dev::mma_bf16(dp[2 * j + 1], a, b[j][2], b[j][3]);
          }
        }
      }
    }

    // ---- P and dS (float32), rounded to bf16 into their tiles.
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const int key = 32 * wn + 8 * n + c; // and key + 1
      const bool valid0 = slots[key] >= 0, valid1 = slots[key + 1] >= 0;
#pragma unroll
      for (int i = 0; i < 2; ++i) { // fragment row g + 8 i
        const float p0 = valid0 ? dev::fast_exp2(fmaf(s[n][2 * i], scale_log2, -lse2[i])) : 0.0f;
        const float p1 =
            valid1 ? dev::fast_exp2(fmaf(s[n][2 * i + 1], scale_log2, -lse2[i])) : 0.0f;
        const float ds0 = p0 * (dp[n][2 * i] - delta[i]) * p.scale;
        const float ds1 = p1 * (dp[n][2 * i + 1] - delta[i]) * p.scale;
        const uint32_t at = dev::swizzle(16 * wm + g + 8 * i, key / 8, kPChunks) + 2 * (key % 8);
        *reinterpret_cast<uint32_t*>(smem + Smem::kP + at) = dev::pack_bf16(p0, p1);
        *reinterpret_cast<uint32_t*>(smem + Smem::kDs + at) = dev::pack_bf16(ds0, ds1);
      }
    }
    __syncthreads();

    // ---- dQ += dS K: this warp's 16 heads x its Dqk/2 columns, over the 64 keys.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) { // keys 16 kk..
      uint32_t a[4];
      dev::ldmatrix_x4(a, chunk_at(a_dsr, 0, 2 * kk + hi, sw));
      const uint32_t b_row = s_k + (16 * kk + row_t) * kQkChunks * 16;
#pragma unroll
      for (int j = 0; j < Dqk / 32; ++j) { // columns 32 j + 16 wn..: chunks 4 j + 2 wn (+1)
        uint32_t b[4];
        dev::ldmatrix_x4_trans(b, chunk_at(b_row, j / 2, 4 * (j % 2) + 2 * wn + hi, sw));
        dev::mma_bf16(dq[2 * j], a, b[0], b[1]);
        dev::mma_bf16(dq[2 * j + 1], a, b[2], b[3]);
      }
    }

    // ---- The next block's slots; its barrier frees K, so its gather starts now.
    const int next = next_block(kb + 1, n_blocks, idx_row, p.topk, s_slots + (buf ^ 1) * kKeys);
    if (next < n_blocks) gather_keys<Dqk>(s_k, s_slots + (buf ^ 1) * kKeys, kv, p.kv_t, p.dqk);
    dev::cp_async_commit();

    // ---- dK = dS^T Q + P^T dO: this warp's 16 keys (16 wm..) x 32 columns (32 wn..) of each
    // 64-column chunk; A fragments (dS^T, P^T over the 64 heads) loaded once.
    uint32_t a_ds[4][4], a_p[4][4];
#pragma unroll
    for (int kk = 0; kk < kHeads / 16; ++kk) { // heads 16 kk..; keys 16 wm..: chunks 2 wm (+1)
      const uint32_t row = (16 * kk + row_ta) * kPChunks * 16;
      dev::ldmatrix_x4_trans(a_ds[kk], chunk_at(s_ds + row, 0, 2 * wm + mid, sw));
      dev::ldmatrix_x4_trans(a_p[kk], chunk_at(s_p + row, 0, 2 * wm + mid, sw));
    }
    const bool odd = lane % 2 == 1;
    const int32_t slot = slots[16 * wm + g + (odd ? 8 : 0)]; // the key row this lane adds to
    float* dkv_row = p.dkv + static_cast<int64_t>(slot < 0 ? 0 : slot) * p.dqk;
#pragma unroll 1
    for (int cc = 0; cc < Dqk / 64; ++cc) { // columns 64 cc..: chunks 8 cc + 4 wn + 2 j (+1)
      float acc[4][4];
#pragma unroll
      for (int n = 0; n < 4; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kHeads / 16; ++kk) {
        const uint32_t b_q = s_q + (16 * kk + row_t) * kQkChunks * 16;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          uint32_t b[4];
          dev::ldmatrix_x4_trans(b, chunk_at(b_q, cc, 4 * wn + 2 * j + hi, sw));
          dev::mma_bf16(acc[2 * j], a_ds[kk], b[0], b[1]);
          dev::mma_bf16(acc[2 * j + 1], a_ds[kk], b[2], b[3]);
        }
        if (64 * cc < Lat) {
          const uint32_t b_do = s_do + (16 * kk + row_t) * kLatChunks * 16;
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            uint32_t b[4];
            dev::ldmatrix_x4_trans(b, chunk_at(b_do, cc, 4 * wn + 2 * j + hi, sw));
            dev::mma_bf16(acc[2 * j], a_p[kk], b[0], b[1]);
            dev::mma_bf16(acc[2 * j + 1], a_p[kk], b[2], b[3]);
          }
        }
      }
      // Lanes 2i and 2i+1 hold columns c..c+1 and c+2..c+3 of rows g and g + 8: swap halves so
      // that the even lane has row g, the odd lane row g + 8, four columns each.
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        const float send0 = odd ? acc[n][0] : acc[n][2];
        const float send1 = odd ? acc[n][1] : acc[n][3];
        const float got0 = __shfl_xor_sync(0xffffffffu, send0, 1);
        const float got1 = __shfl_xor_sync(0xffffffffu, send1, 1);
        const float4 v = odd ? make_float4(got0, got1, acc[n][2], acc[n][3])
                             : make_float4(acc[n][0], acc[n][1], got0, got1);
        const int col = 64 * cc + 32 * wn + 8 * n + 4 * ((lane / 2) % 2);
        if (slot >= 0 && col < p.dqk) atomicAdd(reinterpret_cast<float4*>(dkv_row + col), v);
      }
    }

    dev::cp_async_wait<0>();
    __syncthreads(); // the next K is visible; P, dS and this block's slots are free
    kb = next;
    buf ^= 1;
  }

  // ---- dq = bf16(dQ): rows past `heads` and columns past dqk are not written.
  auto* dq_out = static_cast<__nv_bfloat16*>(p.dq);
#pragma unroll
  for (int n = 0; n < Dqk / 16; ++n) {
    const int col = 32 * (n / 2) + 16 * wn + 8 * (n % 2) + c;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int h = h0 + 16 * wm + g + 8 * i;
      if (h < p.heads && col < p.dqk) {
        const int64_t at = (static_cast<int64_t>(t) * p.heads + h) * p.dqk + col;
        *reinterpret_cast<uint32_t*>(dq_out + at) = dev::pack_bf16(dq[n][2 * i], dq[n][2 * i + 1]);
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
