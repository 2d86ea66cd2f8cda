// The torch reference kernels on CUDA against their own CPU results (the CPU results are checked
// against float64 formulas in kiln-ops-test): attention, moe_route, moe_experts (both the
// at::_grouped_mm strategy, bfloat16, and the per-expert loop), linear_cross_entropy,
// gated_rms_norm, causal_conv1d and mamba2_scan, forward and gradients; a 32K-token attention
// forward + backward whose [T, T] score matrices alone would need 128 GiB, so it only fits when the
// kernel really works in chunks; and the Mamba2 scan at Nemotron-3-Nano width over 8K tokens with
// a bound on its peak memory. Every test skips itself where no GPU is present.
#include "kernels.h"
#include "op_test_util.h"

#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <string>
#include <vector>

namespace kiln {
namespace {

namespace ref = backends::torch_ref;
using test::close;
using test::Tolerance;

class TorchCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no GPU";
  }
};

const c10::Device kCuda(c10::DeviceType::CUDA, 0);

// CUDA and CPU accumulate in different orders; bfloat16 outputs may then round one ulp apart.
Tolerance cuda_vs_cpu(at::ScalarType dtype) {
  return dtype == at::kFloat ? Tolerance{1e-4, 1e-5} : Tolerance{2e-2, 2e-2};
}

// Runs `f` on CPU tensors and on CUDA copies of them; returns {cpu outputs, cuda outputs} where
// the outputs are the forward results followed by the gradients of sum(out * probe) w.r.t.
// `inputs` (the float tensors that require grad).
template <class F>
std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> on_both(
    const std::vector<at::Tensor>& inputs, F f) {
  auto run = [&](c10::Device device) {
    std::vector<at::Tensor> xs;
    for (const at::Tensor& t : inputs) xs.push_back(t.to(device).requires_grad_(true));
    const at::Tensor out = f(xs);
    at::manual_seed(99);
    const at::Tensor probe = at::randn(out.sizes(), at::kDouble).to(device);
    std::vector<at::Tensor> result{out.detach()};
    for (const at::Tensor& g : torch::autograd::grad({(out.to(at::kDouble) * probe).sum()}, xs)) {
      result.push_back(g);
    }
    return result;
  };
  return {run(at::kCPU), run(kCuda)};
}

void expect_all_close(const std::vector<at::Tensor>& cpu, const std::vector<at::Tensor>& cuda,
                      Tolerance tol) {
  ASSERT_EQ(cpu.size(), cuda.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_TRUE(cuda[i].is_cuda()) << "output " << i;
    EXPECT_TRUE(close(cuda[i], cpu[i], tol)) << "output " << i << " (0 = forward, then grads)";
  }
}

// ---- attention ----------------------------------------------------------------------------------

TEST_F(TorchCudaTest, AttentionBshdMatchesCpu) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    at::manual_seed(1);
    const std::vector<at::Tensor> qkv = {at::randn({2, 9, 6, 16}).to(dtype),
                                         at::randn({2, 12, 2, 16}).to(dtype),
                                         at::randn({2, 12, 2, 16}).to(dtype)};
    const auto [cpu, cuda] = on_both(qkv, [](const std::vector<at::Tensor>& t) {
      ops::AttentionArgs a;
      a.q = t[0];
      a.k = t[1];
      a.v = t[2];
      a.softmax_scale = 0.25;
      return ref::detail::attention_chunked(a, 4);
    });
    expect_all_close(cpu, cuda, cuda_vs_cpu(dtype));
  }
}

TEST_F(TorchCudaTest, AttentionThdMatchesCpu) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    at::manual_seed(2);
    const std::vector<at::Tensor> qkv = {at::randn({18, 4, 16}).to(dtype),
                                         at::randn({18, 1, 16}).to(dtype),
                                         at::randn({18, 1, 16}).to(dtype)};
    const at::Tensor cu = at::tensor({0, 5, 6, 15, 18}, at::kInt);
    const auto [cpu, cuda] = on_both(qkv, [&](const std::vector<at::Tensor>& t) {
      ops::AttentionArgs a;
      a.q = t[0];
      a.k = t[1];
      a.v = t[2];
      a.cu_seqlens = cu.to(t[0].device());
      a.max_seqlen = 9;
      a.softmax_scale = 0.25;
      return ref::detail::attention_chunked(a, 4);
    });
    expect_all_close(cpu, cuda, cuda_vs_cpu(dtype));
  }
}

