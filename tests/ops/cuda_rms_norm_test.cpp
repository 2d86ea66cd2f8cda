// The cuda backend's rms_norm (rms_norm.cu) against the torch reference: the same bf16 inputs
// through ops::rms_norm with each backend forced strictly, then y and the gradients of x and
// weight of a fixed random probe ((y * probe).sum()). Both round bf16(x rstd) and y to bf16; rstd
// and the sums differ in order, and the reference rounds dy * weight and the weight-gradient
// products to bf16 where the kernel keeps float32: y within 1e-2 and the gradients within 2e-2 of
// max |torch|. Shapes: one warp (16), 5 vectors (40), kv_a_layernorm's strided rows (512 of 576),
// q_a (2048), Nemotron-3 Nano (2688), GLM-5 (6144), the largest (8192), 3-D inputs, rows not 16-
// byte aligned (a copy), a gradient with stride-0 rows, and no rows. Every test skips itself
// without a GPU.
#include "core/plugin_host.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/ops.h"
#include "support/cuda_backend.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kiln {
namespace {

const std::string kBackend = test::cuda_backend_under_test(); // "cuda" unless told

const c10::Device kCuda(c10::DeviceType::CUDA, 0);

class CudaRmsNormTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (at::hasCUDA()) core::PluginHost::global().load({.use_env = false});
  }
  void SetUp() override {
    if (const std::string why = test::cuda_backend_unavailable(); !why.empty()) {
      GTEST_SKIP() << why;
    }
  }
  void TearDown() override {
    if (at::hasCUDA()) sdk::Dispatcher::global().configure({});
  }
};

struct Outputs {
  at::Tensor y, d_x, d_weight;
};

// y = rms_norm(x, weight) under `backend`, and the gradients of (y * probe).sum() (probe: y's
// shape, or anything that broadcasts to it).
Outputs run_backend(const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& probe,
                    const std::string& backend) {
  sdk::Dispatcher::global().configure({.default_backend = backend, .strict = true});
  const at::Tensor x = x_in.detach().requires_grad_(true);
  const at::Tensor weight = weight_in.detach().requires_grad_(true);
  const at::Tensor y = ops::rms_norm(x, weight, 1e-5);
  const auto grads = torch::autograd::grad({(y * probe).sum()}, {x, weight});
  bool seen = false;
  for (const auto& r : sdk::Dispatcher::global().resolved()) {
    if (r.op != "rms_norm") continue;
    seen = true;
    EXPECT_EQ(r.chosen, backend) << r.note;
  }
  EXPECT_TRUE(seen);
  return {y.detach(), grads[0], grads[1]};
}

::testing::AssertionResult near(const at::Tensor& actual, const at::Tensor& expected, double tol) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure()
           << "shape " << actual.sizes() << " vs " << expected.sizes();
  }
  const at::Tensor a = actual.detach().to(at::kCPU, at::kDouble);
  const at::Tensor e = expected.detach().to(at::kCPU, at::kDouble);
  if (!a.isfinite().all().item<bool>()) return ::testing::AssertionFailure() << "non-finite";
  if (e.numel() == 0) return ::testing::AssertionSuccess();
  const double scale = e.abs().max().item<double>();
  const double worst = (a - e).abs().max().item<double>();
  if (worst <= tol * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "max |diff| " << worst << " > " << tol << " * max |expected| " << scale;
}

at::Tensor randn_bf16(std::vector<int64_t> sizes, double scale = 1.0) {
  return (at::randn(sizes, at::TensorOptions().dtype(at::kFloat).device(kCuda)) * scale)
      .to(at::kBFloat16);
}

void expect_backends_agree(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& probe) {
  const Outputs ref = run_backend(x, weight, probe, "torch");
  const Outputs got = run_backend(x, weight, probe, kBackend);
  EXPECT_TRUE(near(got.y, ref.y, 1e-2)) << "y";
  EXPECT_TRUE(near(got.d_x, ref.d_x, 2e-2)) << "d x";
  EXPECT_TRUE(near(got.d_weight, ref.d_weight, 2e-2)) << "d weight";
}

void expect_backends_agree(const at::Tensor& x, const at::Tensor& weight) {
  expect_backends_agree(x, weight, at::randn(x.sizes(), x.options().dtype(at::kFloat)));
}

TEST_F(CudaRmsNormTest, MatchesTorchAtModelWidths) {
  at::manual_seed(1);
  for (const int64_t dim : {16, 40, 2048, 2688, 6144, 8192}) {
    SCOPED_TRACE(dim);
    expect_backends_agree(randn_bf16({300, dim}, 2.0), randn_bf16({dim}, 0.5) + 1.0);
  }
}

TEST_F(CudaRmsNormTest, ThreeDimensionalInput) {
  at::manual_seed(2);
  expect_backends_agree(randn_bf16({2, 77, 1024}), randn_bf16({1024}) + 1.0);
}

TEST_F(CudaRmsNormTest, StridedAndUnalignedRows) {
  at::manual_seed(3);
  // kv_a_layernorm's input: the first 512 channels of [T, 576] rows (a view, no copy).
  const at::Tensor compressed = randn_bf16({257, 576});
  expect_backends_agree(compressed.narrow(1, 0, 512), randn_bf16({512}) + 1.0);
  // Rows that start 3 elements into their storage: the wrapper copies them aligned.
  const at::Tensor flat = randn_bf16({3 + 64 * 96});
  expect_backends_agree(flat.narrow(0, 3, 64 * 96).view({64, 96}), randn_bf16({96}) + 1.0);
}

TEST_F(CudaRmsNormTest, BroadcastGradientAndNoRows) {
  at::manual_seed(4);
  // A probe of one row: dy reaches the kernel as rows of stride 0.
  const at::Tensor x = randn_bf16({129, 256});
  expect_backends_agree(x, randn_bf16({256}) + 1.0,
                        at::randn({1, 256}, x.options().dtype(at::kFloat)));
  expect_backends_agree(randn_bf16({0, 64}), randn_bf16({64}) + 1.0);
}

TEST_F(CudaRmsNormTest, WidthsOutsideTheKernelGoToTheReference) {
  at::manual_seed(5);
  sdk::Dispatcher::global().configure({.default_backend = kBackend});
  const at::Tensor x = randn_bf16({4, 12}); // not a multiple of 8
  ops::rms_norm(x, randn_bf16({12}), 1e-5);
  bool seen = false;
  for (const auto& r : sdk::Dispatcher::global().resolved()) {
    if (r.op != "rms_norm") continue;
    seen = true;
    EXPECT_EQ(r.chosen, "torch") << r.note;
  }
  EXPECT_TRUE(seen);
}

} // namespace
} // namespace kiln
