// The torch reference kernels of rms_norm and rope against naive float64 formulas written here,
// per dtype tolerance; rms_norm's gradient against finite differences of the float64 formula; and
// the HF rounding order of bf16 rms_norm, bit for bit.
#include "kernels.h"
#include "op_test_util.h"

#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/kernel.h"
#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <functional>
#include <string>

namespace kiln {
namespace {

namespace ref = backends::torch_ref;

using test::close;
using test::tolerance;

// ---- naive float64 formulas ---------------------------------------------------------------------

/// y = x / sqrt(mean(x^2) + eps) * w over the last dim, in float64 loops.
at::Tensor naive_rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  const at::Tensor x64 = x.to(at::kDouble).contiguous();
  const at::Tensor w64 = w.to(at::kDouble).contiguous();
  const int64_t d = x64.size(-1);
  const at::Tensor rows = x64.view({-1, d});
  at::Tensor out = at::empty_like(rows);
  auto xa = rows.accessor<double, 2>();
  auto wa = w64.accessor<double, 1>();
  auto oa = out.accessor<double, 2>();
  for (int64_t r = 0; r < rows.size(0); ++r) {
    double sum_sq = 0;
    for (int64_t i = 0; i < d; ++i) sum_sq += xa[r][i] * xa[r][i];
    const double inv = 1.0 / std::sqrt(sum_sq / static_cast<double>(d) + eps);
    for (int64_t i = 0; i < d; ++i) oa[r][i] = xa[r][i] * inv * wa[i];
  }
  return out.view(x64.sizes());
}

/// Rotates the first 2 * cos.size(-1) channels of every head in float64 loops; the rest pass.
at::Tensor naive_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                      ops::RopeStyle style) {
  const int64_t h = x.size(-2);
  const int64_t d = x.size(-1);
  const int64_t half = cos.size(-1);
  const at::Tensor x64 = x.to(at::kDouble).contiguous().view({-1, h, d});
  const at::Tensor c64 = cos.to(at::kDouble).contiguous().view({-1, half});
  const at::Tensor s64 = sin.to(at::kDouble).contiguous().view({-1, half});
  at::Tensor out = x64.clone();
  auto xa = x64.accessor<double, 3>();
  auto ca = c64.accessor<double, 2>();
  auto sa = s64.accessor<double, 2>();
  auto oa = out.accessor<double, 3>();
  for (int64_t t = 0; t < x64.size(0); ++t) {
    for (int64_t head = 0; head < h; ++head) {
      for (int64_t i = 0; i < half; ++i) {
        const int64_t ia = style == ops::RopeStyle::kHalf ? i : 2 * i;
        const int64_t ib = style == ops::RopeStyle::kHalf ? i + half : 2 * i + 1;
        const double a = xa[t][head][ia];
        const double b = xa[t][head][ib];
        oa[t][head][ia] = a * ca[t][i] - b * sa[t][i];
        oa[t][head][ib] = b * ca[t][i] + a * sa[t][i];
      }
    }
  }
  return out.view(x.sizes());
}

/// cos/sin tables as HF builds them: float32 angles pos * theta^(-2i/R) for the given positions.
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions, int64_t rotary) {
  const at::Tensor inv_freq =
      at::pow(10000.0, -at::arange(0, rotary, 2, at::kFloat) / static_cast<double>(rotary));
  const at::Tensor angles = positions.to(at::kFloat).unsqueeze(-1) * inv_freq; // [..., R/2]
  return {angles.cos(), angles.sin()};
}

/// Central finite differences of a scalar float64 function at `x`, element by element.
at::Tensor finite_difference(const std::function<double(const at::Tensor&)>& f, const at::Tensor& x,
                             double step = 1e-6) {
  at::Tensor grad = at::zeros_like(x);
  at::Tensor probe = x.clone();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x.flatten()[i].item<double>();
    probe.flatten()[i].fill_(v + step);
    const double up = f(probe);
    probe.flatten()[i].fill_(v - step);
    const double down = f(probe);
    probe.flatten()[i].fill_(v);
    grad.flatten()[i].fill_((up - down) / (2 * step));
  }
  return grad;
}

// ---- rms_norm -----------------------------------------------------------------------------------