TEST_F(TorchCudaTest, Attention32kTokensRunsInChunks) {
  // B=1, S=32768, 32 query heads on 8 kv heads, D=64, bf16: one fp32 [S, S] score matrix per
  // head is 4 GiB, 128 GiB for all heads; the chunked kernel stays under ~2 GiB beyond its inputs
  // (the formula in attention.cpp).
  at::manual_seed(3);
  const int64_t s = 32768;
  const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  at::Tensor q = at::randn({1, s, 32, 64}, opts).requires_grad_(true);
  at::Tensor k = at::randn({1, s, 8, 64}, opts).requires_grad_(true);
  at::Tensor v = at::randn({1, s, 8, 64}, opts).requires_grad_(true);
  ops::AttentionArgs a;
  a.q = q;
  a.k = k;
  a.v = v;
  a.softmax_scale = 0.125;
  const at::Tensor out = ref::attention(a);
  const auto grads = torch::autograd::grad({out.to(at::kFloat).sum()}, {q, k, v});
  EXPECT_TRUE(out.isfinite().all().item<bool>());
  for (const at::Tensor& g : grads) EXPECT_TRUE(g.isfinite().all().item<bool>());
  // The first query attends only to itself; the last token's row matches a direct computation.
  EXPECT_TRUE(at::equal(out[0][0], v[0][0].repeat_interleave(4, 0)));
  const at::Tensor q_last = q[0][s - 1].to(at::kFloat).view({8, 4, 64});  // [Hkv, G, D]
  const at::Tensor keys = k[0].to(at::kFloat).permute({1, 2, 0});         // [Hkv, D, S]
  const at::Tensor p = at::softmax(at::matmul(q_last, keys) * 0.125, -1); // [Hkv, G, S]
  const at::Tensor expected =
      at::matmul(p.to(at::kBFloat16), v[0].permute({1, 0, 2})).view({32, 64}); // [Hq, Dv]
  EXPECT_TRUE(close(out[0][s - 1], expected, {2e-2, 2e-2}));
}

TEST_F(TorchCudaTest, AttentionMatchesTorchSdpaLikeHf) {
  // HF's default attention on CUDA: sdpa with is_causal (flash kernel for bf16), GQA through
  // enable_gqa. Forward and gradients agree to bf16 rounding.
  at::manual_seed(8);
  const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  const at::Tensor q0 = at::randn({2, 300, 8, 64}, opts);
  const at::Tensor k0 = at::randn({2, 300, 2, 64}, opts);
  const at::Tensor v0 = at::randn({2, 300, 2, 64}, opts);
  const at::Tensor probe = at::randn({2, 300, 8, 64}, opts.dtype(at::kFloat));
  auto grads_of = [&](bool sdpa) {
    at::Tensor q = q0.clone().requires_grad_(true);
    at::Tensor k = k0.clone().requires_grad_(true);
    at::Tensor v = v0.clone().requires_grad_(true);
    at::Tensor out;
    if (sdpa) {
      out =
          at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           {}, 0.0, /*is_causal=*/true, 0.125, /*enable_gqa=*/true)
              .transpose(1, 2);
    } else {
      ops::AttentionArgs a;
      a.q = q;
      a.k = k;
      a.v = v;
      a.softmax_scale = 0.125;
      out = ref::detail::attention_chunked(a, 128);
    }
    std::vector<at::Tensor> r{out.detach()};
    for (const at::Tensor& g :
         torch::autograd::grad({(out.to(at::kFloat) * probe).sum()}, {q, k, v})) {
      r.push_back(g);
    }
    return r;
  };
  expect_all_close(grads_of(true), grads_of(false), {2e-2, 2e-2});
}

// ---- moe_route ----------------------------------------------------------------------------------

