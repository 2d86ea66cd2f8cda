// `adamw`: one AdamW update of a parameter in one pass (launch.h states the math). Memory-bound:
// for a bf16 parameter it reads the gradient (2 bytes), the master and both moments (12) and
// writes them back with the parameter (14): 28 bytes per element, where the reference (ATen's
// fused kernel on float32 copies) moves 40: the gradient's float32 copy (6), the fused update on
// float32 (28) and the master's copy back into the bf16 parameter (6).
//
// Work split: thread i of the grid owns 8-element vectors i, i + threads, ... (16-byte loads of
// the bf16 arrays, two per float32 array); the last n % 8 elements go to block 0's first threads.
#include "device.cuh"
#include "launch.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

namespace kiln::backends::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void update(const AdamwParams& p, float g, float& w, float& m,
                                       float& v) {
  if (p.has_divisor) g = g / p.grad_divisor;
  w -= p.lr_wd * w;
  m = p.beta1 * m + (1.f - p.beta1) * g;
  v = p.beta2 * v + (1.f - p.beta2) * g * g;
  const float denom = sqrtf(v) / p.bias_correction2_sqrt + p.eps;
  w -= p.step_size * m / denom;
}

__device__ __forceinline__ void load8(const float* src, float (&dst)[8]) {
  const float4 a = reinterpret_cast<const float4*>(src)[0];
  const float4 b = reinterpret_cast<const float4*>(src)[1];
  dst[0] = a.x, dst[1] = a.y, dst[2] = a.z, dst[3] = a.w;
  dst[4] = b.x, dst[5] = b.y, dst[6] = b.z, dst[7] = b.w;
}

__device__ __forceinline__ void store8(float* dst, const float (&src)[8]) {
  reinterpret_cast<float4*>(dst)[0] = make_float4(src[0], src[1], src[2], src[3]);
  reinterpret_cast<float4*>(dst)[1] = make_float4(src[4], src[5], src[6], src[7]);
}

template <bool kBf16>
__global__ void __launch_bounds__(kThreads) adamw_kernel(const AdamwParams p) {
  const int64_t vectors = p.n / 8;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < vectors; i += stride) {
    const int64_t at = 8 * i;
    float g[8], w[8], m[8], v[8];
    if constexpr (kBf16) {
      dev::unpack_bf16x8(reinterpret_cast<const uint4*>(p.grad)[i], g);
    } else {
      load8(static_cast<const float*>(p.grad) + at, g);
    }
    load8(p.master + at, w);
    load8(p.exp_avg + at, m);
    load8(p.exp_avg_sq + at, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) update(p, g[j], w[j], m[j], v[j]);
    store8(p.master + at, w);
    store8(p.exp_avg + at, m);
    store8(p.exp_avg_sq + at, v);
    if constexpr (kBf16) {
      reinterpret_cast<uint4*>(p.param)[i] = dev::pack_bf16x8(w);
    } else if (p.param != p.master) {
      store8(static_cast<float*>(p.param) + at, w);
    }
  }
  const int64_t tail = vectors * 8 + threadIdx.x;
  if (blockIdx.x == 0 && tail < p.n) {
    float g;
    if constexpr (kBf16) {
      g = __bfloat162float(static_cast<const __nv_bfloat16*>(p.grad)[tail]);
    } else {
      g = static_cast<const float*>(p.grad)[tail];
    }
    float w = p.master[tail], m = p.exp_avg[tail], v = p.exp_avg_sq[tail];
    update(p, g, w, m, v);
    p.master[tail] = w;
    p.exp_avg[tail] = m;
    p.exp_avg_sq[tail] = v;
    if constexpr (kBf16) {
      static_cast<__nv_bfloat16*>(p.param)[tail] = __float2bfloat16_rn(w);
    } else if (p.param != p.master) {
      static_cast<float*>(p.param)[tail] = w;
    }
  }
}

} // namespace

cudaError_t launch_adamw(const AdamwParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  // Enough CTAs to fill the device a few times over; each thread then loops over its vectors.
  const int64_t needed = std::max<int64_t>((p.n / 8 + kThreads - 1) / kThreads, 1);
  const auto ctas =
      static_cast<unsigned>(std::min<int64_t>(needed, int64_t{std::max(sms, 1)} * 16));
  const auto kernel = p.bf16 ? adamw_kernel<true> : adamw_kernel<false>;
  kernel<<<ctas, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

} // namespace kiln::backends::cuda
