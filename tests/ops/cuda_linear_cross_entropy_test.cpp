// The cuda backend's linear_cross_entropy (cuBLAS GEMMs, the row kernels of cross_entropy.cu,
// gradients formed in the forward pass) against the torch reference: the same bf16 inputs through
// ops::linear_cross_entropy with each backend forced strictly, then the loss, the per-token losses
// and the gradients of hidden and weight of (loss * upstream).backward(). Both round the logits and
// dlogits to bf16; their GEMMs may differ in summation order, and the cuda backend rounds dweight
// once per chunk of tokens: loss and per-token losses within 2e-3 of max |torch|, gradients
// within 2e-2 of max |torch| (bf16). Shapes: an LM head with ignored tokens, mean and sum, a
// vocabulary below the token count, odd widths (the row kernels' element-wise path), many chunks
// (chunk_size: dweight summed over up to 5), every label ignored, a frozen weight, an upstream
// gradient other than 1, no-grad calls, and GLM-5's width (H 6144, V 154880). Every test skips
// itself without a GPU.
#include "kiln/sdk/ops.h"
#include "support/cuda_op_test.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
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

using CudaLinearCrossEntropyTest = test::CudaOpTest;

struct Problem {
  at::Tensor hidden, weight, labels; // bf16 [T, H], bf16 [V, H], int64 [T] on the GPU
  ops::LossReduction reduction = ops::LossReduction::kMean;
  int64_t chunk_size = 0;
  double upstream = 1.0; // d(loss) of the backward pass
  bool weight_grad = true;
};

// T tokens, H wide, V entries; every `ignore_every`-th label (0: none) is ignore_index.
Problem make_problem(int64_t t, int64_t h, int64_t v, int64_t ignore_every, uint64_t seed) {
  at::manual_seed(seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(kCuda);
  Problem p;
  p.hidden = at::randn({t, h}, f32).to(at::kBFloat16);
  p.weight = (at::randn({v, h}, f32) * (2.0 / std::sqrt(static_cast<double>(h)))).to(at::kBFloat16);
  p.labels = at::randint(0, v, {t}, f32.dtype(at::kLong));
  if (ignore_every > 0) p.labels.index_put_({at::indexing::Slice(0, t, ignore_every)}, -100);
  return p;
}

struct Outputs {
  at::Tensor loss, per_token, d_hidden, d_weight;
};

Outputs run_backend(const Problem& p, const std::string& backend, bool with_grad = true) {
  sdk::Dispatcher::global().configure({.default_backend = backend, .strict = true});
  const at::Tensor hidden = p.hidden.detach().requires_grad_(with_grad);
  const at::Tensor weight = p.weight.detach().requires_grad_(with_grad && p.weight_grad);
  Outputs o;
  {
    const c10::AutoGradMode grad_mode(with_grad);
    const ops::LinearCrossEntropyResult r = ops::linear_cross_entropy({.hidden = hidden,
                                                                       .weight = weight,
                                                                       .labels = p.labels,
                                                                       .reduction = p.reduction,
                                                                       .chunk_size = p.chunk_size,
                                                                       .return_per_token = true});
    o.loss = r.loss.detach();
    o.per_token = r.per_token.detach();
    if (with_grad) {
      std::vector<at::Tensor> inputs{hidden};
      if (p.weight_grad) inputs.push_back(weight);
      const auto grads = torch::autograd::grad({r.loss * p.upstream}, inputs);
      o.d_hidden = grads[0];
      if (p.weight_grad) o.d_weight = grads[1];
    }
  }
  test::expect_ran_on("linear_cross_entropy", backend);
  return o;
}

void expect_backends_agree(const Problem& p, bool with_grad = true) {
  const Outputs ref = run_backend(p, "torch", with_grad);
  const Outputs got = run_backend(p, kBackend, with_grad);
  EXPECT_TRUE(test::near_max(got.loss, ref.loss, 2e-3, 1e-3)) << "loss";
  EXPECT_TRUE(test::near_max(got.per_token, ref.per_token, 2e-3, 1e-3)) << "per-token losses";
  if (!with_grad) return;
  EXPECT_TRUE(test::near_max(got.d_hidden, ref.d_hidden, 2e-2, 1e-12)) << "d hidden";
  if (p.weight_grad)
    EXPECT_TRUE(test::near_max(got.d_weight, ref.d_weight, 2e-2, 1e-12)) << "d weight";
}

TEST_F(CudaLinearCrossEntropyTest, LmHeadMeanWithIgnoredTokens) {
  expect_backends_agree(make_problem(37, 64, 1000, 5, 1)); // V >= T: vocabulary slices
}

TEST_F(CudaLinearCrossEntropyTest, LmHeadSum) {
  Problem p = make_problem(64, 128, 4096, 7, 2);
  p.reduction = ops::LossReduction::kSum;
  expect_backends_agree(p);
}

TEST_F(CudaLinearCrossEntropyTest, SmallVocabularyInTokenChunks) {
  Problem p = make_problem(300, 64, 256, 9, 3); // V < T: token chunks, dweight summed
  p.chunk_size = 64;
  expect_backends_agree(p);
}

TEST_F(CudaLinearCrossEntropyTest, OddWidthsAndManySlices) {
  Problem p = make_problem(37, 40, 1001, 4, 4); // rows of 1001: the element-wise path
  p.chunk_size = 16;                            // three vocabulary slices in backward
  expect_backends_agree(p);
  Problem q = make_problem(203, 24, 97, 0, 5); // token chunks of odd width
  q.chunk_size = 50;
  expect_backends_agree(q);
}

TEST_F(CudaLinearCrossEntropyTest, EveryLabelIgnoredGivesZero) {
  Problem p = make_problem(16, 32, 512, 1, 6);
  const Outputs got = run_backend(p, kBackend);
  EXPECT_EQ(got.loss.item<float>(), 0.f);
  EXPECT_EQ(got.d_hidden.abs().max().item<float>(), 0.f);
  EXPECT_EQ(got.d_weight.abs().max().item<float>(), 0.f);
}

TEST_F(CudaLinearCrossEntropyTest, FrozenWeightAndUpstreamGradient) {
  Problem p = make_problem(48, 64, 2048, 6, 7);
  p.weight_grad = false;
  p.upstream = 3.5;
  expect_backends_agree(p);
  p.weight_grad = true;
  p.upstream = 0.25;
  expect_backends_agree(p);
}

TEST_F(CudaLinearCrossEntropyTest, WithoutGradient) {
  expect_backends_agree(make_problem(100, 64, 3000, 8, 8), /*with_grad=*/false);
}

TEST_F(CudaLinearCrossEntropyTest, Glm5Width) {
  // Rows of 154,880 logits: the forward's 16-byte path over whole rows, many CTAs per chunk.
  expect_backends_agree(make_problem(512, 6144, 154880, 10, 9));
}

} // namespace
} // namespace kiln