class TorchRmsNormTest : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(TorchRmsNormTest, MatchesFloat64Formula) {
  const at::ScalarType dtype = GetParam();
  at::manual_seed(0);
  const at::Tensor x = at::randn({3, 5, 64}).to(dtype);
  const at::Tensor w = (1 + 0.5 * at::randn({64})).to(dtype);
  const at::Tensor y = ref::rms_norm({x, w, 1e-6});
  EXPECT_EQ(y.scalar_type(), dtype);
  EXPECT_TRUE(close(y, naive_rms_norm(x, w, 1e-6), tolerance(dtype)));
}

TEST_P(TorchRmsNormTest, LargeEpsDominatesSmallInputs) {
  const at::ScalarType dtype = GetParam();
  const at::Tensor x = (1e-3 * at::randn({4, 16})).to(dtype);
  const at::Tensor w = at::ones({16}, dtype);
  EXPECT_TRUE(close(ref::rms_norm({x, w, 1.0}), naive_rms_norm(x, w, 1.0), tolerance(dtype)));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, TorchRmsNormTest, ::testing::Values(at::kFloat, at::kBFloat16),
                         [](const auto& info) { return std::string(c10::toString(info.param)); });

TEST(TorchRmsNormOrderTest, Bf16CastsBeforeTheWeightMultiply) {
  at::manual_seed(1);
  const at::Tensor x = at::randn({8, 256}).to(at::kBFloat16);
  const at::Tensor w = (1 + at::randn({256})).to(at::kBFloat16);
  const double eps = 1e-5;
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  const at::Tensor hf = normed.to(at::kBFloat16) * w; // HF: cast, then bf16 * bf16
  const at::Tensor y = ref::rms_norm({x, w, eps});
  ASSERT_EQ(y.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(y, hf));
  // The other order (weight in float32, then one cast: NeMo's torch_fp32) rounds differently on
  // this input, so the check above can tell the two apart.
  const at::Tensor fp32_weight = (normed * w.to(at::kFloat)).to(at::kBFloat16);
  EXPECT_FALSE(at::equal(y, fp32_weight));
}

TEST(TorchRmsNormGradTest, MatchesFiniteDifferencesOfFloat64Formula) {
  at::manual_seed(2);
  const double eps = 1e-6;
  const at::Tensor x0 = at::randn({3, 7}, at::kDouble);
  const at::Tensor w0 = 1 + 0.5 * at::randn({7}, at::kDouble);
  const at::Tensor probe = at::randn({3, 7}, at::kDouble); // y . probe makes a scalar loss

  // Analytic gradient of the reference kernel (float32 inputs, as the op runs), via autograd.
  at::Tensor x = x0.to(at::kFloat).requires_grad_(true);
  at::Tensor w = w0.to(at::kFloat).requires_grad_(true);
  const at::Tensor loss = (ref::rms_norm({x, w, eps}) * probe.to(at::kFloat)).sum();
  const auto grads = torch::autograd::grad({loss}, {x, w});

  // Finite differences of the float64 formula.
  const at::Tensor dx = finite_difference(
      [&](const at::Tensor& xp) {
        return (naive_rms_norm(xp, w0, eps) * probe).sum().item<double>();
      },
      x0);
  const at::Tensor dw = finite_difference(
      [&](const at::Tensor& wp) {
        return (naive_rms_norm(x0, wp, eps) * probe).sum().item<double>();
      },
      w0);
  EXPECT_TRUE(close(grads[0], dx, {1e-4, 1e-4}));
  EXPECT_TRUE(close(grads[1], dw, {1e-4, 1e-4}));
}

TEST(TorchRmsNormGradTest, Float64FormulaAgreesWithItsOwnAutogradGradient) {
  // Sanity check of the finite-difference helper on the float64 formula expressed in ATen.
  at::manual_seed(3);
  const at::Tensor x0 = at::randn({2, 5}, at::kDouble);
  const at::Tensor w0 = at::randn({5}, at::kDouble);
  auto formula = [](const at::Tensor& x, const at::Tensor& w) {
    return x * at::rsqrt(x.pow(2).mean(-1, true) + 1e-6) * w;
  };
  at::Tensor x = x0.clone().requires_grad_(true);
  const auto grads = torch::autograd::grad({formula(x, w0).sum()}, {x});
  const at::Tensor dx = finite_difference(
      [&](const at::Tensor& xp) { return formula(xp, w0).sum().item<double>(); }, x0);
  EXPECT_TRUE(close(grads[0], dx, {1e-7, 1e-7}));
}

