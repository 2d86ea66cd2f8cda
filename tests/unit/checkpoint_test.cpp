// kiln::nn::checkpoint: same values and gradients as running the block directly.
#include "kiln/nn/checkpoint.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

namespace {

struct Block {
  at::Tensor w = at::randn({6, 6}, at::kDouble).requires_grad_(true);
  at::Tensor b = at::randn({6}, at::kDouble).requires_grad_(true);
  at::Tensor operator()(const at::Tensor& x) const { return at::tanh(at::matmul(x, w) + b) * x; }
};

TEST(CheckpointTest, GradientsEqualRunningTheBlockDirectly) {
  at::manual_seed(0);
  Block first, second;
  const at::Tensor x0 = at::randn({3, 6}, at::kDouble);

  auto run = [&](bool checkpointed) {
    for (at::Tensor* t : {&first.w, &first.b, &second.w, &second.b})
      t->mutable_grad() = at::Tensor();
    const at::Tensor x = x0.clone().requires_grad_(true);
    auto f1 = [&](const at::Tensor& in) { return first(in); };
    auto f2 = [&](const at::Tensor& in) { return second(in); };
    at::Tensor h = checkpointed ? kiln::nn::checkpoint(f1, x) : f1(x);
    h = checkpointed ? kiln::nn::checkpoint(f2, h) : f2(h);
    const at::Tensor loss = (h * h).sum();
    loss.backward();
    return std::vector<at::Tensor>{loss.detach(), x.grad(), first.w.grad().clone(),
                                   first.b.grad().clone(), second.w.grad().clone()};
  };
  const auto plain = run(false);
  const auto ckpt = run(true);
  for (size_t i = 0; i < plain.size(); ++i) {
    ASSERT_TRUE(ckpt[i].defined()) << i;
    EXPECT_TRUE(at::allclose(plain[i], ckpt[i], 1e-12, 1e-12)) << i;
  }
}

TEST(CheckpointTest, IntegerOutputsPassThroughWithoutGradient) {
  Block block;
  const at::Tensor x = at::randn({4, 6}, at::kDouble).requires_grad_(true);
  const auto outs = kiln::nn::checkpoint(
      [&](const std::vector<at::Tensor>& in) {
        const at::Tensor y = block(in[0]);
        return std::vector<at::Tensor>{y, y.argmax(-1)};
      },
      {x});
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_FALSE(outs[1].requires_grad());
  EXPECT_EQ(outs[1].scalar_type(), at::kLong);
  outs[0].sum().backward();
  ASSERT_TRUE(x.grad().defined());
  ASSERT_TRUE(block.w.grad().defined());
}

TEST(CheckpointTest, WithoutGradModeItIsAPlainCall) {
  Block block;
  at::AutoGradMode no_grad(false);
  const at::Tensor x = at::randn({2, 6}, at::kDouble);
  const at::Tensor y = kiln::nn::checkpoint([&](const at::Tensor& in) { return block(in); }, x);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(at::allclose(y, block(x)));
}

} // namespace

namespace {

TEST(CheckpointTest, ParametersGetGradientsWhenNoInputRequiresGrad) {
  Block block;
  const at::Tensor x = at::randn({2, 6}, at::kDouble); // a frozen embedding's output, say
  kiln::nn::checkpoint([&](const at::Tensor& in) { return block(in); }, x).sum().backward();
  ASSERT_TRUE(block.w.grad().defined());
  const at::Tensor direct_w = block.w.grad().clone();
  block.w.mutable_grad() = at::Tensor();
  block(x).sum().backward();
  EXPECT_TRUE(at::allclose(block.w.grad(), direct_w, 1e-12, 1e-12));
}

} // namespace
