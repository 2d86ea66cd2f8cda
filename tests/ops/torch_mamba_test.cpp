// The torch reference kernels of the Mamba2 mixer's ops against formulas written here in float64:
// gated_rms_norm (grouped, gate before the norm, HF's rounding order), causal_conv1d (a direct sum
// over the taps; THD documents each equal to their own run; the decode step equals the full
// convolution token by token) and mamba2_scan (a naive sequential recurrence over time; chunk and
// block boundaries of every kind; THD documents with their own initial and final states; the
// gradient against the recurrence's autograd and against finite differences of the op itself).
#include "kernels.h"
#include "op_test_util.h"

#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace kiln {
namespace {

namespace ref = backends::torch_ref;
using test::close;
using test::Tolerance;
using test::tolerance;

std::vector<int64_t> offsets(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> cu{0};
  for (int64_t len : lengths) cu.push_back(cu.back() + len);
  return cu;
}

at::Tensor int32_tensor(const std::vector<int64_t>& values) {
  return at::tensor(values, at::kLong).to(at::kInt);
}

// Inputs of `f` as leaves that require grad, and d(sum(f(inputs) * probes))/d(inputs).
std::vector<at::Tensor> gradients(
    const std::vector<at::Tensor>& inputs,
    const std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>& f,
    const std::vector<at::Tensor>& probes) {
  std::vector<at::Tensor> leaves;
  for (const at::Tensor& t : inputs) leaves.push_back(t.detach().clone().requires_grad_(true));
  const std::vector<at::Tensor> outs = f(leaves);
  at::Tensor loss = at::zeros({}, at::kDouble);
  for (size_t i = 0; i < outs.size(); ++i)
    loss = loss + (outs[i].to(at::kDouble) * probes[i]).sum();
  return torch::autograd::grad({loss}, leaves, {}, false, false, /*allow_unused=*/true);
}

// ---- gated_rms_norm -----------------------------------------------------------------------------

at::Tensor naive_gated_rms_norm(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& w,
                                int64_t group, double eps) {
  at::Tensor u = x.to(at::kDouble);
  if (gate.defined()) u = u * gate.to(at::kDouble) * at::sigmoid(gate.to(at::kDouble));
  std::vector<at::Tensor> parts;
  for (int64_t g0 = 0; g0 < u.size(-1); g0 += group) {
    const at::Tensor part = u.narrow(-1, g0, group);
    parts.push_back(part / at::sqrt(part.pow(2).mean(-1, true) + eps));
  }
  return at::cat(parts, -1) * w.to(at::kDouble);
}

TEST(TorchGatedRmsNormTest, MatchesFloat64FormulaPerGroup) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const int64_t group : {4, 8, 24}) {
      at::manual_seed(1);
      const at::Tensor x = at::randn({2, 5, 24}).to(dtype);
      const at::Tensor gate = at::randn({2, 5, 24}).to(dtype);
      const at::Tensor w = (1 + 0.1 * at::randn({24})).to(dtype);
      const at::Tensor y = ref::gated_rms_norm({x, gate, w, group, 1e-5});
      EXPECT_EQ(y.scalar_type(), dtype);
      EXPECT_TRUE(close(y, naive_gated_rms_norm(x, gate, w, group, 1e-5), tolerance(dtype)))
          << "group " << group;
      const at::Tensor plain = ref::gated_rms_norm({x, at::Tensor(), w, group, 1e-5});
      EXPECT_TRUE(
          close(plain, naive_gated_rms_norm(x, at::Tensor(), w, group, 1e-5), tolerance(dtype)));
    }
  }
}

TEST(TorchGatedRmsNormTest, Float32InputWithBf16WeightIsFloat32AsInHfPrefill) {
  // Nemotron-H prefill: the scan output is float32, the norm weight bf16; HF's result is float32
  // (the normalised value stays float32 and the bf16 weight promotes).
  at::manual_seed(2);
  const at::Tensor x = at::randn({3, 16});
  const at::Tensor gate = at::randn({3, 16}).to(at::kBFloat16);
  const at::Tensor w = (1 + 0.1 * at::randn({16})).to(at::kBFloat16);
  const at::Tensor y = ref::gated_rms_norm({x, gate, w, 8, 1e-5});
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  EXPECT_TRUE(close(y, naive_gated_rms_norm(x, gate, w, 8, 1e-5), {1e-6, 1e-6}));
}

