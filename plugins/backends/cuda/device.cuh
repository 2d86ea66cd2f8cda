// Device-side building blocks shared by the cuda backend's kernels: asynchronous 16-byte copies
// into shared memory (cp.async, zero-filling), ldmatrix loads, the bf16 m16n8k16 tensor-core MMA
// with float32 accumulators, and the XOR swizzle of shared-memory tiles.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16), with g = lane / 4 and c = 2 * (lane % 4):
//   A (16x16, row): a0 = A[g][c..c+1], a1 = A[g+8][c..c+1], a2 = A[g][c+8..], a3 = A[g+8][c+8..]
//   B (16x8, col):  b0 = B[c..c+1][g], b1 = B[c+8..c+9][g]
//   C (16x8):       c0,c1 = C[g][c..c+1], c2,c3 = C[g+8][c..c+1]
//
// Swizzled tiles: a tile of rows of `pitch` 16-byte chunks (pitch a multiple of 8) stores chunk
// `k` of row `r` at chunk (k ^ (r % 8)) of that row, so the eight rows an ldmatrix phase reads at
// one logical chunk land in eight different bank groups.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace kiln::backends::cuda::dev {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

/// Byte offset of chunk `k` of row `r` in a swizzled tile of `pitch` chunks per row.
__device__ __forceinline__ uint32_t swizzle(int r, int k, int pitch) {
  return static_cast<uint32_t>((r * pitch + (k ^ (r & 7))) * 16);
}

/// 16 bytes global -> shared, bypassing L1; `bytes` < 16 zero-fills the rest (0: all zero, and
/// `src` is not read).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/// d += a * b on the tensor cores: bf16 16x16 by 16x8, float32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// Two floats rounded to bf16 and packed (the first in the low half).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ float fast_exp2(float x) {
  return exp2f(x);
}

} // namespace kiln::backends::cuda::dev

namespace kiln::backends::cuda::dev {

// ---- wgmma (sm_90a) -------------------------------------------------------------------------
// Tiles the tensor cores read through descriptors use the canonical K-major 128-byte-swizzle
// layout: 64-element (128-byte) column blocks of all rows, one after another; in a block, row r
// at r * 128 bytes with its 16-byte chunk k at chunk (k ^ (r % 8)). The tile starts on a 1024-
// byte boundary.

/// Byte offset of chunk `k` (8 bf16 values) of row `r` in such a tile of `rows` rows.
__device__ __forceinline__ uint32_t sw128(int r, int k, int rows) {
  return static_cast<uint32_t>((k >> 3) * rows * 128 + r * 128 + (((k & 7) ^ (r & 7)) << 4));
}

/// Shared-memory matrix descriptor of a K-major, 128-byte-swizzled operand starting at `addr`
/// (8-row groups 1024 bytes apart; the leading offset is unused in this mode).
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
}
/// Orders this thread's generic-proxy shared-memory writes before later tensor-core reads.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/// d (+)= A B^T over k 16 for one warpgroup: A [64, 16] and B [32, 16] K-major in shared memory,
/// d the m64n32 float32 accumulator (per warp w: rows 16 w + lane / 4 (+8), columns
/// 8 i + 2 (lane % 4) (+1), in d[4 i .. 4 i + 3] as an m16n8 C fragment). accumulate = false
/// overwrites d.
__device__ __forceinline__ void wgmma_m64n32k16(float (&d)[16], uint64_t a, uint64_t b,
                                                bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
      "%16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15])
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)));
}

} // namespace kiln::backends::cuda::dev
