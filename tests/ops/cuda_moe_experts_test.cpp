// The cuda backend's moe_experts (the reference's sorted rows and grouped GEMMs, the sums of
// moe_combine.cu) against the torch reference: the same bf16 inputs through ops::moe_experts
// with each backend forced strictly, then the output and the gradients of x, w_up, w_down and the
// routing weights of a fixed random probe ((out * probe).sum()). Both run the same GEMMs and
// round the same intermediates; the sums differ in order, and the reference adds x's gradient
// with bf16 atomics where the kernel sums in float32: everything within 2e-2 of max |torch|.
// Shapes: GLM-like SwiGLU with empty (-1) slots and a token with none, Nemotron's relu^2, bf16
// routing weights, GLM-5's widths (H 6144, I 2048, k 8), every slot empty. Every test skips
// itself without a GPU.
#include "kiln/sdk/ops.h"
#include "support/cuda_op_test.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace kiln {
namespace {

const std::string kBackend = test::cuda_backend_under_test(); // "cuda" unless told

const c10::Device kCuda(c10::DeviceType::CUDA, 0);

using CudaMoeExpertsTest = test::CudaOpTest;

struct Problem {
  at::Tensor x, w_up, w_down, indices, weights, probe;
  ops::MoeActivation activation = ops::MoeActivation::kSwiGlu;
};

// N tokens routed to k distinct of E experts; every `empty_every`-th slot (0: none) is -1, and
// token 1 has no valid slot when `empty_token`.
Problem make_problem(int64_t n, int64_t e, int64_t k, int64_t h, int64_t i,
                     ops::MoeActivation activation, int64_t empty_every, bool empty_token,
                     uint64_t seed) {
  at::manual_seed(seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(kCuda);
  const int64_t up_rows = activation == ops::MoeActivation::kSwiGlu ? 2 * i : i;
  Problem p;
  p.activation = activation;
  p.x = at::randn({n, h}, f32).to(at::kBFloat16);
  p.w_up = (at::randn({e, up_rows, h}, f32) / std::sqrt(static_cast<double>(h))).to(at::kBFloat16);
  p.w_down = (at::randn({e, h, i}, f32) / std::sqrt(static_cast<double>(i))).to(at::kBFloat16);
  p.indices = std::get<1>(at::rand({n, e}, f32).topk(k, -1)).to(at::kLong);
  if (empty_every > 0) {
    p.indices.view({-1}).index_put_({at::indexing::Slice(0, n * k, empty_every)}, -1);
  }
  if (empty_token && n > 1) p.indices[1].fill_(-1);
  p.weights = at::rand({n, k}, f32) + 0.1;
  p.weights = p.weights / p.weights.sum(-1, /*keepdim=*/true);
  p.probe = at::randn({n, h}, f32);
  return p;
}

struct Outputs {
  at::Tensor out, d_x, d_w_up, d_w_down, d_weights;
};

Outputs run_backend(const Problem& p, const std::string& backend) {
  sdk::Dispatcher::global().configure({.default_backend = backend, .strict = true});
  const at::Tensor x = p.x.detach().requires_grad_(true);
  const at::Tensor w_up = p.w_up.detach().requires_grad_(true);
  const at::Tensor w_down = p.w_down.detach().requires_grad_(true);
  const at::Tensor weights = p.weights.detach().requires_grad_(true);
  const at::Tensor out = ops::moe_experts(x, w_up, w_down, p.indices, weights, p.activation);
  const auto grads = torch::autograd::grad({(out.to(at::kFloat) * p.probe).sum()},
                                           {x, w_up, w_down, weights}, {}, {}, false,
                                           /*allow_unused=*/true);
  test::expect_ran_on("moe_experts", backend);
  auto zero_if_unused = [](const at::Tensor& g, const at::Tensor& like) {
    return g.defined() ? g : at::zeros_like(like);
  };
  return {out.detach(), zero_if_unused(grads[0], x), zero_if_unused(grads[1], w_up),
          zero_if_unused(grads[2], w_down), zero_if_unused(grads[3], weights)};
}

void expect_backends_agree(const Problem& p) {
  const Outputs ref = run_backend(p, "torch");
  const Outputs got = run_backend(p, kBackend);
  EXPECT_TRUE(test::near_max(got.out, ref.out, 2e-2, 1e-6)) << "output";
  EXPECT_TRUE(test::near_max(got.d_x, ref.d_x, 2e-2, 1e-6)) << "d x";
  EXPECT_TRUE(test::near_max(got.d_w_up, ref.d_w_up, 2e-2, 1e-6)) << "d w_up";
  EXPECT_TRUE(test::near_max(got.d_w_down, ref.d_w_down, 2e-2, 1e-6)) << "d w_down";
  EXPECT_TRUE(test::near_max(got.d_weights, ref.d_weights, 2e-2, 1e-6)) << "d weights";
}

TEST_F(CudaMoeExpertsTest, SwiGluWithEmptySlots) {
  expect_backends_agree(
      make_problem(50, 8, 2, 64, 32, ops::MoeActivation::kSwiGlu, 7, /*empty_token=*/true, 1));
}

TEST_F(CudaMoeExpertsTest, Relu2) {
  expect_backends_agree(
      make_problem(40, 6, 3, 48, 24, ops::MoeActivation::kRelu2, 0, /*empty_token=*/false, 2));
}

TEST_F(CudaMoeExpertsTest, Bf16RoutingWeights) {
  Problem p = make_problem(33, 4, 2, 32, 16, ops::MoeActivation::kSwiGlu, 5, false, 3);
  p.weights = p.weights.to(at::kBFloat16);
  expect_backends_agree(p);
}

TEST_F(CudaMoeExpertsTest, Glm5Widths) {
  expect_backends_agree(
      make_problem(256, 16, 8, 6144, 2048, ops::MoeActivation::kSwiGlu, 0, false, 4));
}

TEST_F(CudaMoeExpertsTest, EverySlotEmptyGivesZeros) {
  Problem p = make_problem(12, 4, 2, 32, 16, ops::MoeActivation::kSwiGlu, 1, false, 5);
  const Outputs got = run_backend(p, kBackend);
  EXPECT_EQ(got.out.abs().max().item<float>(), 0.f);
  EXPECT_EQ(got.d_x.abs().max().item<float>(), 0.f);
  EXPECT_EQ(got.d_weights.abs().max().item<float>(), 0.f);
}

} // namespace
} // namespace kiln