TEST(TorchGatedRmsNormTest, Bf16RoundsBeforeTheWeightBitForBit) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({4, 16}).to(at::kBFloat16);
  const at::Tensor gate = at::randn({4, 16}).to(at::kBFloat16);
  const at::Tensor w = (1 + 0.1 * at::randn({16})).to(at::kBFloat16);
  // HF Zamba2RMSNormGated, step by step.
  const at::Tensor u = x.to(at::kFloat) * at::silu(gate.to(at::kFloat));
  const at::Tensor g = u.view({4, 2, 8});
  const at::Tensor n = (g * at::rsqrt(g.pow(2).mean(-1, true) + 1e-5)).view({4, 16});
  const at::Tensor hf = w * n.to(at::kBFloat16);
  EXPECT_TRUE(at::equal(ref::gated_rms_norm({x, gate, w, 8, 1e-5}), hf));
}

TEST(TorchGatedRmsNormTest, GradientsMatchFloat64Autograd) {
  at::manual_seed(4);
  const std::vector<at::Tensor> inputs = {at::randn({3, 12}, at::kDouble),
                                          at::randn({3, 12}, at::kDouble),
                                          1 + 0.1 * at::randn({12}, at::kDouble)};
  const std::vector<at::Tensor> probes = {at::randn({3, 12}, at::kDouble)};
  const auto ours = gradients(
      inputs,
      [](const std::vector<at::Tensor>& t) {
        return std::vector{ref::gated_rms_norm({t[0], t[1], t[2], 4, 1e-5})};
      },
      probes);
  const auto expected = gradients(
      inputs,
      [](const std::vector<at::Tensor>& t) {
        return std::vector{naive_gated_rms_norm(t[0], t[1], t[2], 4, 1e-5)};
      },
      probes);
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_TRUE(close(ours[i], expected[i], {1e-10, 1e-10})) << "input " << i;
  }
}

// ---- causal_conv1d ------------------------------------------------------------------------------

/// One sequence x [L, C] with its state [C, K-1] (oldest first): the definition, tap by tap.
at::Tensor naive_conv_sequence(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                               const at::Tensor& state, bool silu) {
  const int64_t len = x.size(0), c = x.size(1), k = w.size(1);
  const at::Tensor xp = at::cat({state.t(), x}, 0).to(at::kDouble); // [K-1+L, C]
  std::vector<at::Tensor> rows;
  for (int64_t t = 0; t < len; ++t) {
    at::Tensor acc = bias.defined() ? bias.to(at::kDouble) : at::zeros({c}, at::kDouble);
    for (int64_t j = 0; j < k; ++j) acc = acc + w.select(1, j).to(at::kDouble) * xp[t + j];
    rows.push_back(silu ? acc * at::sigmoid(acc) : acc);
  }
  return rows.empty() ? at::zeros({0, c}, at::kDouble) : at::stack(rows);
}

TEST(TorchCausalConv1dTest, BshdMatchesTheTapSum) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const bool with_state : {false, true}) {
      for (const bool silu : {false, true}) {
        at::manual_seed(5);
        const at::Tensor x = at::randn({2, 7, 6}).to(dtype);
        const at::Tensor w = (0.5 * at::randn({6, 4})).to(dtype);
        const at::Tensor bias = (0.1 * at::randn({6})).to(dtype);
        const at::Tensor state = at::randn({2, 6, 3}).to(dtype);
        ops::CausalConv1dArgs a{.x = x, .weight = w, .bias = bias};
        a.activation = silu ? ops::ConvActivation::kSilu : ops::ConvActivation::kNone;
        if (with_state) a.initial_state = state;
        a.return_final_state = true;
        const auto r = ref::causal_conv1d(a);
        ASSERT_EQ(r.out.scalar_type(), dtype);
        for (int64_t b = 0; b < 2; ++b) {
          const at::Tensor s = with_state ? state[b] : at::zeros({6, 3}, dtype);
          EXPECT_TRUE(
              close(r.out[b], naive_conv_sequence(x[b], w, bias, s, silu), tolerance(dtype)))
              << "dtype " << dtype << " state " << with_state << " silu " << silu;
          // The last K-1 inputs, oldest first.
          EXPECT_TRUE(at::equal(r.final_state[b], x[b].narrow(0, 4, 3).t()));
        }
      }
    }
  }
}

