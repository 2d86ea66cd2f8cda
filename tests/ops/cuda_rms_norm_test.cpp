// The cuda backend's rms_norm (rms_norm.cu) against the torch reference: the same bf16 inputs
// through ops::rms_norm with each backend forced strictly, then y and the gradients of x and
// weight of a fixed random probe ((y * probe).sum()). Both round bf16(x rstd) and y to bf16; rstd
// and the sums differ in order, and the reference rounds dy * weight and the weight-gradient
// products to bf16 where the kernel keeps float32: y within 1e-2 and the gradients within 2e-2 of
// max |torch|. Shapes: one warp (16), 5 vectors (40), kv_a_layernorm's strided rows (512 of 576),
// q_a (2048), Nemotron-3 Nano (2688), GLM-5 (6144), the largest (8192), 3-D inputs, rows not 16-
// byte aligned (a copy), a gradient with stride-0 rows, and no rows. Every test skips itself
// without a GPU.
#include "kiln/sdk/ops.h"
#include "support/cuda_op_test.h"

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

using CudaRmsNormTest = test::CudaOpTest;

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
  test::expect_ran_on("rms_norm", backend);
  return {y.detach(), grads[0], grads[1]};
}

at::Tensor randn_bf16(std::vector<int64_t> sizes, double scale = 1.0) {
  return (at::randn(sizes, at::TensorOptions().dtype(at::kFloat).device(kCuda)) * scale)
      .to(at::kBFloat16);
}

void expect_backends_agree(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& probe) {
  const Outputs ref = run_backend(x, weight, probe, "torch");
  const Outputs got = run_backend(x, weight, probe, kBackend);
  EXPECT_TRUE(test::near_max(got.y, ref.y, 1e-2)) << "y";
  EXPECT_TRUE(test::near_max(got.d_x, ref.d_x, 2e-2)) << "d x";
  EXPECT_TRUE(test::near_max(got.d_weight, ref.d_weight, 2e-2)) << "d weight";
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
  test::expect_ran_on("rms_norm", "torch");
}

} // namespace
} // namespace kiln
