// The row kernels of `linear_cross_entropy` (launch.h states the math): the cuBLAS GEMMs of
// linear_cross_entropy.cpp write one chunk of bf16 logits, and these kernels turn it into the
// per-token log-sum-exp and loss (forward) or, in place, into the chunk's bf16 gradient
// (backward). They replace the reference's float32 passes over every logit (a float32 copy,
// logsumexp, and in backward sub, exp, scatter, mul and a cast back): one read of the bf16 logits
// in forward, one read and one write in backward.
//
// One CTA per row. Lanes stride the row in 16-byte vectors (8 bf16) when the columns allow it
// (cols and the row stride multiples of 8, a 16-byte aligned start), element by element
// otherwise. Forward: each thread keeps a running maximum and sum of exp(x - max) in float32
// (base-2, one FFMA and one EX2 per element), merged across the warp by shuffles and across
// warps through shared memory; lse = max + log(sum). Backward needs no reduction: every element
// reads its row's lse, scale and label column.
//
// Memory-bound: at GLM-5's LM head (T 16384, V 154880) a step reads the 5 GB of bf16 logits once
// in forward and reads and writes them once in backward.
#include "device.cuh"
#include "launch.h"

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

namespace kiln::backends::cuda {
namespace {

constexpr int kLseThreads = 512;
constexpr int kGradThreads = 256;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// A running maximum m (base-2 units) and sum s of exp2(y - m) over the values seen.
struct MaxSum {
  float m = -INFINITY;
  float s = 0.f;
};

// Adds values y[0, n) (already times log2(e)). fmaxf skips NaN, the sum does not: a NaN logit
// makes the row's lse NaN.
template <int N>
__device__ __forceinline__ void add_values(MaxSum& acc, const float (&y)[N]) {
  float top = y[0];
#pragma unroll
  for (int i = 1; i < N; ++i) top = fmaxf(top, y[i]);
  if (top > acc.m) {
    acc.s *= exp2f(acc.m - top); // 0 while acc.m is -inf
    acc.m = top;
  }
  const float base = acc.m == -INFINITY ? 0.f : acc.m; // all -inf so far: each term is 0
#pragma unroll
  for (int i = 0; i < N; ++i) acc.s += exp2f(y[i] - base);
}

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, a.s + b.s};
  return {m, a.s * exp2f(a.m - m) + b.s * exp2f(b.m - m)};
}

__device__ __forceinline__ bool vectorized(const CrossEntropyRowsParams& p) {
  return p.cols % 8 == 0 && p.ld % 8 == 0 && reinterpret_cast<uintptr_t>(p.logits) % 16 == 0;
}

__global__ void __launch_bounds__(kLseThreads) lse_kernel(const CrossEntropyRowsParams p) {
  const int64_t row = blockIdx.x;
  const auto* x = static_cast<const __nv_bfloat16*>(p.logits) + row * p.ld;
  MaxSum acc;
  if (vectorized(p)) {
    const auto* v = reinterpret_cast<const uint4*>(x);
    const int n = p.cols / 8;
#pragma unroll 4
    for (int i = threadIdx.x; i < n; i += kLseThreads) {
      float y[8];
      dev::unpack_bf16x8(v[i], y, kLog2e);
      add_values(acc, y);
    }
  } else {
    for (int i = threadIdx.x; i < p.cols; i += kLseThreads) {
      const float y[1] = {__bfloat162float(x[i]) * kLog2e};
      add_values(acc, y);
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, acc.m, offset),
                       __shfl_xor_sync(0xffffffffu, acc.s, offset)};
    acc = merge(acc, other);
  }
  extern __shared__ __align__(16) unsigned char smem[]; // kLseThreads / 32 warps' MaxSum
  auto* warps = reinterpret_cast<MaxSum*>(smem);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warps[warp] = acc;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kLseThreads / 32; ++w) acc = merge(acc, warps[w]);
  // s == 0 only for a row of -inf: lse is -inf, as torch's logsumexp.
  const float lse = acc.s > 0.f ? acc.m * kLn2 + logf(acc.s) : -INFINITY;
  p.lse[row] = lse;
  const int64_t label = p.labels[row];
  float loss = 0.f;
  if (label != p.ignore_index) {
    const int64_t col = label - p.col0;
    loss = col >= 0 && col < p.cols ? lse - __bfloat162float(x[col]) : NAN;
  }
  p.loss[row] = loss;
}

__global__ void __launch_bounds__(kGradThreads) grad_kernel(const CrossEntropyRowsParams p) {
  const int64_t row = blockIdx.x;
  auto* x = static_cast<__nv_bfloat16*>(p.logits) + row * p.ld;
  const float scale = p.row_scale[row];
  const float shift = p.lse[row] * kLog2e;
  const int64_t label = p.labels[row];
  // The label's column in this chunk, or -1 (ignored, or another chunk's).
  const int64_t target_col =
      label != p.ignore_index && label >= p.col0 && label < p.col0 + p.cols ? label - p.col0 : -1;
  const int target = static_cast<int>(target_col);
  if (vectorized(p)) {
    auto* v = reinterpret_cast<uint4*>(x);
    const int n = p.cols / 8;
    if (scale == 0.f) { // an ignored row: zeros, without reading it
      for (int i = threadIdx.x; i < n; i += kGradThreads) v[i] = make_uint4(0, 0, 0, 0);
      return;
    }
#pragma unroll 2
    for (int i = threadIdx.x; i < n; i += kGradThreads) {
      float y[8];
      dev::unpack_bf16x8(v[i], y, kLog2e);
      uint32_t out[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = 8 * i + 2 * j;
        const float g0 = (exp2f(y[2 * j] - shift) - (col == target ? 1.f : 0.f)) * scale;
        const float g1 = (exp2f(y[2 * j + 1] - shift) - (col + 1 == target ? 1.f : 0.f)) * scale;
        out[j] = dev::pack_bf16(g0, g1);
      }
      v[i] = make_uint4(out[0], out[1], out[2], out[3]);
    }
  } else {
    for (int i = threadIdx.x; i < p.cols; i += kGradThreads) {
      const float y = __bfloat162float(x[i]) * kLog2e;
      x[i] = __float2bfloat16_rn((exp2f(y - shift) - (i == target ? 1.f : 0.f)) * scale);
    }
  }
}

} // namespace

cudaError_t launch_cross_entropy_lse(const CrossEntropyRowsParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.rows > INT32_MAX || p.cols <= 0) return cudaErrorInvalidValue;
  constexpr size_t kSmem = sizeof(MaxSum) * (kLseThreads / 32);
  lse_kernel<<<static_cast<unsigned>(p.rows), kLseThreads, kSmem, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_cross_entropy_grad(const CrossEntropyRowsParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.rows > INT32_MAX || p.cols <= 0) return cudaErrorInvalidValue;
  grad_kernel<<<static_cast<unsigned>(p.rows), kGradThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

} // namespace kiln::backends::cuda