TEST(TorchCausalConv1dTest, ThdDocumentsEqualTheirOwnRuns) {
  // Lengths 0, 1 and 2 (shorter than K-1 = 3: the final state still holds initial-state columns).
  const std::vector<int64_t> lengths = {5, 0, 1, 2, 9};
  const std::vector<int64_t> cu = offsets(lengths);
  at::manual_seed(6);
  const at::Tensor x = at::randn({cu.back(), 6});
  const at::Tensor w = 0.5 * at::randn({6, 4});
  const at::Tensor bias = 0.1 * at::randn({6});
  const at::Tensor state = at::randn({5, 6, 3});
  for (const bool with_state : {false, true}) {
    ops::CausalConv1dArgs a{.x = x, .weight = w, .bias = bias, .cu_seqlens = int32_tensor(cu)};
    if (with_state) a.initial_state = state;
    a.return_final_state = true;
    const auto r = ref::causal_conv1d(a);
    for (size_t d = 0; d < lengths.size(); ++d) {
      ops::CausalConv1dArgs one{
          .x = x.narrow(0, cu[d], lengths[d]).unsqueeze(0), .weight = w, .bias = bias};
      const at::Tensor s = with_state ? state.narrow(0, d, 1) : at::zeros({1, 6, 3});
      one.initial_state = s;
      one.return_final_state = true;
      const auto alone = ref::causal_conv1d(one);
      // Equal up to rounding (vectorised loops may round the last ulp differently by length).
      EXPECT_TRUE(close(r.out.narrow(0, cu[d], lengths[d]), alone.out[0], {1e-6, 1e-6}))
          << "doc " << d;
      EXPECT_TRUE(at::equal(r.final_state[d], alone.final_state[0])) << "doc " << d;
      EXPECT_TRUE(close(r.out.narrow(0, cu[d], lengths[d]),
                        naive_conv_sequence(x.narrow(0, cu[d], lengths[d]), w, bias, s[0], true),
                        tolerance(at::kFloat)))
          << "doc " << d;
    }
    // Document 3 (2 tokens): its final state is [oldest initial column, its two tokens].
    const at::Tensor s3 = with_state ? state[3] : at::zeros({6, 3});
    EXPECT_TRUE(
        at::equal(r.final_state[3], at::cat({s3.narrow(1, 2, 1), x.narrow(0, cu[3], 2).t()}, 1)));
  }
}

TEST(TorchCausalConv1dTest, StepByStepUpdateEqualsTheFullConvolution) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    at::manual_seed(7);
    const at::Tensor x = at::randn({3, 6, 8}).to(dtype);
    const at::Tensor w = (0.5 * at::randn({8, 4})).to(dtype);
    const at::Tensor bias = (0.1 * at::randn({8})).to(dtype);
    const at::Tensor state0 = at::randn({3, 8, 3}).to(dtype);
    const auto full = ref::causal_conv1d(
        {.x = x, .weight = w, .bias = bias, .initial_state = state0, .return_final_state = true});
    at::Tensor state = state0;
    for (int64_t t = 0; t < 6; ++t) {
      const auto step = ref::causal_conv1d({.x = x.select(1, t),
                                            .weight = w,
                                            .bias = bias,
                                            .mode = ops::CausalConv1dMode::kStep,
                                            .initial_state = state});
      ASSERT_EQ(step.out.sizes(), (std::vector<int64_t>{3, 8}));
      // Equal up to the last ulp (vectorised loops may round it differently by length).
      const Tolerance ulp = dtype == at::kFloat ? Tolerance{1e-6, 1e-6} : Tolerance{8e-3, 1e-3};
      EXPECT_TRUE(close(step.out, full.out.select(1, t), ulp)) << "step " << t;
      state = step.final_state;
    }
    EXPECT_TRUE(at::equal(state, full.final_state));
  }
}

TEST(TorchCausalConv1dTest, GradientsMatchFloat64Autograd) {
  at::manual_seed(8);
  const std::vector<int64_t> lengths = {4, 1, 6};
  const std::vector<int64_t> cu = offsets(lengths);
  const std::vector<at::Tensor> inputs = {
      at::randn({cu.back(), 5}, at::kDouble), 0.5 * at::randn({5, 3}, at::kDouble),
      0.1 * at::randn({5}, at::kDouble), at::randn({3, 5, 2}, at::kDouble)};
  const std::vector<at::Tensor> probes = {at::randn({cu.back(), 5}, at::kDouble)};
  const auto ours = gradients(
      inputs,
      [&](const std::vector<at::Tensor>& t) {
        return std::vector{ref::causal_conv1d({.x = t[0],
                                               .weight = t[1],
                                               .bias = t[2],
                                               .cu_seqlens = int32_tensor(cu),
                                               .initial_state = t[3]})
                               .out};
      },
      probes);
  const auto expected = gradients(
      inputs,
      [&](const std::vector<at::Tensor>& t) {
        std::vector<at::Tensor> docs;
        for (size_t d = 0; d < lengths.size(); ++d) {
          docs.push_back(
              naive_conv_sequence(t[0].narrow(0, cu[d], lengths[d]), t[1], t[2], t[3][d], true));
        }
        return std::vector{at::cat(docs, 0)};
      },
      probes);
  const char* names[] = {"dx", "dweight", "dbias", "dinitial_state"};
  for (size_t i = 0; i < ours.size(); ++i) {
    ASSERT_TRUE(ours[i].defined()) << names[i];
    EXPECT_TRUE(close(ours[i], expected[i], {1e-10, 1e-10})) << names[i];
  }
}

