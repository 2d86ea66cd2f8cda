// The torch reference `linear_cross_entropy` against a float64 formula written here (dense
// logits, logsumexp, target logit), per dtype tolerance: mean and sum, ignore_index, chunk sizes
// that do and do not divide T, every token ignored; gradients of hidden and weight against the
// float64 formula's autograd.
#include "kernels.h"
#include "op_test_util.h"

#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>

namespace kiln {
namespace {

namespace ref = backends::torch_ref;
using test::close;
using test::Tolerance;
using test::tolerance;

/// Per-token losses in float64 from float64 logits (0 at ignored tokens).
at::Tensor naive_per_token(const at::Tensor& logits64, const at::Tensor& labels,
                           int64_t ignore_index) {
  const at::Tensor valid = labels != ignore_index;
  const at::Tensor safe = labels.masked_fill(valid.logical_not(), 0);
  const at::Tensor loss =
      at::logsumexp(logits64, {-1}) - logits64.gather(1, safe.unsqueeze(1)).squeeze(1);
  return loss * valid.to(at::kDouble);
}

at::Tensor naive_loss(const at::Tensor& logits64, const at::Tensor& labels, int64_t ignore_index,
                      ops::LossReduction reduction) {
  const at::Tensor sum = naive_per_token(logits64, labels, ignore_index).sum();
  if (reduction == ops::LossReduction::kSum) return sum;
  const at::Tensor count = (labels != ignore_index).sum().to(at::kDouble);
  return sum / count.clamp_min(1);
}

/// HF's logits as the op's formula sees them: hidden @ weight^T, rounded to `dtype` (for
/// bfloat16: an fp32 product rounded once), in float64; differentiable through the rounding.
at::Tensor logits64(const at::Tensor& hidden, const at::Tensor& weight, at::ScalarType dtype) {
  const at::Tensor exact = at::matmul(hidden.to(at::kDouble), weight.to(at::kDouble).t());
  return dtype == at::kFloat ? exact : exact.to(at::kFloat).to(dtype).to(at::kDouble);
}

struct LceCase {
  std::string name;
  at::ScalarType dtype;
  ops::LossReduction reduction;
  int64_t chunk_size;
  int64_t ignore_index = -100;
};

struct LceInputs {
  at::Tensor hidden, weight, labels;
};

// T = 10 tokens (3 ignored), H = 16, V = 37.
LceInputs lce_inputs(const LceCase& c, uint64_t seed) {
  at::manual_seed(seed);
  LceInputs in;
  in.hidden = at::randn({10, 16}).to(c.dtype);
  in.weight = (at::randn({37, 16}) / 2).to(c.dtype);
  in.labels = at::randint(0, 37, {10}, at::kLong);
  in.labels[0].fill_(c.ignore_index);
  in.labels[5].fill_(c.ignore_index);
  in.labels[9].fill_(c.ignore_index);
  return in;
}

ops::LinearCrossEntropyArgs lce_args(const LceCase& c, const LceInputs& in) {
  ops::LinearCrossEntropyArgs a;
  a.hidden = in.hidden;
  a.weight = in.weight;
  a.labels = in.labels;
  a.ignore_index = c.ignore_index;
  a.reduction = c.reduction;
  a.chunk_size = c.chunk_size;
  a.return_per_token = true;
  return a;
}

class TorchLinearCrossEntropyTest : public ::testing::TestWithParam<LceCase> {};

TEST_P(TorchLinearCrossEntropyTest, MatchesFloat64Formula) {
  const LceCase& c = GetParam();
  const LceInputs in = lce_inputs(c, 40);
  const ops::LinearCrossEntropyResult r = ref::linear_cross_entropy(lce_args(c, in));
  ASSERT_EQ(r.loss.dim(), 0);
  ASSERT_EQ(r.loss.scalar_type(), at::kFloat);
  ASSERT_EQ(r.per_token.scalar_type(), at::kFloat);
  const at::Tensor logits = logits64(in.hidden, in.weight, c.dtype);
  const Tolerance tol = c.dtype == at::kFloat ? Tolerance{1e-5, 1e-5} : Tolerance{1e-4, 1e-4};
  EXPECT_TRUE(close(r.loss, naive_loss(logits, in.labels, c.ignore_index, c.reduction), tol));
  EXPECT_TRUE(close(r.per_token, naive_per_token(logits, in.labels, c.ignore_index), tol));
  EXPECT_EQ(r.per_token[5].item<float>(), 0.0f);
}

TEST_P(TorchLinearCrossEntropyTest, GradientsMatchFloat64Autograd) {
  const LceCase& c = GetParam();
  const LceInputs in = lce_inputs(c, 41);
  LceInputs g = in;
  g.hidden = in.hidden.clone().requires_grad_(true);
  g.weight = in.weight.clone().requires_grad_(true);
  const ops::LinearCrossEntropyResult r = ref::linear_cross_entropy(lce_args(c, g));
  EXPECT_FALSE(r.per_token.requires_grad());
  const auto grads = torch::autograd::grad({r.loss * 1.7}, {g.hidden, g.weight});

  at::Tensor h64 = in.hidden.to(at::kDouble).requires_grad_(true);
  at::Tensor w64 = in.weight.to(at::kDouble).requires_grad_(true);
  // bf16: the formula rounds the logits as HF does, and autograd through that rounding rounds
  // dlogits to bf16 too; what remains is the rounding of the two gradient GEMMs' outputs.
  const at::Tensor loss64 =
      naive_loss(logits64(h64, w64, c.dtype), in.labels, c.ignore_index, c.reduction);
  const auto expected = torch::autograd::grad({loss64 * 1.7}, {h64, w64});
  const Tolerance tol = c.dtype == at::kFloat ? Tolerance{1e-5, 1e-5} : Tolerance{1e-2, 1e-2};
  EXPECT_EQ(grads[0].scalar_type(), c.dtype);
  EXPECT_EQ(grads[1].scalar_type(), c.dtype);
  EXPECT_TRUE(close(grads[0], expected[0], tol)) << "dhidden";
  EXPECT_TRUE(close(grads[1], expected[1], tol)) << "dweight";
}

INSTANTIATE_TEST_SUITE_P(
    Cases, TorchLinearCrossEntropyTest,
    ::testing::Values(LceCase{"MeanFp32Chunk3", at::kFloat, ops::LossReduction::kMean, 3},
                      LceCase{"SumFp32Chunk4", at::kFloat, ops::LossReduction::kSum, 4},
                      LceCase{"MeanFp32OneChunk", at::kFloat, ops::LossReduction::kMean, 0},
                      LceCase{"SumFp32IgnoreMinus1", at::kFloat, ops::LossReduction::kSum, 1, -1},
                      LceCase{"MeanBf16Chunk3", at::kBFloat16, ops::LossReduction::kMean, 3},
                      LceCase{"SumBf16OneChunk", at::kBFloat16, ops::LossReduction::kSum, 0}),
    [](const auto& info) { return info.param.name; });

TEST(TorchLinearCrossEntropyEdgeTest, AllIgnoredGivesZeroLossAndZeroGradient) {
  for (const auto reduction : {ops::LossReduction::kMean, ops::LossReduction::kSum}) {
    const LceCase c{"", at::kFloat, reduction, 3};
    LceInputs in = lce_inputs(c, 42);
    in.labels.fill_(-100);
    in.hidden.requires_grad_(true);
    in.weight.requires_grad_(true);
    const ops::LinearCrossEntropyResult r = ref::linear_cross_entropy(lce_args(c, in));
    EXPECT_EQ(r.loss.item<float>(), 0.0f); // not NaN, as torch's mean over nothing would be
    const auto grads = torch::autograd::grad({r.loss}, {in.hidden, in.weight});
    EXPECT_TRUE(at::equal(grads[0], at::zeros_like(in.hidden)));
    EXPECT_TRUE(at::equal(grads[1], at::zeros_like(in.weight)));
  }
}

TEST(TorchLinearCrossEntropyEdgeTest, ChunkSizeDoesNotChangeTheResult) {
  const LceCase c{"", at::kFloat, ops::LossReduction::kMean, 0};
  const LceInputs in = lce_inputs(c, 43);
  ops::LinearCrossEntropyArgs a = lce_args(c, in);
  const at::Tensor whole = ref::linear_cross_entropy(a).per_token;
  for (int64_t chunk : {1, 3, 7, 10, 64}) {
    a.chunk_size = chunk;
    EXPECT_TRUE(close(ref::linear_cross_entropy(a).per_token, whole, {1e-6, 1e-6})) << chunk;
  }
}

// The backward chunks along the longer dimension: vocabulary slices when V >= T (the cases
// above, V = 37 > T = 10), token chunks when T > V (here T = 40 > V = 9). Both agree with float64
// autograd and with each other across chunk sizes.
TEST(TorchLinearCrossEntropyEdgeTest, GradientsWhetherChunkedByTokensOrByVocabulary) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const auto& [tokens, vocab] : {std::pair<int64_t, int64_t>{40, 9}, {9, 40}}) {
      at::manual_seed(47);
      const at::Tensor hidden = at::randn({tokens, 16}).to(dtype);
      const at::Tensor weight = (at::randn({vocab, 16}) / 2).to(dtype);
      at::Tensor labels = at::randint(0, vocab, {tokens}, at::kLong);
      labels[1].fill_(-100);
      at::Tensor h64 = hidden.to(at::kDouble).requires_grad_(true);
      at::Tensor w64 = weight.to(at::kDouble).requires_grad_(true);
      const at::Tensor loss64 =
          naive_loss(logits64(h64, w64, dtype), labels, -100, ops::LossReduction::kMean);
      const auto expected = torch::autograd::grad({loss64}, {h64, w64});
      const Tolerance tol = dtype == at::kFloat ? Tolerance{1e-5, 1e-5} : Tolerance{1e-2, 1e-2};
      for (int64_t chunk : {0, 1, 3, 7}) {
        ops::LinearCrossEntropyArgs a;
        a.hidden = hidden.clone().requires_grad_(true);
        a.weight = weight.clone().requires_grad_(true);
        a.labels = labels;
        a.chunk_size = chunk;
        const auto grads =
            torch::autograd::grad({ref::linear_cross_entropy(a).loss}, {a.hidden, a.weight});
        const std::string what =
            fmt::format("T {} V {} chunk {} {}", tokens, vocab, chunk, c10::toString(dtype));
        EXPECT_TRUE(close(grads[0], expected[0], tol)) << "dhidden, " << what;
        EXPECT_TRUE(close(grads[1], expected[1], tol)) << "dweight, " << what;
      }
    }
  }
}

