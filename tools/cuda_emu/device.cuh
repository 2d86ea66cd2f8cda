// CPU emulation of plugins/backends/cuda/device.cuh, for running a kernel's own source on a
// machine without a GPU (tools/cuda_emu/run). One std::thread per CUDA thread, one CTA at a time;
// __syncthreads and warp collectives (ldmatrix, mma, shfl) meet at std::barriers, and follow the
// PTX ISA's fragment layouts, not the real device.cuh's code. What it checks: index math, tile
// layouts and swizzles, fragment mappings, barrier structure (a divergent barrier hangs), shared
// and global bounds it can see. What it cannot: timing and asynchrony (cp.async copies at once,
// so reading a tile before its wait goes unnoticed), bank conflicts, registers, the PTX strings,
// launch limits; mma sums in a different order than the tensor cores.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#define __launch_bounds__(...)

struct EmuDim {
  unsigned x = 0, y = 0, z = 0;
};
inline thread_local EmuDim threadIdx;
inline EmuDim blockIdx;
inline EmuDim blockDim;
inline std::barrier<>* emu_block_bar = nullptr;
inline std::barrier<>* emu_warp_bar[32];
inline std::atomic<int> emu_or[2];
inline thread_local int emu_or_phase = 0;
inline uint32_t emu_warp_u[32][32][8];
inline float emu_warp_f[32][32];
inline std::mutex emu_atomic_mutex;

inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float __int_as_float(int u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline void __syncthreads() {
  emu_block_bar->arrive_and_wait();
}
inline int __syncthreads_or(int pred) {
  const int ph = emu_or_phase;
  emu_or_phase ^= 1;
  if (pred) emu_or[ph] = 1;
  emu_block_bar->arrive_and_wait();
  const int r = emu_or[ph].load();
  emu_block_bar->arrive_and_wait();
  if (threadIdx.x == 0) emu_or[ph] = 0;
  return r;
}
inline float __shfl_xor_sync(unsigned, float v, int m) {
  const int w = threadIdx.x / 32, l = threadIdx.x % 32;
  emu_warp_f[w][l] = v;
  emu_warp_bar[w]->arrive_and_wait();
  const float r = emu_warp_f[w][l ^ m];
  emu_warp_bar[w]->arrive_and_wait();
  return r;
}
inline int __any_sync(unsigned, int pred) {
  const int w = threadIdx.x / 32, l = threadIdx.x % 32;
  emu_warp_u[w][l][0] = pred != 0;
  emu_warp_bar[w]->arrive_and_wait();
  int any = 0;
  for (int t = 0; t < 32; ++t) any |= static_cast<int>(emu_warp_u[w][t][0]);
  emu_warp_bar[w]->arrive_and_wait();
  return any;
}
inline int __ffs(unsigned v) {
  return __builtin_ffs(static_cast<int>(v));
}
inline unsigned atomicOr(unsigned* p, unsigned v) {
  std::lock_guard<std::mutex> lock(emu_atomic_mutex);
  const unsigned old = *p;
  *p |= v;
  return old;
}
inline float4 atomicAdd(float4* p, float4 v) {
  std::lock_guard<std::mutex> lock(emu_atomic_mutex);
  const float4 old = *p;
  p->x += v.x;
  p->y += v.y;
  p->z += v.z;
  p->w += v.w;
  return old;
}

namespace kiln::backends::cuda {
namespace {
constexpr int kEmuSmemBytes = 232448;
alignas(128) unsigned char smem[kEmuSmemBytes];
} // namespace
} // namespace kiln::backends::cuda

namespace kiln::backends::cuda::dev {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(static_cast<const unsigned char*>(p) - smem);
}
/// (copied verbatim from the real device.cuh)
__device__ __forceinline__ uint32_t swizzle(int r, int k, int pitch) {
  return static_cast<uint32_t>((r * pitch + (k ^ (r & 7))) * 16);
}
inline void emu_check(uint32_t addr, int bytes) {
  if (addr % 16 != 0 && bytes == 16) {
    fprintf(stderr, "misaligned smem 16B access %u\n", addr);
    abort();
  }
  if (addr + bytes > (uint32_t)kEmuSmemBytes) {
    fprintf(stderr, "smem out of range %u\n", addr);
    abort();
  }
}
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int bytes) {
  emu_check(dst, 16);
  if (bytes > 0) std::memcpy(smem + dst, src, bytes);
  std::memset(smem + dst + bytes, 0, 16 - bytes);
}
__device__ __forceinline__ void cp_async_commit() {}
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {}