// ---- mamba2_scan --------------------------------------------------------------------------------

struct ScanInputs {
  at::Tensor x, dt, a, b, c, d, dt_bias, init; // x's dtype (A, init: float32 or float64)
};

/// The recurrence, one token at a time, in float64: one sequence x [L, H, P], dt [L, H] (raw),
/// B and C [L, G, N], state [H, P, N]. Returns {y [L, H, P], final state}.
std::pair<at::Tensor, at::Tensor> naive_scan_sequence(const at::Tensor& x, const at::Tensor& dt,
                                                      const at::Tensor& a, const at::Tensor& b,
                                                      const at::Tensor& c, const at::Tensor& d,
                                                      const at::Tensor& dt_bias, at::Tensor state,
                                                      double dt_min) {
  const int64_t len = x.size(0), h = x.size(1), g = b.size(1);
  // dt' in bf16 for bf16 inputs (HF's order), else in float64.
  const at::ScalarType dt_type = dt.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kDouble;
  const at::Tensor dtp =
      at::clamp_min(at::softplus(dt.to(dt_type) + dt_bias.to(dt_type)), dt_min).to(at::kDouble);
  std::vector<at::Tensor> ys;
  for (int64_t t = 0; t < len; ++t) {
    const at::Tensor bh = b[t].to(at::kDouble).repeat_interleave(h / g, 0); // [H, N]
    const at::Tensor ch = c[t].to(at::kDouble).repeat_interleave(h / g, 0);
    const at::Tensor xt = x[t].to(at::kDouble); // [H, P]
    const at::Tensor decay = at::exp(dtp[t] * a.to(at::kDouble)).view({h, 1, 1});
    state = decay * state + (dtp[t].view({h, 1}) * xt).unsqueeze(-1) * bh.unsqueeze(1);
    ys.push_back(at::einsum("hpn,hn->hp", {state, ch}) + d.to(at::kDouble).view({h, 1}) * xt);
  }
  const int64_t p = x.size(2);
  return {ys.empty() ? at::zeros({0, h, p}, at::kDouble) : at::stack(ys), state};
}

struct ScanCase {
  std::string name;
  at::ScalarType dtype;
  int64_t h, p, g, n, chunk;
  int64_t chunks_per_block; // 0 = the budget's choice
  int64_t batch = 0, len = 0;
  std::vector<int64_t> docs = {}; // THD when not empty
  bool thd() const { return !docs.empty(); }
};

ScanInputs make_scan_inputs(const ScanCase& c, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t seqs = c.thd() ? static_cast<int64_t>(c.docs.size()) : c.batch;
  std::vector<int64_t> tok =
      c.thd() ? std::vector<int64_t>{offsets(c.docs).back()} : std::vector<int64_t>{c.batch, c.len};
  auto shape = [&](std::initializer_list<int64_t> tail) {
    std::vector<int64_t> s = tok;
    s.insert(s.end(), tail);
    return s;
  };
  const at::ScalarType f = c.dtype == at::kDouble ? at::kDouble : at::kFloat;
  ScanInputs in;
  in.x = at::randn(shape({c.h, c.p})).to(c.dtype);
  in.dt = (at::randn(shape({c.h})) - 1.0).to(c.dtype);
  in.a = -at::exp(0.5 * at::randn({c.h})).to(f);
  in.b = at::randn(shape({c.g, c.n})).to(c.dtype);
  in.c = at::randn(shape({c.g, c.n})).to(c.dtype);
  in.d = at::randn({c.h}).to(c.dtype);
  in.dt_bias = (0.5 * at::randn({c.h})).to(c.dtype);
  in.init = at::randn({seqs, c.h, c.p, c.n}).to(f);
  return in;
}

ops::Mamba2ScanArgs scan_args(const ScanCase& c, const ScanInputs& in, bool with_init,
                              double dt_min = 1e-3) {
  ops::Mamba2ScanArgs a{
      .x = in.x, .dt = in.dt, .A = in.a, .B = in.b, .C = in.c, .D = in.d, .dt_bias = in.dt_bias};
  a.dt_min = dt_min;
  a.chunk_size = c.chunk;
  if (c.thd()) a.cu_seqlens = int32_tensor(offsets(c.docs));
  if (with_init) a.initial_states = in.init;
  a.return_final_states = true;
  return a;
}

