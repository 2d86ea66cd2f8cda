// Helpers shared by the op tests: per-dtype tolerances and an elementwise closeness assertion
// that reports the worst element.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>

namespace kiln::test {

/// |actual - expected| <= atol + rtol * |expected|, elementwise.
struct Tolerance {
  double rtol;
  double atol;
};

/// Tolerances for outputs of magnitude ~1: float32 is exact to a few ulps; bfloat16 has an 8-bit
/// mantissa (relative step 2^-8) and the kernels round a handful of times.
inline Tolerance tolerance(at::ScalarType dtype) {
  return dtype == at::kBFloat16 ? Tolerance{2e-2, 2e-2} : Tolerance{1e-5, 1e-5};
}

inline ::testing::AssertionResult close(const at::Tensor& actual, const at::Tensor& expected,
                                        Tolerance tol) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure()
           << "shape " << actual.sizes() << " vs " << expected.sizes();
  }
  if (actual.numel() == 0) return ::testing::AssertionSuccess();
  const at::Tensor a = actual.detach().to(at::kCPU, at::kDouble);
  const at::Tensor e = expected.detach().to(at::kCPU, at::kDouble);
  const at::Tensor excess = (a - e).abs() - (tol.atol + tol.rtol * e.abs());
  if (excess.isnan().any().item<bool>()) return ::testing::AssertionFailure() << "NaN";
  const double worst = excess.max().item<double>();
  if (worst <= 0) return ::testing::AssertionSuccess();
  const int64_t at_index = excess.flatten().argmax().item<int64_t>();
  return ::testing::AssertionFailure()
         << "exceeds atol " << tol.atol << " + rtol " << tol.rtol << " by " << worst
         << " at flat index " << at_index << ": " << a.flatten()[at_index].item<double>() << " vs "
         << e.flatten()[at_index].item<double>();
}

} // namespace kiln::test
