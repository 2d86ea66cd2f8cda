// `rms_norm` forward and backward (launch.h states the math), bf16, memory-bound: one read of x and
// one write of y in forward; one read of x and dy and one write of dx in backward, plus a float32
// [ctas, D] buffer of per-CTA weight-gradient sums and its column reduction. The reference's
// autograd graph makes ~10 float32 passes over x in each direction.
//
// Work split: a CTA owns whole rows, one at a time (rows blockIdx.x, + gridDim.x, ...); its
// threads hold the row in registers, at most kMaxVec 16-byte vectors (8 bf16) each, thread t
// owning vectors t, t + threads, ... (coalesced), so a row of D elements needs D / (8 kMaxVec)
// threads, rounded up to whole warps (D 6144: 192 threads). A row's sum of squares (forward) and
// its dot(dn, n) (backward) meet through warp shuffles and one shared-memory slot per warp. The
// weight gradient of a CTA's rows adds up in the registers of the threads that own its columns,
// then goes to the CTA's row of the partial buffer; a second kernel adds the buffer's columns.
#include "device.cuh"
#include "launch.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

namespace kiln::backends::cuda {
namespace {

constexpr int kMaxVec = 4; // 16-byte vectors per thread and row
constexpr int kMaxThreads = 256;
constexpr size_t kSlotBytes = sizeof(float) * (kMaxThreads / 32); // cta_sum's dynamic smem

__device__ __forceinline__ float round_bf16(float f) {
  return __bfloat162float(__float2bfloat16_rn(f));
}

// The sum of `v` over the CTA; `slots` holds one float per warp. Every thread gets the sum.
__device__ __forceinline__ float cta_sum(float v, float* slots) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warps = blockDim.x / 32;
  if (threadIdx.x % 32 == 0) slots[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += slots[w];
  __syncthreads(); // the slots are free for the next row
  return total;
}

__global__ void __launch_bounds__(kMaxThreads) rms_norm_fwd_kernel(const RmsNormParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  auto* slots = reinterpret_cast<float*>(smem); // one per warp
  const int nvec = p.dim / 8;
  const auto* w = reinterpret_cast<const uint4*>(p.weight);
  float weight[kMaxVec][8];
#pragma unroll
  for (int j = 0; j < kMaxVec; ++j) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v < nvec) dev::unpack_bf16x8(w[v], weight[j]);
  }
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const auto* x =
        reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.x) + row * p.x_row);
    float vals[kMaxVec][8];
    float squares = 0.f;
#pragma unroll
    for (int j = 0; j < kMaxVec; ++j) {
      const int v = threadIdx.x + j * blockDim.x;
      if (v >= nvec) continue;
      dev::unpack_bf16x8(x[v], vals[j]);
#pragma unroll
      for (int i = 0; i < 8; ++i) squares += vals[j][i] * vals[j][i];
    }
    const float rstd = rsqrtf(cta_sum(squares, slots) / p.dim + p.eps);
    if (threadIdx.x == 0 && p.rstd != nullptr) p.rstd[row] = rstd;
    auto* y = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(p.y) + row * p.dim);
#pragma unroll
    for (int j = 0; j < kMaxVec; ++j) {
      const int v = threadIdx.x + j * blockDim.x;
      if (v >= nvec) continue;
      float out[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) out[i] = round_bf16(vals[j][i] * rstd) * weight[j][i];
      y[v] = dev::pack_bf16x8(out);
    }
  }
}

__global__ void __launch_bounds__(kMaxThreads) rms_norm_bwd_kernel(const RmsNormParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  auto* slots = reinterpret_cast<float*>(smem); // one per warp
  const int nvec = p.dim / 8;
  const auto* w = reinterpret_cast<const uint4*>(p.weight);
  float weight[kMaxVec][8], d_weight[kMaxVec][8];
#pragma unroll
  for (int j = 0; j < kMaxVec; ++j) {
    const int v = threadIdx.x + j * blockDim.x;
#pragma unroll
    for (int i = 0; i < 8; ++i) d_weight[j][i] = 0.f;
    if (v < nvec) dev::unpack_bf16x8(w[v], weight[j]);
  }
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const auto* x =
        reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.x) + row * p.x_row);
    const auto* dy =
        reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.dy) + row * p.dy_row);
    const float rstd = p.rstd[row];
    float n[kMaxVec][8], dn[kMaxVec][8];
    float dot = 0.f;
