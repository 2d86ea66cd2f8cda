// The data movement of `moe_experts` around its grouped GEMMs (launch.h states the math): the
// weighted sum of each token's expert outputs (forward), its gradient (backward), and the
// gradient of the gather of x's rows. Memory-bound; each replaces float32 passes of the
// reference: forward y * w as a float32 [N k, H] copy, a zero-filled [N k, H] float32 buffer, an
// index_copy into it, a sum over k and a cast (~17 GB at GLM-5's N 16384, k 8, H 6144); backward
// the float32 gradient expanded to [N k, H], its index_select, a product and a cast (~25 GB), and
// index_select's backward, an atomic bf16 index_add of [N k, H] rows. Here: one read of the rows
// and one write of the output each, sums in float32 registers, rounded once.
//
// One CTA per output row, its threads striding the row in 16-byte vectors (8 bf16; H a multiple
// of 8). The weight gradient of a row is a dot product over H: warp shuffles, then one
// shared-memory slot per warp.
#include "device.cuh"
#include "launch.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

namespace kiln::backends::cuda {
namespace {

constexpr int kMaxThreads = 256;

// out[n] = sum over the valid slots s of weights[n k + s] rows[pos[n k + s]].
__global__ void __launch_bounds__(kMaxThreads) combine_kernel(const MoeCombineParams p) {
  const int64_t n = blockIdx.x;
  const int nvec = p.hidden / 8;
  const int32_t* pos = p.pos + n * p.k;
  auto* out = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(p.out) + n * p.hidden);
  for (int v = threadIdx.x; v < nvec; v += blockDim.x) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int s = 0; s < p.k; ++s) {
      const int32_t row = pos[s];
      if (row < 0) continue;
      const float w = p.weights != nullptr ? p.weights[n * p.k + s] : 1.f;
      const auto* r = reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.rows) +
                                                     row * p.rows_ld);
      float x[8];
      dev::unpack_bf16x8(r[v], x);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] += w * x[i];
    }
    out[v] = dev::pack_bf16x8(acc);
  }
}

// Row r of y belongs to slot slots[r] = n k + s: d_y[r] = bf16(weights[slot] d_out[n]) and
// d_weights[slot] = d_out[n] . y[r].
__global__ void __launch_bounds__(kMaxThreads) combine_bwd_kernel(const MoeCombineBwdParams p) {
  extern __shared__ __align__(16) unsigned char smem[]; // one float per warp
  auto* slots = reinterpret_cast<float*>(smem);
  const int64_t r = blockIdx.x;
  const int64_t slot = p.slots[r];
  const int64_t n = slot / p.k;
  const float w = p.weights[slot];
  const int nvec = p.hidden / 8;
  const auto* g =
      reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.d_out) + n * p.d_out_ld);
  const auto* y =
      reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.y) + r * p.hidden);
  auto* dy = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(p.d_y) + r * p.hidden);
  float dot = 0.f;
  for (int v = threadIdx.x; v < nvec; v += blockDim.x) {
    float gv[8], yv[8], out[8];
    dev::unpack_bf16x8(g[v], gv);
    dev::unpack_bf16x8(y[v], yv);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      dot += gv[i] * yv[i];
      out[i] = w * gv[i];
    }
    dy[v] = dev::pack_bf16x8(out);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
  if (threadIdx.x % 32 == 0) slots[threadIdx.x / 32] = dot;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int i = 1; i < static_cast<int>(blockDim.x / 32); ++i) dot += slots[i];
  p.d_weights[slot] = dot;
}

int threads_for(int hidden) {
  const int vectors = hidden / 8;
  return std::min(kMaxThreads, std::max(32, (vectors + 31) / 32 * 32));
}

} // namespace

cudaError_t launch_moe_combine(const MoeCombineParams& p, cudaStream_t stream) {
  if (p.hidden <= 0 || p.hidden % 8 != 0 || p.tokens > INT32_MAX) return cudaErrorInvalidValue;
  if (p.tokens <= 0) return cudaSuccess;
  combine_kernel<<<static_cast<unsigned>(p.tokens), threads_for(p.hidden), 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t launch_moe_combine_bwd(const MoeCombineBwdParams& p, cudaStream_t stream) {
  if (p.hidden <= 0 || p.hidden % 8 != 0 || p.rows > INT32_MAX) return cudaErrorInvalidValue;
  if (p.rows <= 0) return cudaSuccess;
  const int threads = threads_for(p.hidden);
  combine_bwd_kernel<<<static_cast<unsigned>(p.rows), threads, sizeof(float) * (threads / 32),
                       stream>>>(p);
  return cudaGetLastError();
}

} // namespace kiln::backends::cuda