inline uint16_t emu_half(uint32_t row_addr, int col) {
  uint16_t v;
  std::memcpy(&v, smem + row_addr + 2 * col, 2);
  return v;
}
// PTX ldmatrix .m8n8 .x4 .b16: lanes 8i..8i+7 give the row addresses of matrix i; thread t gets
// row t/4, elements 2(t%4), 2(t%4)+1 of each matrix (transposed: element [2(t%4)+e][t/4]).
template <bool Trans>
inline void emu_ldmatrix(uint32_t (&r)[4], uint32_t addr) {
  const int w = threadIdx.x / 32, l = threadIdx.x % 32;
  emu_check(addr, 16);
  emu_warp_u[w][l][0] = addr;
  emu_warp_bar[w]->arrive_and_wait();
  for (int i = 0; i < 4; ++i) {
    uint16_t e0, e1;
    if (!Trans) {
      const uint32_t row = emu_warp_u[w][8 * i + l / 4][0];
      e0 = emu_half(row, 2 * (l % 4));
      e1 = emu_half(row, 2 * (l % 4) + 1);
    } else {
      e0 = emu_half(emu_warp_u[w][8 * i + 2 * (l % 4)][0], l / 4);
      e1 = emu_half(emu_warp_u[w][8 * i + 2 * (l % 4) + 1][0], l / 4);
    }
    r[i] = static_cast<uint32_t>(e0) | (static_cast<uint32_t>(e1) << 16);
  }
  emu_warp_bar[w]->arrive_and_wait();
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  emu_ldmatrix<false>(r, addr);
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  emu_ldmatrix<true>(r, addr);
}

inline float emu_bf(uint32_t word, int hi) {
  return __uint_as_float(hi ? (word & 0xffff0000u) : (word << 16));
}
// PTX mma.m16n8k16 .bf16 fragments, g = lane/4, c = 2(lane%4):
// A: a0 = A[g][c..c+1], a1 = A[g+8][c..], a2 = A[g][c+8..], a3 = A[g+8][c+8..]
// B: b0 = B[c..c+1][g], b1 = B[c+8..c+9][g];  C: c0,c1 = C[g][c..c+1], c2,c3 = C[g+8][c..c+1]
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  const int w = threadIdx.x / 32, l = threadIdx.x % 32;
  for (int i = 0; i < 4; ++i) emu_warp_u[w][l][i] = a[i];
  emu_warp_u[w][l][4] = b0;
  emu_warp_u[w][l][5] = b1;
  emu_warp_bar[w]->arrive_and_wait();
  float A[16][16], B[16][8];
  for (int t = 0; t < 32; ++t) {
    const int g = t / 4, c = 2 * (t % 4);
    const uint32_t* u = emu_warp_u[w][t];
    for (int e = 0; e < 2; ++e) {
      A[g][c + e] = emu_bf(u[0], e);
      A[g + 8][c + e] = emu_bf(u[1], e);
      A[g][c + 8 + e] = emu_bf(u[2], e);
      A[g + 8][c + 8 + e] = emu_bf(u[3], e);
      B[c + e][g] = emu_bf(u[4], e);
      B[c + 8 + e][g] = emu_bf(u[5], e);
    }
  }
  emu_warp_bar[w]->arrive_and_wait();
  const int g = l / 4, c = 2 * (l % 4);
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = c + i % 2;
    float s = 0;
    for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
    d[i] += s;
  }
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}
__device__ __forceinline__ float fast_exp2(float x) {
  return exp2f(x);
}

// ---- wgmma (sm_90a) as the real device.cuh uses it: K-major operands with the 128-byte swizzle
// applied to absolute shared addresses (bits 4-6 ^= bits 7-9), descriptors decoded for the start
// address and the 8-row-group stride (SBO). One call per thread of the warpgroup; each thread
// computes its own accumulator elements (the warpgroup's 4 warps are threadIdx.x / 32 % 4).
/// (copied verbatim from the real device.cuh)
__device__ __forceinline__ uint32_t sw128(int r, int k, int rows) {
  return static_cast<uint32_t>((k >> 3) * rows * 128 + r * 128 + (((k & 7) ^ (r & 7)) << 4));
}
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}
__device__ __forceinline__ void wgmma_fence() {}
__device__ __forceinline__ void wgmma_commit() {}
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {}
__device__ __forceinline__ void fence_proxy_async() {}