#pragma unroll
    for (int j = 0; j < kMaxVec; ++j) {
      const int v = threadIdx.x + j * blockDim.x;
      if (v >= nvec) continue;
      float g[8];
      dev::unpack_bf16x8(x[v], n[j]);
      dev::unpack_bf16x8(dy[v], g);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        n[j][i] *= rstd;
        d_weight[j][i] += g[i] * round_bf16(n[j][i]); // y = bf16(n) * weight
        dn[j][i] = g[i] * weight[j][i];
        dot += dn[j][i] * n[j][i];
      }
    }
    const float mean_dot = cta_sum(dot, slots) / p.dim;
    auto* dx = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(p.dx) + row * p.dim);
#pragma unroll
    for (int j = 0; j < kMaxVec; ++j) {
      const int v = threadIdx.x + j * blockDim.x;
      if (v >= nvec) continue;
      float out[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) out[i] = rstd * (dn[j][i] - n[j][i] * mean_dot);
      dx[v] = dev::pack_bf16x8(out);
    }
  }
  float* partial = p.d_weight_partial + static_cast<int64_t>(blockIdx.x) * p.dim;
#pragma unroll
  for (int j = 0; j < kMaxVec; ++j) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v >= nvec) continue;
#pragma unroll
    for (int i = 0; i < 8; ++i) partial[8 * v + i] = d_weight[j][i];
  }
}

// d_weight[c] = sum over the partial rows of column c, rounded to bf16.
__global__ void rms_norm_dweight_kernel(const RmsNormParams p, int partial_rows) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= p.dim) return;
  float sum = 0.f;
  for (int r = 0; r < partial_rows; ++r)
    sum += p.d_weight_partial[static_cast<int64_t>(r) * p.dim + c];
  static_cast<__nv_bfloat16*>(p.d_weight)[c] = __float2bfloat16_rn(sum);
}

// Threads per CTA: whole warps covering a row with kMaxVec vectors each.
int threads_for(int dim) {
  const int vectors = dim / 8;
  const int threads = (vectors + kMaxVec - 1) / kMaxVec;
  return std::max(32, (threads + 31) / 32 * 32);
}

// CTAs of `kernel` at `threads` that the device holds at once.
template <class Kernel>
int resident_ctas(Kernel kernel, int threads) {
  int device = 0, sms = 0, per_sm = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, kSlotBytes);
  return std::max(1, sms) * std::max(1, per_sm);
}

} // namespace

bool rms_norm_supported(int64_t dim) {
  return dim > 0 && dim % 8 == 0 && dim <= int64_t{8} * kMaxVec * kMaxThreads;
}

int rms_norm_bwd_ctas(const RmsNormParams& p) {
  if (p.rows <= 0) return 0;
  return static_cast<int>(
      std::min<int64_t>(p.rows, resident_ctas(rms_norm_bwd_kernel, threads_for(p.dim))));
}

cudaError_t launch_rms_norm_fwd(const RmsNormParams& p, cudaStream_t stream) {
  if (!rms_norm_supported(p.dim)) return cudaErrorInvalidValue;
  if (p.rows <= 0) return cudaSuccess;
  const int threads = threads_for(p.dim);
  const auto ctas = static_cast<unsigned>(
      std::min<int64_t>(p.rows, 4 * resident_ctas(rms_norm_fwd_kernel, threads)));
  rms_norm_fwd_kernel<<<ctas, threads, kSlotBytes, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_rms_norm_bwd(const RmsNormParams& p, cudaStream_t stream) {
  if (!rms_norm_supported(p.dim) || p.partial_rows < 0 || (p.rows > 0) != (p.partial_rows > 0)) {
    return cudaErrorInvalidValue;
  }
  const int ctas = p.partial_rows; // no rows: none, and d_weight is zeros
  if (ctas > 0) rms_norm_bwd_kernel<<<ctas, threads_for(p.dim), kSlotBytes, stream>>>(p);
  rms_norm_dweight_kernel<<<(p.dim + 255) / 256, 256, 0, stream>>>(p, ctas);
  return cudaGetLastError();
}

} // namespace kiln::backends::cuda
