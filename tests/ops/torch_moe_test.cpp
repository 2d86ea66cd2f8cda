// The torch reference `moe_route` and `moe_experts` against naive float64 formulas written here
// (loops over tokens and slots), per dtype tolerance; group-limited routing against hand-computed
// choices; empty (-1) slots; gradients against the float64 formulas' autograd.
#include "kernels.h"
#include "op_test_util.h"

#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

namespace kiln {
namespace {

namespace ref = backends::torch_ref;
using test::close;
using test::Tolerance;
using test::tolerance;

// ---- moe_route: float64 formula -----------------------------------------------------------------

struct Route {
  std::vector<std::vector<int64_t>> indices; // per token, ascending
  at::Tensor weights;                        // float64 [N, k], in the order of `indices`
};

/// The router in float64 loops: scores, bias for the choice, top-2-sum group limit, top-k,
/// weights from the unbiased scores, normalisation and scaling.
Route naive_route(const ops::MoeRouteArgs& a) {
  const at::Tensor logits = a.logits.to(at::kDouble).contiguous();
  const int64_t n = logits.size(0);
  const int64_t e = logits.size(1);
  const at::Tensor scores =
      a.score_func == ops::MoeScoreFunc::kSigmoid ? at::sigmoid(logits) : at::softmax(logits, -1);
  const auto s = scores.accessor<double, 2>();
  Route r;
  r.weights = at::zeros({n, a.top_k}, at::kDouble);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<double> c(e);
    for (int64_t j = 0; j < e; ++j) {
      c[j] =
          s[t][j] +
          (a.e_score_correction_bias.defined() ? a.e_score_correction_bias[j].item<double>() : 0.0);
    }
    if (a.n_group > 1) {
      const int64_t per = e / a.n_group;
      std::vector<std::pair<double, int64_t>> groups;
      for (int64_t g = 0; g < a.n_group; ++g) {
        std::vector<double> members(c.begin() + g * per, c.begin() + (g + 1) * per);
        std::sort(members.rbegin(), members.rend());
        groups.push_back({members[0] + members[1], g});
      }
      std::sort(groups.rbegin(), groups.rend());
      std::vector<bool> kept(a.n_group, false);
      for (int64_t g = 0; g < a.topk_group; ++g) kept[groups[g].second] = true;
      for (int64_t j = 0; j < e; ++j) {
        if (!kept[j / per]) c[j] = -INFINITY;
      }
    }
    std::vector<int64_t> order(e);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return c[x] > c[y]; });
    std::vector<int64_t> chosen(order.begin(), order.begin() + a.top_k);
    std::sort(chosen.begin(), chosen.end());
    double sum = 0;
    for (int64_t j : chosen) sum += s[t][j];
    for (int64_t i = 0; i < a.top_k; ++i) {
      double w = s[t][chosen[i]];
      if (a.norm_topk_prob) w /= sum + 1e-20;
      r.weights[t][i].fill_(w * a.routed_scaling_factor);
    }
    r.indices.push_back(chosen);
  }
  return r;
}

/// The kernel's result with each row's slots sorted by expert (the slot order is unspecified).
Route sorted_route(const ops::MoeRouteResult& result) {
  const at::Tensor sorted = std::get<0>(result.indices.sort(-1));
  const at::Tensor perm = std::get<1>(result.indices.sort(-1));
  Route r;
  r.weights = result.weights.gather(1, perm);
  for (int64_t t = 0; t < sorted.size(0); ++t) {
    std::vector<int64_t> row;
    for (int64_t i = 0; i < sorted.size(1); ++i) row.push_back(sorted[t][i].item<int64_t>());
    r.indices.push_back(row);
  }
  return r;
}

struct RouteCase {
  std::string name;
  ops::MoeScoreFunc score_func;
  bool bias;
  int64_t experts, top_k, n_group, topk_group;
  bool norm;
  double scale;
};