TEST_F(TorchCudaTest, MoeRouteMatchesCpu) {
  at::manual_seed(4);
  ops::MoeRouteArgs a;
  a.logits = at::randn({64, 32});
  a.e_score_correction_bias = 0.1 * at::randn({32});
  a.top_k = 4;
  a.n_group = 4;
  a.topk_group = 2;
  a.routed_scaling_factor = 2.5;
  ops::MoeRouteArgs g = a;
  g.logits = a.logits.to(kCuda).requires_grad_(true);
  g.e_score_correction_bias = a.e_score_correction_bias.to(kCuda);
  ops::MoeRouteArgs c = a;
  c.logits = a.logits.clone().requires_grad_(true);
  const ops::MoeRouteResult on_gpu = ref::moe_route(g);
  const ops::MoeRouteResult on_cpu = ref::moe_route(c);
  // Slot order is unspecified: compare rows sorted by expert.
  const auto [gpu_idx, gpu_perm] = on_gpu.indices.cpu().sort(-1);
  const auto [cpu_idx, cpu_perm] = on_cpu.indices.sort(-1);
  ASSERT_TRUE(at::equal(gpu_idx, cpu_idx));
  EXPECT_TRUE(close(on_gpu.weights.cpu().gather(1, gpu_perm), on_cpu.weights.gather(1, cpu_perm),
                    {1e-6, 1e-6}));
  const at::Tensor probe = at::randn({64, 4});
  const at::Tensor dg = torch::autograd::grad(
      {(on_gpu.weights.cpu().gather(1, gpu_perm) * probe).sum()}, {g.logits})[0];
  const at::Tensor dc =
      torch::autograd::grad({(on_cpu.weights.gather(1, cpu_perm) * probe).sum()}, {c.logits})[0];
  EXPECT_TRUE(close(dg, dc, {1e-5, 1e-6}));
}

// ---- moe_experts --------------------------------------------------------------------------------

struct ExpertsProblem {
  at::Tensor x, w_up, w_down, indices, weights;
};

// N tokens, k = 4 slots over E = 8 experts, some slots empty, one expert unused.
ExpertsProblem experts_problem(int64_t h, int64_t inter, at::ScalarType dtype, bool gated) {
  at::manual_seed(5);
  const int64_t n = 96, k = 4, e = 8;
  ExpertsProblem p;
  p.x = at::randn({n, h}).to(dtype);
  p.w_up = (at::randn({e, gated ? 2 * inter : inter, h}) / std::sqrt(h)).to(dtype);
  p.w_down = (at::randn({e, h, inter}) / std::sqrt(inter)).to(dtype);
  p.indices = at::argsort(at::rand({n, e - 1}), /*dim=*/-1, /*descending=*/false)
                  .narrow(1, 0, k)
                  .contiguous(); // expert 7 idle
  p.indices.narrow(0, 0, 10).select(1, 3).fill_(-1);
  p.indices[20].fill_(-1);
  p.weights = at::rand({n, k});
  return p;
}

ops::MoeExpertsArgs experts_args(const std::vector<at::Tensor>& t, const at::Tensor& indices,
                                 ops::MoeActivation act) {
  return {t[0], t[1], t[2], indices.to(t[0].device()), t[3], act};
}

TEST_F(TorchCudaTest, MoeExpertsGroupedMmStrategyIsChosenAndMatchesTheLoop) {
  const ExpertsProblem p = experts_problem(64, 32, at::kBFloat16, true);
  const std::vector<at::Tensor> inputs = {p.x, p.w_up, p.w_down, p.weights};
  auto run = [&](bool grouped) {
    std::vector<at::Tensor> xs;
    for (const at::Tensor& t : inputs) xs.push_back(t.to(kCuda).requires_grad_(true));
    const ops::MoeExpertsArgs a = experts_args(xs, p.indices, ops::MoeActivation::kSwiGlu);
    EXPECT_TRUE(ref::detail::moe_experts_can_group(a));
    const at::Tensor out =
        grouped ? ref::detail::moe_experts_grouped(a) : ref::detail::moe_experts_looped(a);
    at::manual_seed(7);
    const at::Tensor probe = at::randn(out.sizes(), at::kDouble).to(kCuda);
    std::vector<at::Tensor> r{out.detach()};
    for (const at::Tensor& g : torch::autograd::grad({(out.to(at::kDouble) * probe).sum()}, xs)) {
      r.push_back(g);
    }
    return r;
  };
  // Same bf16 GEMMs with fp32 accumulation; different kernels may round an element differently.
  expect_all_close(run(false), run(true), {2e-2, 2e-2});
}

