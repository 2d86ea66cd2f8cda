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

/// The 8 bf16 of a 16-byte vector as floats (times `scale`), in memory order.
__device__ __forceinline__ void unpack_bf16x8(const uint4& u, float (&v)[8], float scale = 1.f) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = __uint_as_float(w[i] << 16) * scale;
    v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u) * scale;
  }
}

/// 8 floats rounded to bf16, as one 16-byte vector in memory order.
__device__ __forceinline__ uint4 pack_bf16x8(const float (&v)[8]) {
  return make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]),
                    pack_bf16(v[6], v[7]));
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

/// The descriptor of the operand `bytes` (a multiple of 16) past desc's start: one 32-bit add,
/// as the address field (16-byte units, low 14 bits) cannot carry out for shared memory.
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) {
  return (desc & 0xFFFFFFFF00000000ull) | (static_cast<uint32_t>(desc) + (bytes >> 4));
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
/// Pins the registers r for the front end: no read of them moves above this point (accumulators
/// of an asynchronous wgmma: fence them after the wgmma_wait that retires it). Emits no
/// instruction, so ptxas may still schedule around it (it does not keep arithmetic between two
/// wgmma waits there: indexer_topk.cu).
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
/// x through a move ptxas cannot see through: a copy of a retired wgmma accumulator register
/// that a later loop iteration may read without ptxas injecting a wgmma wait before the read
/// (it tracks wgmma results within one iteration only).
__device__ __forceinline__ float opaque_copy(float x) {
  float y;
  asm volatile("mov.b32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
/// setmaxnreg: this warpgroup's registers per thread become N (a multiple of 8 in 24..256),
/// released to or taken from the CTA's pool (inc waits until the pool has them). Every warp of
/// the warpgroup runs it. Warp-specialized kernels give their MMA warps the registers that
/// their other warps do not need.
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
/// bar.sync id, threads: waits at named barrier `id` (1..15; 0 is __syncthreads') until `threads`
/// threads (a multiple of 32) have arrived there, by bar.sync or bar.arrive; the arrivals'
/// earlier memory accesses are then visible to the waiting threads.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
/// bar.arrive id, threads: arrives at named barrier `id` without waiting (a producer's signal).
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
/// Orders this thread's generic-proxy shared-memory writes before later tensor-core reads.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

/// mbarriers (8 bytes of shared memory each, 8-byte aligned): a phase completes when `count`
/// arrivals have come and every byte that arrivals announced (expect_tx) has landed; waiters
/// name the phase by its parity (0 for the first). Initialize once, by one thread, and make the
/// initialization visible (fence_mbarrier_init, then a CTA barrier) before any other use.
__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
/// One arrival that also announces `bytes` more to land in this phase (a TMA's complete_tx).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar),
               "r"(bytes)
               : "memory");
}
/// Waits until the phase of parity `parity` has completed; what its arrivals wrote (and the
/// bytes its TMA copies landed) is then visible to this thread, the tensor cores' reads included.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  }
}
/// TMA: the box at (x, y) (elements of dimension 0, rows of dimension 1) of the 2D tensor map
/// `map` (a __grid_constant__ kernel parameter) into shared memory at `dst` (aligned to the
/// map's swizzle pattern: 1024 bytes for 128-byte swizzle), zero where the box leaves the
/// tensor; its bytes count toward the phase of mbarrier `bar` (announced by expect_tx).
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void* map, int x, int y,
                                            uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(map), "r"(x), "r"(y), "r"(bar)
      : "memory");
}
/// atomicAdd on a shared-memory word with acquire-release order at CTA scope: what this thread
/// did before (a wgmma_wait's retirement of reads included) happens before what a thread that
/// later adds does after; returns the old value.
__device__ __forceinline__ uint32_t atomic_add_acq_rel(uint32_t addr, uint32_t value) {
  uint32_t old;
  asm volatile("atom.acq_rel.cta.shared::cta.add.u32 %0, [%1], %2;\n"
               : "=r"(old)
               : "r"(addr), "r"(value)
               : "memory");
  return old;
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

namespace kiln::backends::cuda::dev {

/// Shared-memory matrix descriptor of an MN-major, 128-byte-swizzled B operand starting at
/// `addr`: 64-element (128-byte) MN atoms `atom_stride` bytes apart (the leading offset), 8-row
/// K groups 1024 bytes apart (the stride offset); PTX ISA, canonical layout
/// ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)).
__device__ __forceinline__ uint64_t sw128_desc_mn(uint32_t addr, uint32_t atom_stride) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) |
         (static_cast<uint64_t>((atom_stride & 0x3FFFF) >> 4) << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}

template <int N>
__device__ __forceinline__ void wgmma_m64k16_bt(float (&d)[N / 2], uint64_t a, uint64_t b,
                                                bool accumulate);

/// d (+)= A B over k 16 for one warpgroup: A [64, 16] K-major and B [16, 32] MN-major (tnspB) in
/// shared memory, d the m64n32 float32 accumulator (layout as wgmma_m64n32k16's).
template <>
__device__ __forceinline__ void wgmma_m64k16_bt<32>(float (&d)[16], uint64_t a, uint64_t b,
                                                    bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
      "%16, %17, p, 1, 1, 0, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15])
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)));
}

