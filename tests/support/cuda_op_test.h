// Shared pieces of the suites that check a cuda backend op against the torch reference through
// the dispatcher (tests/ops/cuda_*_test.cpp): the fixture that loads the built-in plugins and
// skips without a capable GPU, the check that a call ran on the backend it was forced to, and
// the max-relative comparison of bf16 results.
#pragma once

#include "core/plugin_host.h"
#include "kiln/sdk/dispatch.h"
#include "support/cuda_backend.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace kiln::test {

/// Loads the built-in plugins once (only with a GPU), skips every test where the cuda backend
/// cannot run (cuda_backend_unavailable), and returns the dispatcher to its default selection
/// after each test.
class CudaOpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (at::hasCUDA()) core::PluginHost::global().load({.use_env = false});
  }
  void SetUp() override {
    if (const std::string why = cuda_backend_unavailable(); !why.empty()) GTEST_SKIP() << why;
  }
  void TearDown() override {
    if (at::hasCUDA()) sdk::Dispatcher::global().configure({});
  }
};

/// Fails the test unless op `op` was resolved since the last configure() and every resolution
/// chose `backend`.
inline void expect_ran_on(const std::string& op, const std::string& backend) {
  bool seen = false;
  for (const auto& r : sdk::Dispatcher::global().resolved()) {
    if (r.op != op) continue;
    seen = true;
    EXPECT_EQ(r.chosen, backend) << op << ": " << r.note;
  }
  EXPECT_TRUE(seen) << op << " was not dispatched";
}

/// max |actual - expected| <= tol * max(max |expected|, floor), same shapes, `actual` finite; on
/// failure names the worst element.
inline ::testing::AssertionResult near_max(const at::Tensor& actual, const at::Tensor& expected,
                                           double tol, double floor = 0.0) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure()
           << "shape " << actual.sizes() << " vs " << expected.sizes();
  }
  const at::Tensor a = actual.detach().to(at::kCPU, at::kDouble);
  const at::Tensor e = expected.detach().to(at::kCPU, at::kDouble);
  if (!a.isfinite().all().item<bool>()) return ::testing::AssertionFailure() << "non-finite";
  if (e.numel() == 0) return ::testing::AssertionSuccess();
  const double scale = std::max(e.abs().max().item<double>(), floor);
  const at::Tensor diff = (a - e).abs();
  const double worst = diff.max().item<double>();
  if (worst <= tol * scale) return ::testing::AssertionSuccess();
  const int64_t at_index = diff.flatten().argmax().item<int64_t>();
  return ::testing::AssertionFailure()
         << "max |diff| " << worst << " > " << tol << " * max |expected| " << scale << " (relative "
         << worst / scale << ") at flat index " << at_index << ": "
         << a.flatten()[at_index].item<double>() << " vs " << e.flatten()[at_index].item<double>();
}

} // namespace kiln::test