TEST_F(TorchCudaTest, MoeExpertsMatchCpu) {
  struct Case {
    at::ScalarType dtype;
    ops::MoeActivation act;
    int64_t h, inter;
    bool grouped; // whether CUDA takes the _grouped_mm strategy
  };
  for (const Case& c : {Case{at::kBFloat16, ops::MoeActivation::kSwiGlu, 64, 32, true},
                        Case{at::kBFloat16, ops::MoeActivation::kRelu2, 64, 32, true},
                        Case{at::kBFloat16, ops::MoeActivation::kSwiGlu, 64, 12, false},
                        Case{at::kFloat, ops::MoeActivation::kSwiGlu, 32, 16, false},
                        Case{at::kFloat, ops::MoeActivation::kRelu2, 32, 16, false}}) {
    SCOPED_TRACE(::testing::Message() << c10::toString(c.dtype) << " act "
                                      << static_cast<int>(c.act) << " I " << c.inter);
    const ExpertsProblem p =
        experts_problem(c.h, c.inter, c.dtype, c.act == ops::MoeActivation::kSwiGlu);
    {
      std::vector<at::Tensor> xs = {p.x.to(kCuda), p.w_up.to(kCuda), p.w_down.to(kCuda),
                                    p.weights.to(kCuda)};
      EXPECT_EQ(ref::detail::moe_experts_can_group(experts_args(xs, p.indices, c.act)), c.grouped);
    }
    const auto [cpu, cuda] =
        on_both({p.x, p.w_up, p.w_down, p.weights}, [&](const std::vector<at::Tensor>& t) {
          return ref::moe_experts(experts_args(t, p.indices, c.act));
        });
    expect_all_close(cpu, cuda, cuda_vs_cpu(c.dtype));
    EXPECT_TRUE(at::equal(cuda[0][20].cpu(), at::zeros({c.h}, c.dtype))); // all slots empty
  }
}

// ---- linear_cross_entropy -----------------------------------------------------------------------

TEST_F(TorchCudaTest, LinearCrossEntropyMatchesCpu) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const auto reduction : {ops::LossReduction::kMean, ops::LossReduction::kSum}) {
      at::manual_seed(6);
      const at::Tensor labels = at::randint(0, 211, {50}, at::kLong)
                                    .index_fill_(0, at::tensor({0, 7, 49}, at::kLong), -100);
      const std::vector<at::Tensor> inputs = {at::randn({50, 32}).to(dtype),
                                              (at::randn({211, 32}) / 4).to(dtype)};
      const auto [cpu, cuda] = on_both(inputs, [&](const std::vector<at::Tensor>& t) {
        ops::LinearCrossEntropyArgs a;
        a.hidden = t[0];
        a.weight = t[1];
        a.labels = labels.to(t[0].device());
        a.reduction = reduction;
        a.chunk_size = 16;
        return ref::linear_cross_entropy(a).loss;
      });
      expect_all_close(cpu, cuda, cuda_vs_cpu(dtype));
    }
  }
}

// ---- Mamba2 ops: gated_rms_norm, causal_conv1d, mamba2_scan -----------------------------------

TEST_F(TorchCudaTest, GatedRmsNormMatchesCpu) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    at::manual_seed(10);
    const std::vector<at::Tensor> inputs = {at::randn({3, 5, 32}).to(dtype),
                                            at::randn({3, 5, 32}).to(dtype),
                                            (1 + 0.1 * at::randn({32})).to(dtype)};
    const auto [cpu, cuda] = on_both(inputs, [](const std::vector<at::Tensor>& t) {
      return ref::gated_rms_norm({t[0], t[1], t[2], 8, 1e-5});
    });
    expect_all_close(cpu, cuda, cuda_vs_cpu(dtype));
  }
}

TEST_F(TorchCudaTest, CausalConv1dMatchesCpu) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const bool thd : {false, true}) {
      at::manual_seed(11);
      const std::vector<int64_t> cu = {0, 5, 6, 15, 18};
      const std::vector<at::Tensor> inputs = {
          (thd ? at::randn({18, 24}) : at::randn({2, 9, 24})).to(dtype),
          (0.5 * at::randn({24, 4})).to(dtype), (0.1 * at::randn({24})).to(dtype),
          at::randn({thd ? 4 : 2, 24, 3}).to(dtype)};
      const auto [cpu, cuda] = on_both(inputs, [&](const std::vector<at::Tensor>& t) {
        ops::CausalConv1dArgs a{.x = t[0], .weight = t[1], .bias = t[2], .initial_state = t[3]};
        if (thd) a.cu_seqlens = at::tensor(cu, at::kLong).to(at::kInt).to(t[0].device());
        return ref::causal_conv1d(a).out;
      });
      expect_all_close(cpu, cuda, cuda_vs_cpu(dtype));
    }
  }
}