// ---- rope ---------------------------------------------------------------------------------------

struct RopeCase {
  std::string name;
  at::ScalarType dtype;
  ops::RopeStyle style;
  bool thd;
  int64_t head_dim;
  int64_t rotary;
};

class TorchRopeTest : public ::testing::TestWithParam<RopeCase> {};

TEST_P(TorchRopeTest, MatchesFloat64Formula) {
  const RopeCase& c = GetParam();
  at::manual_seed(4);
  const int64_t heads = 3;
  at::Tensor x, positions;
  if (c.thd) {
    x = at::randn({11, heads, c.head_dim});
    positions = at::cat({at::arange(4), at::arange(7)}); // two packed documents
  } else {
    x = at::randn({2, 6, heads, c.head_dim});
    positions = at::arange(6).unsqueeze(0).expand({2, 6}) + at::tensor({0, 9}).unsqueeze(1);
  }
  x = x.to(c.dtype);
  const auto [cos, sin] = rope_tables(positions * 37, c.rotary); // large angles too

  const at::Tensor y = ref::rope({x, cos, sin, c.style});
  ASSERT_EQ(y.sizes(), x.sizes());
  ASSERT_EQ(y.scalar_type(), c.dtype);
  // As in HF, the tables are rounded to x's dtype before use: the formula sees the same values.
  const at::Tensor expected = naive_rope(x, cos.to(c.dtype), sin.to(c.dtype), c.style);
  EXPECT_TRUE(close(y, expected, tolerance(c.dtype)));
  if (c.rotary < c.head_dim) { // the pass-through channels are untouched, bit for bit
    const int64_t rest = c.head_dim - c.rotary;
    EXPECT_TRUE(at::equal(y.narrow(-1, c.rotary, rest), x.narrow(-1, c.rotary, rest)));
  }
}

class TorchRopeGradTest : public ::testing::TestWithParam<RopeCase> {};

TEST_P(TorchRopeGradTest, GradientIsTheInverseRotation) {
  const RopeCase& c = GetParam();
  at::manual_seed(5);
  const at::Tensor x0 = c.thd ? at::randn({5, 2, c.head_dim}) : at::randn({1, 5, 2, c.head_dim});
  const at::Tensor positions = c.thd ? at::arange(5) : at::arange(5).unsqueeze(0);
  const auto [cos, sin] = rope_tables(positions, c.rotary);
  const at::Tensor probe = at::randn(x0.sizes());
  at::Tensor x = x0.clone().requires_grad_(true);
  const auto grads =
      torch::autograd::grad({(ref::rope({x, cos, sin, c.style}) * probe).sum()}, {x});
  // rope is linear in x: d/dx sum(R x . p) = R^T p = the rotation by the negated angle.
  const at::Tensor expected = naive_rope(probe, cos, -sin, c.style);
  EXPECT_TRUE(close(grads[0], expected, tolerance(at::kFloat)));
}

const RopeCase kFp32RopeCases[] = {
    {"HalfBshdFull", at::kFloat, ops::RopeStyle::kHalf, false, 32, 32},
    {"HalfBshdPartial", at::kFloat, ops::RopeStyle::kHalf, false, 32, 16},
    {"HalfThdPartial", at::kFloat, ops::RopeStyle::kHalf, true, 32, 16},
    {"InterleavedThdFull", at::kFloat, ops::RopeStyle::kInterleaved, true, 16, 16},
    {"InterleavedBshdPartial", at::kFloat, ops::RopeStyle::kInterleaved, false, 24, 8}};