ops::MoeRouteArgs route_args(const RouteCase& c, uint64_t seed) {
  at::manual_seed(seed);
  ops::MoeRouteArgs a;
  a.logits = at::randn({9, c.experts});
  if (c.bias) a.e_score_correction_bias = 0.2 * at::randn({c.experts});
  a.top_k = c.top_k;
  a.score_func = c.score_func;
  a.n_group = c.n_group;
  a.topk_group = c.topk_group;
  a.norm_topk_prob = c.norm;
  a.routed_scaling_factor = c.scale;
  return a;
}

class TorchMoeRouteTest : public ::testing::TestWithParam<RouteCase> {};

TEST_P(TorchMoeRouteTest, MatchesFloat64Formula) {
  const ops::MoeRouteArgs a = route_args(GetParam(), 20);
  const ops::MoeRouteResult result = ref::moe_route(a);
  ASSERT_EQ(result.indices.scalar_type(), at::kLong);
  ASSERT_EQ(result.weights.scalar_type(), at::kFloat);
  ASSERT_EQ(result.indices.sizes(), (std::vector<int64_t>{9, a.top_k}));
  const Route got = sorted_route(result);
  const Route expected = naive_route(a);
  EXPECT_EQ(got.indices, expected.indices);
  EXPECT_TRUE(close(got.weights, expected.weights, tolerance(at::kFloat)));
}

TEST_P(TorchMoeRouteTest, GradientMatchesFloat64Autograd) {
  const ops::MoeRouteArgs a = route_args(GetParam(), 21);
  ops::MoeRouteArgs grad_args = a;
  grad_args.logits = a.logits.clone().requires_grad_(true);
  const ops::MoeRouteResult result = ref::moe_route(grad_args);
  const at::Tensor probe = at::randn(result.weights.sizes(), at::kDouble);
  const at::Tensor grad = torch::autograd::grad({(result.weights.to(at::kDouble) * probe).sum()},
                                                {grad_args.logits})[0];

  // The weights as a float64 function of the logits, for the experts the kernel chose.
  at::Tensor logits64 = a.logits.to(at::kDouble).requires_grad_(true);
  const at::Tensor scores = a.score_func == ops::MoeScoreFunc::kSigmoid ? at::sigmoid(logits64)
                                                                        : at::softmax(logits64, -1);
  at::Tensor w = scores.gather(1, result.indices);
  if (a.norm_topk_prob) w = w / (w.sum(-1, true) + 1e-20);
  w = w * a.routed_scaling_factor;
  const at::Tensor expected = torch::autograd::grad({(w * probe).sum()}, {logits64})[0];
  EXPECT_TRUE(close(grad, expected, {1e-5, 1e-6}));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, TorchMoeRouteTest,
    ::testing::Values(
        RouteCase{"SigmoidBiasNormScaled", ops::MoeScoreFunc::kSigmoid, true, 16, 4, 1, 1, true,
                  2.5},
        RouteCase{"SigmoidTop1Normalised", ops::MoeScoreFunc::kSigmoid, false, 8, 1, 1, 1, true,
                  1.0},
        RouteCase{"SigmoidNoNorm", ops::MoeScoreFunc::kSigmoid, true, 12, 3, 1, 1, false, 1.0},
        RouteCase{"SoftmaxNoBias", ops::MoeScoreFunc::kSoftmax, false, 10, 2, 1, 1, false, 1.0},
        RouteCase{"SigmoidGroupLimited", ops::MoeScoreFunc::kSigmoid, true, 16, 4, 4, 2, true, 2.0},
        RouteCase{"SoftmaxGroupLimited", ops::MoeScoreFunc::kSoftmax, true, 12, 3, 3, 1, true,
                  1.0}),
    [](const auto& info) { return info.param.name; });