/// The recurrence over every sequence of a case: {y in x's layout, final states [S, H, P, N]}.
std::pair<at::Tensor, at::Tensor> naive_scan(const ScanCase& c, const ScanInputs& in,
                                             bool with_init, double dt_min = 1e-3) {
  std::vector<at::Tensor> ys, finals;
  const int64_t seqs = c.thd() ? static_cast<int64_t>(c.docs.size()) : c.batch;
  const std::vector<int64_t> cu = c.thd() ? offsets(c.docs) : std::vector<int64_t>{};
  for (int64_t s = 0; s < seqs; ++s) {
    auto pick = [&](const at::Tensor& t) { return c.thd() ? t.narrow(0, cu[s], c.docs[s]) : t[s]; };
    const at::Tensor state =
        with_init ? in.init[s].to(at::kDouble) : at::zeros({c.h, c.p, c.n}, at::kDouble);
    auto [y, fin] = naive_scan_sequence(pick(in.x), pick(in.dt), in.a, pick(in.b), pick(in.c), in.d,
                                        in.dt_bias, state, dt_min);
    ys.push_back(c.thd() ? y : y.unsqueeze(0));
    finals.push_back(fin);
  }
  return {at::cat(ys, 0), at::stack(finals)};
}

// Chunk size 4: L < chunk, L = chunk, L a multiple, L not a multiple; blocks of one chunk and of
// two (crossing block boundaries), or the budget's choice; groups of 1, 2 and 4 heads.
const ScanCase kScanCases[] = {
    {"BshdShorterThanAChunk", at::kFloat, 4, 3, 2, 5, 4, 0, 2, 3},
    {"BshdExactlyOneChunk", at::kFloat, 4, 3, 2, 5, 4, 0, 2, 4},
    {"BshdChunkMultipleBlocksOf1", at::kFloat, 4, 3, 1, 5, 4, 1, 2, 12},
    {"BshdRaggedLastChunkBlocksOf2", at::kFloat, 4, 3, 4, 5, 4, 2, 2, 11},
    {"BshdChunkLargerThanSequence", at::kFloat, 2, 2, 1, 3, 128, 0, 1, 9},
    {"ThdDocsBlocksOf1", at::kFloat, 4, 3, 2, 5, 4, 1, 0, 0, {5, 4, 1, 9}},
    {"ThdEmptyDocsBlocksOf3", at::kFloat, 4, 3, 2, 5, 4, 3, 0, 0, {0, 7, 0, 3, 8, 0}},
    {"ThdSingleDoc", at::kFloat, 2, 4, 2, 3, 4, 0, 0, 0, {13}},
    {"BshdBf16", at::kBFloat16, 4, 3, 2, 5, 4, 2, 2, 11},
    {"ThdBf16", at::kBFloat16, 4, 3, 2, 5, 4, 1, 0, 0, {5, 6}},
    {"BshdFloat64", at::kDouble, 4, 3, 2, 5, 4, 1, 2, 9},
    {"ThdFloat64", at::kDouble, 4, 3, 2, 5, 4, 2, 0, 0, {3, 0, 9}},
};

// Gradients are checked in float32 and float64 (bf16 inputs only round the same math).
std::vector<ScanCase> float_cases() {
  std::vector<ScanCase> out;
  for (const ScanCase& c : kScanCases) {
    if (c.dtype != at::kBFloat16) out.push_back(c);
  }
  return out;
}

Tolerance scan_tolerance(at::ScalarType dtype) {
  if (dtype == at::kDouble) return {1e-11, 1e-11};
  // bf16 inputs are exact in float32 and the recurrence computes dt' in bf16 like the op: what is
  // left is float32 rounding, as for float32 inputs.
  return {2e-5, 2e-5};
}

TEST(TorchMamba2ScanTest, MatchesTheSequentialRecurrence) {
  for (const ScanCase& c : kScanCases) {
    SCOPED_TRACE(c.name);
    for (const bool with_init : {false, true}) {
      const ScanInputs in = make_scan_inputs(c, 20);
      const auto r =
          ref::detail::mamba2_scan_blocked(scan_args(c, in, with_init), c.chunks_per_block);
      const auto [y, fin] = naive_scan(c, in, with_init);
      EXPECT_EQ(r.y.scalar_type(), c.dtype == at::kDouble ? at::kDouble : at::kFloat);
      EXPECT_TRUE(close(r.y, y, scan_tolerance(c.dtype))) << "initial states " << with_init;
      EXPECT_TRUE(close(r.final_states, fin, scan_tolerance(c.dtype)))
          << "initial states " << with_init;
    }
  }
}

TEST(TorchMamba2ScanTest, ChunksAndBlocksDoNotChangeTheResult) {
  for (const ScanCase& c : kScanCases) {
    SCOPED_TRACE(c.name);
    const ScanInputs in = make_scan_inputs(c, 21);
    const auto base = ref::mamba2_scan(scan_args(c, in, true));
    for (const int64_t chunk : {1, 3, 5}) {
      ScanCase other = c;
      other.chunk = chunk;
      const auto r = ref::detail::mamba2_scan_blocked(scan_args(other, in, true), 2);
      const Tolerance tol =
          c.dtype == at::kDouble ? Tolerance{1e-12, 1e-12} : Tolerance{1e-5, 1e-5};
      EXPECT_TRUE(close(r.y, base.y, tol)) << "chunk " << chunk;
      EXPECT_TRUE(close(r.final_states, base.final_states, tol)) << "chunk " << chunk;
    }
  }
}