INSTANTIATE_TEST_SUITE_P(Fp32, TorchRopeTest, ::testing::ValuesIn(kFp32RopeCases),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(Fp32, TorchRopeGradTest, ::testing::ValuesIn(kFp32RopeCases),
                         [](const auto& info) { return info.param.name; });
INSTANTIATE_TEST_SUITE_P(Bf16, TorchRopeTest,
                         ::testing::Values(RopeCase{"HalfBshdPartial", at::kBFloat16,
                                                    ops::RopeStyle::kHalf, false, 32, 16},
                                           RopeCase{"HalfThdFull", at::kBFloat16,
                                                    ops::RopeStyle::kHalf, true, 16, 16},
                                           RopeCase{"InterleavedThdPartial", at::kBFloat16,
                                                    ops::RopeStyle::kInterleaved, true, 24, 8},
                                           RopeCase{"InterleavedBshdFull", at::kBFloat16,
                                                    ops::RopeStyle::kInterleaved, false, 16, 16}),
                         [](const auto& info) { return info.param.name; });

// ---- through the dispatcher ---------------------------------------------------------------------

class TorchReferenceDispatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto& d = sdk::Dispatcher::global();
    d.reset_for_testing();
    d.add_kernel(
        sdk::make_kernel_record<ops::RmsNormOp>({.backend = "torch", .run = &ref::rms_norm}));
    d.add_kernel(sdk::make_kernel_record<ops::RopeOp>({.backend = "torch", .run = &ref::rope}));
    d.add_kernel(
        sdk::make_kernel_record<ops::AttentionOp>({.backend = "torch", .run = &ref::attention}));
    d.add_kernel(
        sdk::make_kernel_record<ops::MoeRouteOp>({.backend = "torch", .run = &ref::moe_route}));
    d.add_kernel(
        sdk::make_kernel_record<ops::MoeExpertsOp>({.backend = "torch", .run = &ref::moe_experts}));
    d.add_kernel(sdk::make_kernel_record<ops::LinearCrossEntropyOp>(
        {.backend = "torch", .run = &ref::linear_cross_entropy}));
    d.configure({.default_backend = "torch", .strict = true});
  }
  void TearDown() override { sdk::Dispatcher::global().reset_for_testing(); }
};

TEST_F(TorchReferenceDispatchTest, EntryPointsRunTheReferenceKernels) {
  at::manual_seed(6);
  const at::Tensor x = at::randn({2, 4, 3, 16});
  const at::Tensor w = at::randn({16});
  EXPECT_TRUE(at::equal(ops::rms_norm(x, w, 1e-6), ref::rms_norm({x, w, 1e-6})));
  const auto [cos, sin] = rope_tables(at::arange(4).unsqueeze(0).expand({2, 4}), 8);
  EXPECT_TRUE(at::equal(ops::rope(x, cos, sin, ops::RopeStyle::kInterleaved),
                        ref::rope({x, cos, sin, ops::RopeStyle::kInterleaved})));
  const auto resolved = sdk::Dispatcher::global().resolved();
  ASSERT_EQ(resolved.size(), 2u);
  EXPECT_EQ(resolved[0].chosen, "torch");
}

TEST_F(TorchReferenceDispatchTest, ModelOpEntryPointsValidateAndRunTheReferenceKernels) {
  at::manual_seed(7);
  // attention, THD with two documents
  ops::AttentionArgs attn;
  attn.q = at::randn({7, 4, 8});
  attn.k = at::randn({7, 2, 8});
  attn.v = at::randn({7, 2, 8});
  attn.cu_seqlens = at::tensor({0, 3, 7}, at::kInt);
  attn.max_seqlen = 4;
  attn.softmax_scale = 0.35;
  EXPECT_TRUE(at::equal(ops::attention(attn), ref::attention(attn)));

  ops::MoeRouteArgs route;
  route.logits = at::randn({5, 8});
  route.e_score_correction_bias = at::randn({8});
  route.top_k = 2;
  route.n_group = 2;
  route.topk_group = 1;
  const ops::MoeRouteResult routed = ops::moe_route(route);
  EXPECT_TRUE(at::equal(routed.indices, ref::moe_route(route).indices));

  const at::Tensor x = at::randn({5, 16});
  const at::Tensor w_up = at::randn({8, 12, 16});
  const at::Tensor w_down = at::randn({8, 16, 6});
  EXPECT_TRUE(at::equal(ops::moe_experts(x, w_up, w_down, routed.indices, routed.weights,
                                         ops::MoeActivation::kSwiGlu),
                        ref::moe_experts({x, w_up, w_down, routed.indices, routed.weights,
                                          ops::MoeActivation::kSwiGlu})));

  ops::LinearCrossEntropyArgs lce;
  lce.hidden = x;
  lce.weight = at::randn({11, 16});
  lce.labels = at::tensor({1, -100, 3, 10, 0}, at::kLong);
  EXPECT_TRUE(at::equal(ops::linear_cross_entropy(lce).loss, ref::linear_cross_entropy(lce).loss));
  EXPECT_EQ(sdk::Dispatcher::global().resolved().size(), 4u);
}

} // namespace
} // namespace kiln