TEST(TorchMoeRouteGroupTest, GroupLimitOverridesTheBestSingleExpert) {
  // 8 experts in 4 groups of 2; keep 2 groups, choose 2 experts. With the bias the choice scores
  // are c = [0.881 0.569 | 0.722 0.774 | 0.599 0.650 | 1.453 -0.553]: expert 6 is the best alone,
  // but its group's top-2 sum (0.900) is the lowest; groups 0 (1.450) and 1 (1.497) are kept,
  // and their best experts are 0 (0.881) and 3 (0.774).
  ops::MoeRouteArgs a;
  a.logits = at::tensor({2.0, -1.0, 0.5, 0.3, 0.4, 0.2, 3.0, -3.0}, at::kFloat).view({1, 8});
  a.e_score_correction_bias = at::tensor({0.0, 0.3, 0.1, 0.2, 0.0, 0.1, 0.5, -0.6}, at::kFloat);
  a.top_k = 2;
  a.n_group = 4;
  a.topk_group = 2;
  a.routed_scaling_factor = 2.0;
  const Route got = sorted_route(ref::moe_route(a));
  ASSERT_EQ(got.indices[0], (std::vector<int64_t>{0, 3}));
  // Weights from the unbiased scores sigmoid(2.0) and sigmoid(0.3), normalised, times 2.
  const double s0 = 1 / (1 + std::exp(-2.0));
  const double s3 = 1 / (1 + std::exp(-0.3));
  EXPECT_NEAR(got.weights[0][0].item<double>(), 2 * s0 / (s0 + s3), 1e-6);
  EXPECT_NEAR(got.weights[0][1].item<double>(), 2 * s3 / (s0 + s3), 1e-6);

  a.n_group = 1; // without the limit, expert 6 wins
  a.topk_group = 1;
  EXPECT_EQ(sorted_route(ref::moe_route(a)).indices[0], (std::vector<int64_t>{0, 6}));
}

TEST(TorchMoeRouteGroupTest, MaskedGroupsLoseEvenToNegativeScores) {
  // Every choice score is negative (bias < -1): the dropped groups are -inf, not 0 (which would
  // make every dropped expert win), so the choice stays inside the kept groups.
  // c = [-0.5 -0.6 | -1.5 -1.5 | -2.5 -2.5 | -0.4 -0.6]; group sums -1.1, -3, -5, -1.0 keep
  // groups 3 and 0; their best experts are 6 (-0.4) and 0 (-0.5).
  ops::MoeRouteArgs a;
  a.logits = at::zeros({1, 8});
  a.e_score_correction_bias =
      at::tensor({-1.0, -1.1, -2.0, -2.0, -3.0, -3.0, -0.9, -1.1}, at::kFloat);
  a.top_k = 2;
  a.n_group = 4;
  a.topk_group = 2;
  const Route got = sorted_route(ref::moe_route(a));
  EXPECT_EQ(got.indices[0], (std::vector<int64_t>{0, 6}));
  EXPECT_TRUE(close(got.weights, at::full({1, 2}, 0.5, at::kDouble), {0, 1e-7}));
}

TEST(TorchMoeRouteGroupTest, Bf16LogitsAreUpcastFirst) {
  const ops::MoeRouteArgs a =
      route_args({"", ops::MoeScoreFunc::kSigmoid, true, 16, 4, 4, 2, true, 2.0}, 22);
  ops::MoeRouteArgs lo = a;
  lo.logits = a.logits.to(at::kBFloat16);
  ops::MoeRouteArgs hi = a;
  hi.logits = lo.logits.to(at::kFloat);
  const ops::MoeRouteResult r_lo = ref::moe_route(lo);
  const ops::MoeRouteResult r_hi = ref::moe_route(hi);
  EXPECT_EQ(r_lo.weights.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(r_lo.indices, r_hi.indices));
  EXPECT_TRUE(at::equal(r_lo.weights, r_hi.weights));
}

// ---- moe_experts: float64 formula ---------------------------------------------------------------