// One token per row (decode) takes the direct recurrence instead of the chunked algorithm: the
// same values, final states and gradients.
TEST(TorchMamba2ScanTest, OneTokenStepEqualsTheChunkedScan) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kDouble}) {
    const ScanCase c{"Step", dtype, 4, 3, 2, 5, 4, 0, 3, 1};
    SCOPED_TRACE(c10::toString(dtype));
    for (const bool with_init : {false, true}) {
      const ScanInputs in = make_scan_inputs(c, 23);
      const auto step = ref::mamba2_scan(scan_args(c, in, with_init));
      const auto chunked = ref::detail::mamba2_scan_blocked(scan_args(c, in, with_init), 0);
      const auto [y, fin] = naive_scan(c, in, with_init);
      const Tolerance tol = scan_tolerance(dtype);
      EXPECT_TRUE(close(step.y, y, tol)) << "initial states " << with_init;
      EXPECT_TRUE(close(step.final_states, fin, tol)) << "initial states " << with_init;
      EXPECT_TRUE(close(step.y, chunked.y, tol));
      EXPECT_TRUE(close(step.final_states, chunked.final_states, tol));
    }
  }
  // Gradients (float64) through y and the final states.
  const ScanCase c{"StepGrad", at::kDouble, 4, 3, 2, 5, 4, 0, 3, 1};
  const ScanInputs in = make_scan_inputs(c, 24);
  auto grads = [&](bool direct) {
    std::vector<at::Tensor> leaves = {in.x, in.dt, in.a, in.b, in.c, in.d, in.dt_bias, in.init};
    for (auto& t : leaves) t = t.detach().clone().requires_grad_(true);
    const ScanInputs li{leaves[0], leaves[1], leaves[2], leaves[3],
                        leaves[4], leaves[5], leaves[6], leaves[7]};
    const auto args = scan_args(c, li, true);
    const auto r = direct ? ref::mamba2_scan(args) : ref::detail::mamba2_scan_blocked(args, 0);
    at::manual_seed(5);
    ((r.y * at::randn_like(r.y)).sum() + (r.final_states * at::randn_like(r.final_states)).sum())
        .backward();
    std::vector<at::Tensor> out;
    for (const auto& t : leaves) out.push_back(t.grad());
    return out;
  };
  const auto a = grads(true), b = grads(false);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(close(a[i], b[i], Tolerance{1e-11, 1e-11})) << "input " << i;
  }
}

TEST(TorchMamba2ScanGradTest, MatchesTheRecurrencesAutograd) {
  for (const ScanCase& c : float_cases()) {
    SCOPED_TRACE(c.name);
    const ScanInputs in = make_scan_inputs(c, 22);
    const std::vector<at::Tensor> inputs = {in.x, in.dt, in.a,       in.b,
                                            in.c, in.d,  in.dt_bias, in.init};
    auto unpack = [](const std::vector<at::Tensor>& t) {
      return ScanInputs{t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]};
    };
    const auto y0 = naive_scan(c, in, true);
    const std::vector<at::Tensor> probes = {at::randn(y0.first.sizes(), at::kDouble),
                                            at::randn(y0.second.sizes(), at::kDouble)};
    const auto ours = gradients(
        inputs,
        [&](const std::vector<at::Tensor>& t) {
          const auto r =
              ref::detail::mamba2_scan_blocked(scan_args(c, unpack(t), true), c.chunks_per_block);
          return std::vector{r.y, r.final_states};
        },
        probes);
    const auto expected = gradients(
        inputs,
        [&](const std::vector<at::Tensor>& t) {
          const auto [y, fin] = naive_scan(c, unpack(t), true);
          return std::vector{y, fin};
        },
        probes);
    const char* names[] = {"dx", "ddt", "dA", "dB", "dC", "dD", "ddt_bias", "dinitial_states"};
    const Tolerance tol = c.dtype == at::kDouble ? Tolerance{1e-10, 1e-10} : Tolerance{1e-4, 1e-4};
    for (size_t i = 0; i < ours.size(); ++i) {
      ASSERT_TRUE(ours[i].defined()) << names[i];
      EXPECT_EQ(ours[i].scalar_type(), inputs[i].scalar_type()) << names[i];
      EXPECT_TRUE(close(ours[i], expected[i], tol)) << names[i];
    }
  }
}