TEST_F(TorchCudaTest, Mamba2ScanMatchesCpu) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const bool thd : {false, true}) {
      SCOPED_TRACE(::testing::Message() << c10::toString(dtype) << (thd ? " THD" : " BSHD"));
      at::manual_seed(12);
      const std::vector<int64_t> cu = {0, 7, 8, 25, 30};
      auto shape = [&](const std::vector<int64_t>& tail) {
        std::vector<int64_t> s = thd ? std::vector<int64_t>{30} : std::vector<int64_t>{2, 15};
        s.insert(s.end(), tail.begin(), tail.end());
        return s;
      };
      const std::vector<at::Tensor> inputs = {
          at::randn(shape({4, 8})).to(dtype), at::randn(shape({4})).to(dtype),
          -at::exp(0.5 * at::randn({4})),     at::randn(shape({2, 6})).to(dtype),
          at::randn(shape({2, 6})).to(dtype), at::randn({4}).to(dtype),
          (0.5 * at::randn({4})).to(dtype),   at::randn({thd ? 4 : 2, 4, 8, 6})};
      const auto [cpu, cuda] = on_both(inputs, [&](const std::vector<at::Tensor>& t) {
        ops::Mamba2ScanArgs a{
            .x = t[0], .dt = t[1], .A = t[2], .B = t[3], .C = t[4], .D = t[5], .dt_bias = t[6]};
        a.dt_min = 1e-3;
        a.chunk_size = 4;
        a.initial_states = t[7];
        a.return_final_states = true;
        if (thd) a.cu_seqlens = at::tensor(cu, at::kLong).to(at::kInt).to(t[0].device());
        const auto r = ref::detail::mamba2_scan_blocked(a, 2);
        return at::cat({r.y.flatten(), r.final_states.flatten()});
      });
      // float32 outputs either way; bf16 inputs only change dt' rounding, identically on both.
      expect_all_close(cpu, cuda,
                       dtype == at::kFloat ? Tolerance{1e-4, 1e-5} : Tolerance{1e-3, 1e-4});
    }
  }
}

TEST_F(TorchCudaTest, Mamba2ScanAtNanoWidthRunsInChunks) {
  // Nemotron-3-Nano's scan (64 heads x 64, state 128, 8 groups, chunk 128) over 8192 tokens, bf16,
  // forward + backward. One fp32 [L, L] decay matrix per head would be 16 GiB for the 64 heads
  // (HF's torch path builds [chunks, Q, Q, H, N] products of 34 GiB); the blocked reference stays
  // far below (the formula in mamba2_scan.cpp).
  at::manual_seed(13);
  const int64_t s = 8192;
  const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  at::Tensor x = at::randn({1, s, 64, 64}, opts).requires_grad_(true);
  at::Tensor dt = (at::randn({1, s, 64}, opts) - 2).requires_grad_(true);
  at::Tensor b = at::randn({1, s, 8, 128}, opts).requires_grad_(true);
  at::Tensor c = at::randn({1, s, 8, 128}, opts).requires_grad_(true);
  const at::Tensor a = -at::exp(at::rand({64}, opts.dtype(at::kFloat)) * 3);
  c10::cuda::CUDACachingAllocator::emptyCache();
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  ops::Mamba2ScanArgs args{.x = x, .dt = dt, .A = a, .B = b, .C = c};
  args.dt_min = 1e-3;
  const at::Tensor y = ref::mamba2_scan(args).y;
  const auto grads = torch::autograd::grad({(y * y).mean()}, {x, dt, b, c});
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  const double peak_gib =
      static_cast<double>(
          stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
              .peak) /
      (1024.0 * 1024 * 1024);
  EXPECT_LT(peak_gib, 8.0);
  EXPECT_TRUE(y.isfinite().all().item<bool>());
  for (const at::Tensor& g : grads) EXPECT_TRUE(g.isfinite().all().item<bool>());
  // Another chunking of the same recurrence gives the same result.
  args.chunk_size = 64;
  EXPECT_TRUE(close(ref::mamba2_scan(args).y, y.detach(), {1e-3, 1e-3}));
}

} // namespace
} // namespace kiln