/// out[n] = sum_s w[n, s] * down[e] (act(up[e] x[n])), e = indices[n, s] (skipping -1), in
/// float64 (inputs upcast), slot by slot; differentiable in every tensor argument.
at::Tensor naive_experts(const at::Tensor& x, const at::Tensor& w_up, const at::Tensor& w_down,
                         const at::Tensor& indices, const at::Tensor& weights,
                         ops::MoeActivation activation) {
  const at::Tensor x64 = x.to(at::kDouble);
  const at::Tensor up64 = w_up.to(at::kDouble);
  const at::Tensor down64 = w_down.to(at::kDouble);
  const at::Tensor wt64 = weights.to(at::kDouble);
  const int64_t inter = w_down.size(2);
  std::vector<at::Tensor> rows;
  for (int64_t n = 0; n < x.size(0); ++n) {
    at::Tensor acc = at::zeros({x.size(1)}, at::kDouble);
    for (int64_t s = 0; s < indices.size(1); ++s) {
      const int64_t e = indices[n][s].item<int64_t>();
      if (e < 0) continue;
      const at::Tensor u = at::mv(up64[e], x64[n]);
      const at::Tensor h = activation == ops::MoeActivation::kSwiGlu
                               ? at::silu(u.narrow(0, 0, inter)) * u.narrow(0, inter, inter)
                               : at::relu(u).pow(2);
      acc = acc + wt64[n][s] * at::mv(down64[e], h);
    }
    rows.push_back(acc);
  }
  return at::stack(rows);
}

struct ExpertsCase {
  std::string name;
  at::ScalarType dtype;
  ops::MoeActivation activation;
  bool empty_slots;
  bool weights_in_x_dtype = false;
};

struct ExpertsInputs {
  at::Tensor x, w_up, w_down, indices, weights;
  ops::MoeActivation activation;
  ops::MoeExpertsArgs args() const { return {x, w_up, w_down, indices, weights, activation}; }
};

// 7 tokens, 3 slots, 5 experts (expert 4 gets no token), H = 16, I = 8.
ExpertsInputs experts_inputs(const ExpertsCase& c, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t n = 7, k = 3, e = 5, h = 16, inter = 8;
  const bool gated = c.activation == ops::MoeActivation::kSwiGlu;
  ExpertsInputs in;
  in.activation = c.activation;
  in.x = at::randn({n, h}).to(c.dtype);
  in.w_up = (at::randn({e, gated ? 2 * inter : inter, h}) / 4).to(c.dtype);
  in.w_down = (at::randn({e, h, inter}) / 3).to(c.dtype);
  // Distinct experts per row from {0..3}; some slots emptied (-1).
  in.indices =
      at::argsort(at::rand({n, 4}), /*dim=*/-1, /*descending=*/false).narrow(1, 0, k).contiguous();
  if (c.empty_slots) {
    in.indices[1][2].fill_(-1);
    in.indices[4][0].fill_(-1);
    in.indices[6].fill_(-1); // a token with no expert at all
  }
  in.weights = at::rand({n, k}) + 0.1;
  if (c.weights_in_x_dtype) in.weights = in.weights.to(c.dtype);
  return in;
}

class TorchMoeExpertsTest : public ::testing::TestWithParam<ExpertsCase> {};

TEST_P(TorchMoeExpertsTest, MatchesFloat64Formula) {
  const ExpertsCase& c = GetParam();
  const ExpertsInputs in = experts_inputs(c, 30);
  const at::Tensor out = ref::moe_experts(in.args());
  ASSERT_EQ(out.scalar_type(), c.dtype);
  const at::Tensor expected =
      naive_experts(in.x, in.w_up, in.w_down, in.indices, in.weights, in.activation);
  EXPECT_TRUE(close(out, expected, tolerance(c.dtype)));
  if (c.empty_slots) EXPECT_TRUE(at::equal(out[6], at::zeros({16}, c.dtype)));
}