/// m64n64k16 with B MN-major (tnspB) and A K-major (kTnspA = 0) or MN-major (1); see the two
/// wrappers below.
template <int kTnspA>
__device__ __forceinline__ void wgmma_m64n64k16_mn(float (&d)[32], uint64_t a, uint64_t b,
                                                   bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, %35, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)), "n"(kTnspA));
}

/// d (+)= A B over k 16 for one warpgroup: A [64, 16] K-major and B [16, 64] MN-major (tnspB) in
/// shared memory, d the m64n64 float32 accumulator (layout as wgmma_m64n32k16's).
template <>
__device__ __forceinline__ void wgmma_m64k16_bt<64>(float (&d)[32], uint64_t a, uint64_t b,
                                                    bool accumulate) {
  wgmma_m64n64k16_mn<0>(d, a, b, accumulate);
}

/// d (+)= A B over k 16 for one warpgroup with both operands MN-major (tnspA, tnspB) in shared
/// memory: A [64, 16] stored as 16 rows of its 64 M elements (sw128_desc_mn), B [16, 64] likewise;
/// d the m64n64 float32 accumulator (layout as wgmma_m64n32k16's).
template <int N>
__device__ __forceinline__ void wgmma_m64k16_tt(float (&d)[N / 2], uint64_t a, uint64_t b,
                                                bool accumulate);
template <>
__device__ __forceinline__ void wgmma_m64k16_tt<64>(float (&d)[32], uint64_t a, uint64_t b,
                                                    bool accumulate) {
  wgmma_m64n64k16_mn<1>(d, a, b, accumulate);
}

/// d (+)= A B^T over k 16 for one warpgroup with A [64, 16] in registers: warp w of the
/// warpgroup holds rows 16 w .. 16 w + 15 as an m16n8k16 A fragment (lane l: a[0] = row 16 w + l /
/// 4, k 2 (l % 4) and + 1; a[1] = that row + 8; a[2], a[3] = the same rows at k + 8); B [64, 16]
/// K-major in shared memory (sw128_desc); d the m64n64 float32 accumulator (layout as
/// wgmma_m64n32k16's). The registers of `a` must stay unchanged until the wgmma_wait that retires
/// it.
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4],
                                                   uint64_t b, bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<int>(accumulate)));
}

/// d (+)= A B over k 16 for one warpgroup: A [64, 16] K-major and B [16, 256] MN-major (tnspB) in
/// shared memory, d the m64n256 float32 accumulator (layout as wgmma_m64n32k16's).
template <>
__device__ __forceinline__ void wgmma_m64k16_bt<256>(float (&d)[128], uint64_t a, uint64_t b,
                                                     bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "
      "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, "
      "%74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, "
      "%92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, "
      "%108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, "
      "%123, %124, %125, %126, %127}, "
      "%128, %129, p, 1, 1, 0, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]),
        "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]),
        "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]),
        "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]),
        "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]),
        "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]),
        "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]),
        "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]),
        "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)));
}

} // namespace kiln::backends::cuda::dev