TEST(TorchLinearCrossEntropyEdgeTest, PerTokenOnlyWhenRequested) {
  const LceCase c{"", at::kFloat, ops::LossReduction::kSum, 0};
  const LceInputs in = lce_inputs(c, 44);
  ops::LinearCrossEntropyArgs a = lce_args(c, in);
  a.return_per_token = false;
  const ops::LinearCrossEntropyResult r = ref::linear_cross_entropy(a);
  EXPECT_TRUE(r.loss.defined());
  EXPECT_FALSE(r.per_token.defined());
}

TEST(TorchLinearCrossEntropyEdgeTest, MatchesTorchCrossEntropyOfFloatLogits) {
  // HF's ForCausalLMLoss after the shift: cross_entropy(logits.float(), labels, ignore_index).
  const LceCase c{"", at::kBFloat16, ops::LossReduction::kMean, 4};
  const LceInputs in = lce_inputs(c, 45);
  const at::Tensor hf = at::cross_entropy_loss(at::matmul(in.hidden, in.weight.t()).to(at::kFloat),
                                               in.labels, {}, at::Reduction::Mean, -100);
  EXPECT_TRUE(close(ref::linear_cross_entropy(lce_args(c, in)).loss, hf, {1e-6, 1e-6}));
}

TEST(TorchLinearCrossEntropyEdgeTest, NoTokensGivesZero) {
  ops::LinearCrossEntropyArgs a;
  a.hidden = at::zeros({0, 8});
  a.weight = at::randn({5, 8});
  a.labels = at::zeros({0}, at::kLong);
  EXPECT_EQ(ref::linear_cross_entropy(a).loss.item<float>(), 0.0f);
}

TEST(TorchLinearCrossEntropyEdgeTest, RunsUnderInferenceMode) {
  const LceCase c{"", at::kFloat, ops::LossReduction::kMean, 3};
  const LceInputs in = lce_inputs(c, 46);
  const at::Tensor expected = ref::linear_cross_entropy(lce_args(c, in)).loss;
  const c10::InferenceMode inference;
  EXPECT_TRUE(at::equal(ref::linear_cross_entropy(lce_args(c, in)).loss, expected));
}

} // namespace
} // namespace kiln