TEST_P(TorchMoeExpertsTest, GradientsMatchFloat64Autograd) {
  const ExpertsCase& c = GetParam();
  const ExpertsInputs in = experts_inputs(c, 31);
  ExpertsInputs g = in;
  g.x = in.x.clone().requires_grad_(true);
  g.w_up = in.w_up.clone().requires_grad_(true);
  g.w_down = in.w_down.clone().requires_grad_(true);
  g.weights = in.weights.clone().requires_grad_(true);
  const at::Tensor out = ref::moe_experts(g.args());
  const at::Tensor probe = at::randn(out.sizes(), at::kDouble);
  const auto grads = torch::autograd::grad({(out.to(at::kDouble) * probe).sum()},
                                           {g.x, g.w_up, g.w_down, g.weights});

  at::Tensor x64 = in.x.to(at::kDouble).requires_grad_(true);
  at::Tensor up64 = in.w_up.to(at::kDouble).requires_grad_(true);
  at::Tensor down64 = in.w_down.to(at::kDouble).requires_grad_(true);
  at::Tensor wt64 = in.weights.to(at::kDouble).requires_grad_(true);
  const at::Tensor out64 = naive_experts(x64, up64, down64, in.indices, wt64, in.activation);
  const auto expected = torch::autograd::grad({(out64 * probe).sum()}, {x64, up64, down64, wt64});

  const Tolerance tol = c.dtype == at::kFloat ? Tolerance{1e-5, 1e-5} : Tolerance{2e-2, 2e-2};
  const char* names[] = {"dx", "dw_up", "dw_down", "dweights"};
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(close(grads[i], expected[i], tol)) << names[i];
  // Expert 4 received no token: its weights get exactly zero gradient.
  EXPECT_EQ(grads[1][4].abs().max().item<double>(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, TorchMoeExpertsTest,
    ::testing::Values(
        ExpertsCase{"SwiGluFp32", at::kFloat, ops::MoeActivation::kSwiGlu, false},
        ExpertsCase{"SwiGluFp32EmptySlots", at::kFloat, ops::MoeActivation::kSwiGlu, true},
        ExpertsCase{"Relu2Fp32EmptySlots", at::kFloat, ops::MoeActivation::kRelu2, true},
        ExpertsCase{"SwiGluBf16EmptySlots", at::kBFloat16, ops::MoeActivation::kSwiGlu, true},
        ExpertsCase{"Relu2Bf16", at::kBFloat16, ops::MoeActivation::kRelu2, false},
        ExpertsCase{"SwiGluBf16WeightsInBf16", at::kBFloat16, ops::MoeActivation::kSwiGlu, true,
                    true}),
    [](const auto& info) { return info.param.name; });

TEST(TorchMoeExpertsEdgeTest, AllSlotsEmptyGiveZerosAndZeroGradient) {
  ExpertsInputs in = experts_inputs({"", at::kFloat, ops::MoeActivation::kSwiGlu, false}, 32);
  in.indices.fill_(-1);
  in.x.requires_grad_(true);
  const at::Tensor out = ref::moe_experts(in.args());
  EXPECT_TRUE(at::equal(out, at::zeros_like(in.x)));
  const at::Tensor dx = torch::autograd::grad({out.sum()}, {in.x})[0];
  EXPECT_TRUE(at::equal(dx, at::zeros_like(in.x)));
}

TEST(TorchMoeExpertsEdgeTest, GroupedStrategyMatchesTheLoopOnCpu) {
  // at::_grouped_mm runs forward on the CPU too (torch's per-group loop): the offsets and the
  // sort are right when both strategies agree.
  const ExpertsInputs in =
      experts_inputs({"", at::kBFloat16, ops::MoeActivation::kSwiGlu, true}, 34);
  const c10::NoGradGuard no_grad;
  EXPECT_FALSE(ref::detail::moe_experts_can_group(in.args())); // CPU: the loop is the default
  EXPECT_TRUE(at::equal(ref::detail::moe_experts_grouped(in.args()),
                        ref::detail::moe_experts_looped(in.args())));
}

} // namespace
} // namespace kiln