inline float emu_sw128_elem(uint64_t desc, int r, int k) {
  if ((desc >> 62) != 1) {
    fprintf(stderr, "wgmma emulation: only the 128-byte swizzle is modelled\n");
    abort();
  }
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
  const uint32_t logical = start + (r / 8) * sbo + (r % 8) * 128 + k * 2;
  const uint32_t physical = logical ^ (((logical >> 7) & 7) << 4);
  emu_check(physical & ~1u, 2);
  uint16_t h;
  std::memcpy(&h, smem + physical, 2);
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}
__device__ __forceinline__ void wgmma_m64n32k16(float (&d)[16], uint64_t a, uint64_t b,
                                                bool accumulate) {
  const int w = (threadIdx.x / 32) % 4, l = threadIdx.x % 32;
  const int g = l / 4, c = 2 * (l % 4);
  for (int i = 0; i < 16; ++i) {
    const int row = 16 * w + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + c + i % 2;
    float s = 0;
    for (int k = 0; k < 16; ++k) s += emu_sw128_elem(a, row, k) * emu_sw128_elem(b, col, k);
    d[i] = accumulate ? d[i] + s : s;
  }
}

__device__ __forceinline__ uint64_t sw128_desc_mn(uint32_t addr, uint32_t atom_stride) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) |
         (static_cast<uint64_t>((atom_stride & 0x3FFFF) >> 4) << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}
// B MN-major, 128-byte swizzle (PTX ISA canonical layout ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO))):
// element (k, n) at start + (n % 64) * 2 + (n / 64) * LBO + (k % 8) * 128 + (k / 8) * SBO.
inline float emu_sw128_mn_elem(uint64_t desc, int k, int n) {
  if ((desc >> 62) != 1) {
    fprintf(stderr, "wgmma emulation: only the 128-byte swizzle is modelled\n");
    abort();
  }
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
  const uint32_t lbo = static_cast<uint32_t>((desc >> 16) & 0x3FFF) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
  const uint32_t logical = start + (n % 64) * 2 + (n / 64) * lbo + (k % 8) * 128 + (k / 8) * sbo;
  const uint32_t physical = logical ^ (((logical >> 7) & 7) << 4);
  emu_check(physical & ~1u, 2);
  uint16_t h;
  std::memcpy(&h, smem + physical, 2);
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}
template <int N>
__device__ __forceinline__ void wgmma_m64k16_bt(float (&d)[N / 2], uint64_t a, uint64_t b,
                                                bool accumulate) {
  const int w = (threadIdx.x / 32) % 4, l = threadIdx.x % 32;
  const int g = l / 4, c = 2 * (l % 4);
  for (int i = 0; i < N / 2; ++i) {
    const int row = 16 * w + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + c + i % 2;
    float s = 0;
    for (int k = 0; k < 16; ++k) s += emu_sw128_elem(a, row, k) * emu_sw128_mn_elem(b, k, col);
    d[i] = accumulate ? d[i] + s : s;
  }
}

} // namespace kiln::backends::cuda::dev

struct EmuCfg {
  unsigned grid;
  int block;
  int smem;
  cudaStream_t stream;
};
template <class T>
inline cudaError_t emu_set_attribute(T, cudaFuncAttribute, int bytes) {
  return bytes <= 232448 ? cudaSuccess : cudaErrorInvalidValue;
}
template <class K, class... Args>
inline void emu_launch(K kernel, EmuCfg cfg, Args... args) {
  std::barrier<> block_bar(cfg.block);
  for (int w = 0; w < cfg.block / 32; ++w) emu_warp_bar[w] = new std::barrier<>(32);
  emu_block_bar = &block_bar;
  blockDim.x = cfg.block;
  for (unsigned b = 0; b < cfg.grid; ++b) {
    blockIdx.x = b;
    std::memset(kiln::backends::cuda::smem, 0xcd, sizeof(kiln::backends::cuda::smem)); // poison
    std::vector<std::thread> threads;
    for (int t = 0; t < cfg.block; ++t) {
      threads.emplace_back([=] {
        threadIdx.x = t;
        emu_or_phase = 0;
        kernel(args...);
      });
    }
    for (auto& th : threads) th.join();
  }
  for (int w = 0; w < cfg.block / 32; ++w) delete emu_warp_bar[w];
}
