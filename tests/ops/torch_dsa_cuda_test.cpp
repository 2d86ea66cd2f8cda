// The DSA reference kernels on CUDA: indexer_topk and sparse_mla (forward and gradients) against
// their CPU results (checked against float64 formulas in kiln-ops-test), and both at 32K tokens
// with GLM-5 shapes, which only fits on one GPU because they work in query chunks: the indexer's
// full [T, H_I, T] float32 products would take 128 GiB and sparse_mla's gather of every query's
// 2048 latent rows 72 GiB (bf16) plus 144 GiB (float32). Every test skips itself without a GPU.
#include "kernels.h"
#include "op_test_util.h"

#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <vector>

namespace kiln {
namespace {

namespace ref = backends::torch_ref;
using test::close;
using test::Tolerance;

const c10::Device kCuda(c10::DeviceType::CUDA, 0);

class TorchDsaCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no GPU";
  }
};

ops::IndexerTopkArgs indexer_args(at::ScalarType dtype, c10::Device device) {
  at::manual_seed(50);
  ops::IndexerTopkArgs a;
  a.index_q = at::randn({40, 4, 32}).to(dtype).to(device);
  a.index_k = at::randn({40, 32}).to(dtype).to(device);
  a.head_weights = (0.2 * at::randn({40, 4})).to(device);
  a.cu_seqlens = at::tensor({0, 17, 18, 40}, at::kInt).to(device);
  a.topk = 6;
  return a;
}

TEST_F(TorchDsaCudaTest, IndexerTopkMatchesCpu) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const at::Tensor cpu = ref::indexer_topk(indexer_args(dtype, at::kCPU));
    const at::Tensor gpu = ref::detail::indexer_topk_chunked(indexer_args(dtype, kCuda), 7);
    ASSERT_TRUE(gpu.is_cuda());
    // Slot order is unspecified: compare each row's keys sorted.
    EXPECT_TRUE(at::equal(std::get<0>(gpu.cpu().sort(-1)), std::get<0>(cpu.sort(-1))))
        << c10::toString(dtype);
  }
}

TEST_F(TorchDsaCudaTest, SparseMlaMatchesCpuWithGradients) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    at::manual_seed(51);
    const int64_t t = 24, h = 4, latent = 32, rope = 16, dv = 16, k = 6;
    const at::Tensor q = at::randn({t, h, latent + rope}).to(dtype);
    const at::Tensor kv = at::randn({t, 1, latent + rope}).to(dtype);
    const at::Tensor w_vc = (0.2 * at::randn({h, dv, latent})).to(dtype);
    at::Tensor idx = at::full({t, 1, k}, -1, at::kInt);
    for (int64_t i = 0; i < t; ++i) { // causal: up to k of the keys 0..i
      const at::Tensor keys = at::randperm(i + 1, at::kLong).narrow(0, 0, std::min(k, i + 1));
      idx[i][0].narrow(0, 0, keys.size(0)).copy_(keys);
    }
    const at::Tensor probe = at::randn({t, h, dv}, at::kDouble);
    auto run = [&](c10::Device device) {
      std::vector<at::Tensor> xs = {q.to(device).requires_grad_(true),
                                    kv.to(device).requires_grad_(true),
                                    w_vc.to(device).requires_grad_(true)};
      ops::SparseMlaArgs a;
      a.q_absorbed = xs[0];
      a.kv_latent = xs[1];
      a.w_vc = xs[2];
      a.topk_indices = idx.to(device);
      a.softmax_scale = 0.125;
      const at::Tensor out = ref::detail::sparse_mla_chunked(a, 5);
      std::vector<at::Tensor> r{out.detach().cpu()};
      for (const at::Tensor& g :
           torch::autograd::grad({(out.to(at::kDouble) * probe.to(device)).sum()}, xs)) {
        r.push_back(g.cpu());
      }
      return r;
    };
    const auto cpu = run(at::kCPU);
    const auto gpu = run(kCuda);
    const Tolerance tol = dtype == at::kFloat ? Tolerance{1e-4, 1e-5} : Tolerance{3e-2, 3e-2};
    for (size_t i = 0; i < cpu.size(); ++i) {
      EXPECT_TRUE(close(gpu[i], cpu[i], tol)) << "output " << i << " " << c10::toString(dtype);
    }
  }
}

TEST_F(TorchDsaCudaTest, Glm5Shapes32kTokensRunInChunks) {
  const int64_t t = 32768, topk = 2048;
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  at::manual_seed(52);

  // Lightning indexer: H_I = 32, D_I = 128, one document.
  ops::IndexerTopkArgs ia;
  ia.index_q = at::randn({t, 32, 128}, bf16);
  ia.index_k = at::randn({t, 128}, bf16);
  ia.head_weights = at::rand({t, 32}, bf16.dtype(at::kFloat)) * (1.0 / std::sqrt(32.0 * 128.0));
  ia.cu_seqlens = at::tensor({0, static_cast<int>(t)}, at::kInt).to(kCuda);
  ia.topk = topk;
  const at::Tensor idx = ref::indexer_topk(ia);
  ia = {};
  ASSERT_EQ(idx.sizes(), (at::IntArrayRef{t, 1, topk}));
  const at::Tensor rows = idx.select(1, 0).to(at::kLong);
  const at::Tensor position = at::arange(t, rows.options()).unsqueeze(1);
  EXPECT_TRUE(((rows <= position) & (rows >= -1)).all().item<bool>()) << "causal";
  const at::Tensor count = (rows >= 0).sum(-1);
  EXPECT_TRUE(at::equal(count, at::clamp_max(position.squeeze(1) + 1, topk))) << "min(topk, i+1)";

  // Sparse MLA on those selections: H = 64, kv_lora 512 + rope 64, v_head 256; fwd + bwd.
  at::Tensor q = at::randn({t, 64, 576}, bf16).requires_grad_(true);
  at::Tensor kv = at::randn({t, 1, 576}, bf16).requires_grad_(true);
  at::Tensor w_vc = (at::randn({64, 256, 512}, bf16) * 0.05).requires_grad_(true);
  ops::SparseMlaArgs sa;
  sa.q_absorbed = q;
  sa.kv_latent = kv;
  sa.topk_indices = idx;
  sa.w_vc = w_vc;
  sa.softmax_scale = 1.0 / 16.0;
  const at::Tensor out = ref::sparse_mla(sa);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{t, 64, 256}));
  EXPECT_TRUE(out.isfinite().all().item<bool>());
  // The last query's output against a direct computation over its selected keys.
  const at::Tensor keys = rows[t - 1].masked_select(rows[t - 1] >= 0);
  const at::Tensor lat = kv.detach().select(1, 0).index_select(0, keys).to(at::kFloat); // [K,576]
  const at::Tensor p = at::softmax(at::matmul(q.detach()[t - 1].to(at::kFloat), lat.t()) / 16.0,
                                   -1);                      // [64, K]
  const at::Tensor o = at::matmul(p, lat.narrow(1, 0, 512)); // [64, 512]
  const at::Tensor expected = at::matmul(w_vc.detach().to(at::kFloat), o.unsqueeze(-1)).squeeze(-1);
  EXPECT_TRUE(close(out[t - 1], expected, {3e-2, 3e-2}));

  const auto grads = torch::autograd::grad({out.to(at::kFloat).sum()}, {q, kv, w_vc});
  for (const at::Tensor& g : grads) EXPECT_TRUE(g.isfinite().all().item<bool>());
}

} // namespace
} // namespace kiln