TEST(TorchMamba2ScanFiniteDifferenceTest, GradientsAlongRandomDirectionsInFloat64) {
  // Central differences of the op itself along random directions, for every input at once and
  // for each input alone, through y and the final states; THD with an empty document and blocks
  // of one chunk, so that resets, block hand-overs and padded chunks are all on the path.
  const ScanCase c{"", at::kDouble, 4, 2, 2, 3, 3, 1, 0, 0, {4, 0, 7}};
  const ScanInputs in = make_scan_inputs(c, 23);
  std::vector<at::Tensor> inputs = {in.x, in.dt, in.a, in.b, in.c, in.d, in.dt_bias, in.init};
  auto run = [&](const std::vector<at::Tensor>& t) {
    const auto r = ref::detail::mamba2_scan_blocked(
        scan_args(c, ScanInputs{t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]}, true), 1);
    return std::vector{r.y, r.final_states};
  };
  const auto out = run(inputs);
  const std::vector<at::Tensor> probes = {at::randn(out[0].sizes(), at::kDouble),
                                          at::randn(out[1].sizes(), at::kDouble)};
  auto objective = [&](const std::vector<at::Tensor>& t) {
    const auto o = run(t);
    return ((o[0] * probes[0]).sum() + (o[1] * probes[1]).sum()).item<double>();
  };
  const auto grads = gradients(inputs, run, probes);
  const double eps = 1e-6;
  for (int64_t which = -1; which < static_cast<int64_t>(inputs.size()); ++which) {
    std::vector<at::Tensor> dir;
    double analytic = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      dir.push_back(which < 0 || which == static_cast<int64_t>(i)
                        ? at::randn(inputs[i].sizes(), at::kDouble)
                        : at::zeros(inputs[i].sizes(), at::kDouble));
      analytic += (grads[i] * dir[i]).sum().item<double>();
    }
    std::vector<at::Tensor> plus, minus;
    for (size_t i = 0; i < inputs.size(); ++i) {
      plus.push_back(inputs[i] + eps * dir[i]);
      minus.push_back(inputs[i] - eps * dir[i]);
    }
    const double numeric = (objective(plus) - objective(minus)) / (2 * eps);
    EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
        << "direction over input " << which << " (-1 = all)";
  }
}

TEST(TorchMamba2ScanThdTest, DocumentsNeverSeeEachOther) {
  const ScanCase c{"", at::kFloat, 4, 3, 2, 5, 4, 1, 0, 0, {6, 7, 5}};
  const ScanInputs in = make_scan_inputs(c, 24);
  const auto before = ref::detail::mamba2_scan_blocked(scan_args(c, in, true), 1);
  ScanInputs changed = in;
  changed.x = in.x.clone();
  changed.b = in.b.clone();
  changed.x.narrow(0, 6, 7).normal_(); // the middle document
  changed.b.narrow(0, 6, 7).normal_();
  const auto after = ref::detail::mamba2_scan_blocked(scan_args(c, changed, true), 1);
  EXPECT_TRUE(at::equal(after.y.narrow(0, 0, 6), before.y.narrow(0, 0, 6)));
  EXPECT_TRUE(at::equal(after.y.narrow(0, 13, 5), before.y.narrow(0, 13, 5)));
  EXPECT_FALSE(at::equal(after.y.narrow(0, 6, 7), before.y.narrow(0, 6, 7)));
  EXPECT_TRUE(at::equal(after.final_states[0], before.final_states[0]));
  EXPECT_TRUE(at::equal(after.final_states[2], before.final_states[2]));
}

TEST(TorchMamba2ScanThdTest, PackedDocumentsEqualOneBatchRowEach) {
  const ScanCase c{"", at::kFloat, 4, 3, 2, 5, 4, 0, 0, 0, {9, 9}};
  const ScanInputs in = make_scan_inputs(c, 25);
  const auto thd = ref::mamba2_scan(scan_args(c, in, true));
  ops::Mamba2ScanArgs bshd = scan_args(c, in, true);
  bshd.cu_seqlens = at::Tensor();
  bshd.x = in.x.view({2, 9, 4, 3});
  bshd.dt = in.dt.view({2, 9, 4});
  bshd.B = in.b.view({2, 9, 2, 5});
  bshd.C = in.c.view({2, 9, 2, 5});
  const auto batched = ref::mamba2_scan(bshd);
  EXPECT_TRUE(close(batched.y.view({18, 4, 3}), thd.y, {1e-6, 1e-6}));
  EXPECT_TRUE(close(batched.final_states, thd.final_states, {1e-6, 1e-6}));
}

