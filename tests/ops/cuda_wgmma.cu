// The kernels of cuda_wgmma.h: one warpgroup (128 threads) per case stores A and B into shared
// memory in the case's layouts, runs k / 16 wgmma steps with the descriptors advanced as the
// cuda backend's kernels advance them (K-major: one 16-byte chunk pair along the row, the next
// 64-column block after four; MN-major: 16 rows of 128 bytes), and writes the accumulator out.
#include "cuda_wgmma.h"
#include "device.cuh"

#include <cuda_runtime.h>

namespace kiln::backends::cuda {
namespace {

constexpr int kThreads = 128;

struct Params {
  const uint16_t* a;
  const uint16_t* b;
  float* c;
  int k, b_width, col0;
};

template <int N, bool kAMn, bool kBMn>
__device__ __forceinline__ void product(float (&d)[N / 2], uint64_t a, uint64_t b, bool acc) {
  if constexpr (kAMn) {
    dev::wgmma_m64k16_tt<N>(d, a, b, acc);
  } else if constexpr (kBMn) {
    dev::wgmma_m64k16_bt<N>(d, a, b, acc);
  } else {
    dev::wgmma_m64n32k16(d, a, b, acc);
  }
}

template <int N, bool kAMn, bool kBMn, bool kARegs>
__global__ void __launch_bounds__(kThreads) wgmma_case_kernel(const Params p) {
  extern __shared__ __align__(128) unsigned char smem[];
  // The swizzle pattern is anchored at 1024-byte boundaries.
  unsigned char* const tile = smem + (1024 - dev::smem_addr(smem) % 1024) % 1024;
  const uint32_t a_base = dev::smem_addr(tile);
  const uint32_t b_base = a_base + 64 * p.k * 2;
  const int t = threadIdx.x;
  // A [64, k]: K-major rows of A, or MN-major rows of A^T (k rows of 64); none in registers.
  for (int e = t; e < (kARegs ? 0 : 64 * p.k); e += kThreads) {
    const int m = e / p.k, kk = e % p.k;
    const uint32_t at =
        kAMn ? dev::sw128(kk, m / 8, p.k) + (m % 8) * 2 : dev::sw128(m, kk / 8, 64) + (kk % 8) * 2;
    *reinterpret_cast<uint16_t*>(tile + at) = p.a[e];
  }
  // B [k, b_width]: MN-major (k rows of b_width), or K-major rows of B^T (b_width rows of k).
  for (int e = t; e < p.k * p.b_width; e += kThreads) {
    const int kk = e / p.b_width, n = e % p.b_width;
    const uint32_t at = kBMn ? dev::sw128(kk, n / 8, p.k) + (n % 8) * 2
                             : dev::sw128(n, kk / 8, p.b_width) + (kk % 8) * 2;
    *reinterpret_cast<uint16_t*>(tile + 64 * p.k * 2 + at) = p.b[e];
  }
  dev::fence_proxy_async();
  __syncthreads();

  float d[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) d[i] = 0.f;
  dev::wgmma_fence();
  const int w = t / 32, l = t % 32;
  if constexpr (kARegs) {
    // Each step's fragment from global memory; waited for before the registers are reused.
    const auto pair = [&](int row, int col) {
      return static_cast<uint32_t>(p.a[row * p.k + col]) |
             static_cast<uint32_t>(p.a[row * p.k + col + 1]) << 16;
    };
    const int row = 16 * w + l / 4, col = 2 * (l % 4);
    for (int s = 0; s < p.k / 16; ++s) {
      const uint32_t a[4] = {pair(row, 16 * s + col), pair(row + 8, 16 * s + col),
                             pair(row, 16 * s + 8 + col), pair(row + 8, 16 * s + 8 + col)};
      dev::wgmma_fence();
      dev::wgmma_m64n64k16_rs(d, a, dev::sw128_desc(b_base + dev::sw128(p.col0, 2 * s, p.b_width)),
                              s > 0);
      dev::wgmma_commit();
      dev::wgmma_wait<0>();
    }
  } else {
    for (int s = 0; s < p.k / 16; ++s) {
      const uint64_t a = kAMn ? dev::sw128_desc_mn(a_base + 16 * s * 128, p.k * 128)
                              : dev::sw128_desc(a_base + dev::sw128(0, 2 * s, 64));
      const uint64_t b =
          kBMn ? dev::sw128_desc_mn(b_base + dev::sw128(16 * s, p.col0 / 8, p.k), p.k * 128)
               : dev::sw128_desc(b_base + dev::sw128(p.col0, 2 * s, p.b_width));
      product<N, kAMn, kBMn>(d, a, b, s > 0);
    }
    dev::wgmma_commit();
    dev::wgmma_wait<0>();
  }

  // Warp w, lane l, register i: row 16 w + l / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (l % 4)
  // + i % 2.
#pragma unroll
  for (int i = 0; i < N / 2; ++i) {
    const int row = 16 * w + l / 4 + 8 * ((i / 2) % 2);
    const int col = 8 * (i / 4) + 2 * (l % 4) + i % 2;
    p.c[row * N + col] = d[i];
  }
}

template <int N, bool kAMn, bool kBMn, bool kARegs = false>
cudaError_t launch(const Params& p, cudaStream_t stream) {
  auto* kernel = &wgmma_case_kernel<N, kAMn, kBMn, kARegs>;
  const int bytes = 64 * p.k * 2 + p.k * p.b_width * 2 + 1024;
  const cudaError_t configured =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (configured != cudaSuccess) return configured;
  kernel<<<1, kThreads, bytes, stream>>>(p);
  return cudaGetLastError();
}

} // namespace

int launch_wgmma_case(int which, const uint16_t* a, const uint16_t* b, float* c, void* stream) {
  if (which < 0 || which >= kWgmmaCaseCount) return cudaErrorInvalidValue;
  const WgmmaCase& w = kWgmmaCases[which];
  const Params p{a, b, c, w.k, w.b_width, w.col0};
  const auto s = static_cast<cudaStream_t>(stream);
  cudaError_t status = cudaErrorInvalidValue;
  if (w.a_regs) {
    if (w.n == 64 && !w.b_mn) status = launch<64, false, false, true>(p, s);
  } else if (w.n == 32 && !w.a_mn && !w.b_mn) {
    status = launch<32, false, false>(p, s);
  } else if (w.n == 64 && !w.a_mn && w.b_mn) {
    status = launch<64, false, true>(p, s);
  } else if (w.n == 256 && !w.a_mn && w.b_mn) {
    status = launch<256, false, true>(p, s);
  } else if (w.n == 64 && w.a_mn && w.b_mn) {
    status = launch<64, true, true>(p, s);
  }
  return static_cast<int>(status);
}

} // namespace kiln::backends::cuda
