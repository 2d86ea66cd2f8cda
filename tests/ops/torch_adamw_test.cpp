// The torch reference kernel of adamw (ATen's fused AdamW behind the op's contract) against the
// AdamW formula in float64: a float32 parameter that is its own master, a bf16 parameter with a
// float32 master (the parameter is the master rounded), clipping through grad_scale, pieces that
// give the result of one whole update (to float32 rounding), non-contiguous tensors updated where
// they are, and the gradient left as it was.
#include "kernels.h"

#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

namespace kiln {
namespace {

namespace ref = backends::torch_ref;

struct Reference {
  at::Tensor w, m, v; // float64
};

// One AdamW step in float64 (torch.optim.AdamW's formula).
void reference_step(Reference& r, const at::Tensor& grad, const ops::AdamwArgs& a) {
  const at::Tensor g = grad.to(at::kDouble) * a.grad_scale;
  r.w = r.w * (1 - a.lr * a.weight_decay);
  r.m = a.beta1 * r.m + (1 - a.beta1) * g;
  r.v = a.beta2 * r.v + (1 - a.beta2) * g * g;
  const double c1 = 1 - std::pow(a.beta1, a.step), c2 = 1 - std::pow(a.beta2, a.step);
  r.w = r.w - a.lr * (r.m / c1) / ((r.v / c2).sqrt() + a.eps);
}

TEST(TorchAdamwTest, Float32ParameterIsItsOwnMasterAndTheGradientStays) {
  at::manual_seed(0);
  const at::Tensor param = at::randn({6, 5});
  ops::AdamwArgs a{.param = param,
                   .exp_avg = at::zeros({6, 5}),
                   .exp_avg_sq = at::zeros({6, 5}),
                   .lr = 1e-2,
                   .beta1 = 0.9,
                   .beta2 = 0.95,
                   .weight_decay = 0.1,
                   .grad_scale = 0.4};
  Reference r{param.to(at::kDouble), at::zeros({6, 5}, at::kDouble),
              at::zeros({6, 5}, at::kDouble)};
  for (int64_t step = 1; step <= 3; ++step) {
    a.grad = at::randn({6, 5});
    const at::Tensor grad_before = a.grad.clone();
    a.step = step;
    ref::adamw(a);
    reference_step(r, grad_before, a);
    EXPECT_TRUE(at::equal(a.grad, grad_before)) << "the gradient was written (step " << step << ")";
  }
  EXPECT_TRUE(at::allclose(param.to(at::kDouble), r.w, 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(a.exp_avg.to(at::kDouble), r.m, 1e-6, 1e-7));
  EXPECT_TRUE(at::allclose(a.exp_avg_sq.to(at::kDouble), r.v, 1e-6, 1e-8));
}

TEST(TorchAdamwTest, Bf16ParameterIsItsMasterRoundedAndPiecesChangeNothingButRounding) {
  at::manual_seed(1);
  const at::Tensor init = at::randn({5, 11}).to(at::kBFloat16);
  const auto args = [&](int64_t piece) {
    return ops::AdamwArgs{.param = init.clone(),
                          .master = init.to(at::kFloat),
                          .exp_avg = at::zeros({5, 11}),
                          .exp_avg_sq = at::zeros({5, 11}),
                          .lr = 1e-2,
                          .weight_decay = 0.1,
                          .grad_scale = 2.5,
                          .piece_elements = piece};
  };
  ops::AdamwArgs whole = args(int64_t{1} << 26), pieces = args(7); // 55 = 7 * 7 + 6
  Reference r{init.to(at::kDouble), at::zeros({5, 11}, at::kDouble),
              at::zeros({5, 11}, at::kDouble)};
  for (int64_t step = 1; step <= 3; ++step) {
    const at::Tensor grad = at::randn({5, 11}).to(at::kBFloat16);
    for (ops::AdamwArgs* a : {&whole, &pieces}) {
      a->grad = grad.clone();
      a->step = step;
      ref::adamw(*a);
      EXPECT_TRUE(at::equal(a->grad, grad));
    }
    reference_step(r, grad, whole);
  }
  EXPECT_TRUE(at::allclose(whole.master.to(at::kDouble), r.w, 1e-6, 1e-6));
  EXPECT_TRUE(at::equal(whole.param, whole.master.to(at::kBFloat16)));
  for (auto [a, b] : {std::pair{whole.param, pieces.param},
                      {whole.master, pieces.master},
                      {whole.exp_avg, pieces.exp_avg},
                      {whole.exp_avg_sq, pieces.exp_avg_sq}}) {
    // ATen's CPU kernel takes vectors and a scalar tail: pieces move elements between the two,
    // which round differently in the last float32 bit.
    EXPECT_TRUE(at::allclose(a.to(at::kDouble), b.to(at::kDouble), 1e-6, 1e-9));
  }
  EXPECT_FALSE(at::equal(whole.param, init)); // it moved
}

TEST(TorchAdamwTest, NonContiguousTensorsAreUpdatedWhereTheyAre) {
  at::manual_seed(2);
  const at::Tensor base = at::randn({4, 6}).to(at::kBFloat16);
  const at::Tensor param = base.t(); // [6, 4], not contiguous
  ops::AdamwArgs a{.param = param,
                   .grad = at::randn({6, 4}).to(at::kBFloat16),
                   .master = param.to(at::kFloat),
                   .exp_avg = at::zeros({6, 4}),
                   .exp_avg_sq = at::zeros({6, 4}),
                   .lr = 1e-2,
                   .piece_elements = 5};
  Reference r{param.to(at::kDouble), at::zeros({6, 4}, at::kDouble),
              at::zeros({6, 4}, at::kDouble)};
  ref::adamw(a);
  reference_step(r, a.grad, a);
  EXPECT_TRUE(at::allclose(a.master.to(at::kDouble), r.w, 1e-6, 1e-6));
  EXPECT_TRUE(at::equal(base.t(), a.master.to(at::kBFloat16))); // written through the view
}

} // namespace
} // namespace kiln
