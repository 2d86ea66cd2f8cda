// `rms_norm` on the CPU for float32: one fused pass per row instead of the reference's chain of
// ATen ops (pow, mean, add, rsqrt, mul, mul), each of which reads and writes a full temporary.
//
//   y[r, i] = w[i] * float(x[r, i] * inv_rms[r]),   inv_rms[r] = 1 / sqrt(mean_i(x[r, i]^2) + eps)
//
// Same order as HF and the torch reference: normalise in float32, cast to x's dtype (a no-op
// here), then multiply by the weight. The sum of squares is accumulated in double, so the result
// is within a few float32 ulps of the reference (its float32 sum is pairwise).
// Budget: per row, reads x twice (the second read hits L1/L2 for rows up to ~64K floats) and
// weight once, writes y once: ~12 bytes per element, memory bound.
#include "kernels.h"

#include "kiln/sdk/error.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace kiln_example {
namespace {

// Independent accumulators so the compiler can vectorize the reduction without -ffast-math.
constexpr int64_t kLanes = 8;

double sum_of_squares(const float* x, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      const double v = x[i + l];
      acc[l] += v * v;
    }
  }
  for (; i < n; ++i) acc[0] += static_cast<double>(x[i]) * x[i];
  double total = 0.0;
  for (int64_t l = 0; l < kLanes; ++l) total += acc[l];
  return total;
}

} // namespace

bool rms_norm_cpu_supports(const kiln::ops::RmsNormArgs& args) {
  const at::Tensor& x = args.x;
  const at::Tensor& w = args.weight;
  return x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat && x.is_contiguous() &&
         w.is_contiguous() && !x.requires_grad() && !w.requires_grad();
}

at::Tensor rms_norm_cpu(const kiln::ops::RmsNormArgs& args) {
  // The dispatcher calls a kernel only when supports() holds; this guards direct callers.
  if (!rms_norm_cpu_supports(args)) {
    kiln::internal_error(
        "rms_norm/example: called with arguments its supports() rejects (needs "
        "contiguous float32 x and weight without autograd)");
  }
  const at::Tensor& x = args.x; // [..., D]
  const int64_t d = x.size(-1);
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous); // [..., D]
  if (x.numel() == 0) return y;
  const int64_t rows = x.numel() / d;
  const float* xp = x.const_data_ptr<float>();
  const float* wp = args.weight.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  const float eps = static_cast<float>(args.eps); // the reference adds eps in float32 too

  // Each task gets whole rows, about GRAIN_SIZE elements' worth.
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / d);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = xp + r * d;
      float* yr = yp + r * d;
      const float mean = static_cast<float>(sum_of_squares(xr, d) / static_cast<double>(d));
      const float inv_rms = 1.0f / std::sqrt(mean + eps);
      for (int64_t i = 0; i < d; ++i) {
        const float normed = xr[i] * inv_rms; // float32, then "cast to x's dtype" (float32)
        yr[i] = wp[i] * normed;
      }
    }
  });
  return y;
}

} // namespace kiln_example