TEST(TorchMamba2ScanTest, ContinuingFromTheFinalStateEqualsOneLongRun) {
  // A cache: scanning the first part, then the rest from its final state, is the whole scan.
  const ScanCase c{"", at::kFloat, 4, 3, 2, 5, 4, 0, 2, 14};
  const ScanInputs in = make_scan_inputs(c, 26);
  const auto whole = ref::mamba2_scan(scan_args(c, in, true));
  auto part = [&](int64_t t0, int64_t len, const at::Tensor& init) {
    ops::Mamba2ScanArgs a = scan_args(c, in, true);
    a.x = in.x.narrow(1, t0, len);
    a.dt = in.dt.narrow(1, t0, len);
    a.B = in.b.narrow(1, t0, len);
    a.C = in.c.narrow(1, t0, len);
    a.initial_states = init;
    return ref::mamba2_scan(a);
  };
  const auto first = part(0, 5, in.init);
  const auto rest = part(5, 9, first.final_states);
  EXPECT_TRUE(close(at::cat({first.y, rest.y}, 1), whole.y, {1e-5, 1e-5}));
  EXPECT_TRUE(close(rest.final_states, whole.final_states, {1e-5, 1e-5}));
}

TEST(TorchMamba2ScanTest, DtLimitsAndSoftplusFollowHf) {
  // dt_min clamps dt' from below (HF prefill: time_step_min); dt_max from above; without softplus
  // dt + dt_bias is used as it is (clamped).
  const ScanCase c{"", at::kDouble, 2, 2, 1, 3, 4, 0, 1, 6};
  ScanInputs in = make_scan_inputs(c, 27);
  in.dt = in.dt - 8.0; // softplus(dt + bias) well below 0.05 everywhere
  ops::Mamba2ScanArgs a = scan_args(c, in, false, /*dt_min=*/0.05);
  const auto clamped = ref::mamba2_scan(a);
  const auto [y, fin] = naive_scan(c, in, false, 0.05);
  EXPECT_TRUE(close(clamped.y, y, {1e-11, 1e-11}));
  // Every dt' is 0.05: same as a constant raw dt without softplus.
  ops::Mamba2ScanArgs constant = a;
  constant.dt = at::full(in.dt.sizes(), 0.05, at::kDouble);
  constant.dt_bias = at::Tensor();
  constant.dt_softplus = false;
  constant.dt_min = 0.0;
  EXPECT_TRUE(close(ref::mamba2_scan(constant).y, clamped.y, {1e-12, 1e-12}));
  ops::Mamba2ScanArgs capped = constant;
  capped.dt = at::full(in.dt.sizes(), 0.5, at::kDouble);
  capped.dt_max = 0.05;
  EXPECT_TRUE(close(ref::mamba2_scan(capped).y, clamped.y, {1e-12, 1e-12}));
}

TEST(TorchMamba2ScanTest, AcceptsSlicesOfAFusedProjection) {
  // x, dt, B and C as slices of one [B, L, ...] projection, as the Mamba2 mixer makes them; L a
  // multiple of the chunk (no padding copy) and float32 (no cast copy): views all the way in.
  at::manual_seed(29);
  const int64_t h = 4, p = 3, g = 2, n = 5;
  const at::Tensor fused = at::randn({2, 8, h * p + 2 * g * n + h}).requires_grad_(true);
  ops::Mamba2ScanArgs a{.x = fused.narrow(-1, 0, h * p).unflatten(-1, {h, p}),
                        .dt = fused.narrow(-1, h * p + 2 * g * n, h),
                        .A = -at::exp(at::randn({h})),
                        .B = fused.narrow(-1, h * p, g * n).unflatten(-1, {g, n}),
                        .C = fused.narrow(-1, h * p + g * n, g * n).unflatten(-1, {g, n})};
  a.chunk_size = 4;
  ops::Mamba2ScanArgs copies = a;
  copies.x = a.x.contiguous();
  copies.dt = a.dt.contiguous();
  copies.B = a.B.contiguous();
  copies.C = a.C.contiguous();
  const at::Tensor y = ref::mamba2_scan(a).y;
  EXPECT_TRUE(close(y, ref::mamba2_scan(copies).y, {1e-6, 1e-6})); // same math, other strides
  const at::Tensor grad = torch::autograd::grad({y.sum()}, {fused})[0];
  EXPECT_EQ(grad.sizes(), fused.sizes());
  EXPECT_TRUE(grad.isfinite().all().item<bool>());
}

TEST(TorchMamba2ScanTest, RunsUnderInferenceMode) {
  const ScanCase c{"", at::kFloat, 4, 3, 2, 5, 4, 0, 0, 0, {3, 6}};
  const ScanInputs in = make_scan_inputs(c, 28);
  const auto expected = ref::mamba2_scan(scan_args(c, in, true));
  const c10::InferenceMode inference;
  const auto r = ref::mamba2_scan(scan_args(c, in, true));
  EXPECT_TRUE(at::equal(r.y, expected.y));
  EXPECT_TRUE(at::equal(r.final_states, expected.final_states));
}

} // namespace
} // namespace kiln
