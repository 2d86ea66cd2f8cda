// The torch reference kernels of DeepSeek Sparse Attention against naive float64 formulas written
// here: `indexer_topk` against dense [Tq, Tk] index scores with explicit per-query key windows
// (varlen documents, empty and 1-token documents, topk larger than a document, -1 padding,
// context-parallel query shards with padded documents, chunked and whole); `sparse_mla` against
// the dense masked-attention formulation (every key scored, unselected ones masked, HF's form)
// in float32 and bfloat16, its gradients against float64 autograd of that formula and, in
// float64, against central finite differences.
#include "kernels.h"
#include "op_test_util.h"

#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

namespace kiln {
namespace {

namespace ref = backends::torch_ref;
using test::close;
using test::Tolerance;

at::Tensor int32_tensor(const std::vector<int64_t>& values) {
  return at::tensor(values, at::kLong).to(at::kInt);
}

std::vector<int64_t> offsets(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> cu{0};
  for (int64_t len : lengths) cu.push_back(cu.back() + len);
  return cu;
}

// ---- indexer_topk -------------------------------------------------------------------------------

// Which keys [lo, hi) a query at token position p sees, written independently of the kernel: a
// linear scan over the documents' real token ranges.
std::pair<int64_t, int64_t> window_of(int64_t p, const std::vector<int64_t>& lengths,
                                      const std::vector<int64_t>& starts) {
  for (size_t n = 0; n < lengths.size(); ++n) {
    if (p >= starts[n] && p < starts[n] + lengths[n]) return {starts[n], p + 1};
  }
  return {0, 0};
}

struct IndexerCase {
  std::string name;
  at::ScalarType dtype;
  int64_t heads, dim, topk, query_chunk;
  std::vector<int64_t> docs;                 // real document lengths
  std::vector<int64_t> padded = {};          // padded slot lengths (context parallelism), or none
  std::vector<int64_t> query_positions = {}; // a shard of query rows, or every token
};

struct IndexerInputs {
  ops::IndexerTopkArgs args;
  std::vector<int64_t> positions, starts;
};

IndexerInputs make_indexer_inputs(const IndexerCase& c, uint64_t seed) {
  at::manual_seed(seed);
  IndexerInputs in;
  const std::vector<int64_t> cu = offsets(c.docs);
  in.starts = c.padded.empty() ? cu : offsets(c.padded);
  const int64_t tk = c.padded.empty() ? cu.back() : in.starts.back();
  if (c.query_positions.empty()) {
    for (int64_t t = 0; t < tk; ++t) in.positions.push_back(t);
  } else {
    in.positions = c.query_positions;
    in.args.query_indices = int32_tensor(c.query_positions);
  }
  const int64_t tq = static_cast<int64_t>(in.positions.size());
  in.args.index_q = at::randn({tq, c.heads, c.dim}).to(c.dtype);
  in.args.index_k = at::randn({tk, c.dim}).to(c.dtype);
  // Mixed signs, as weights_proj gives: scores can be negative, zero or positive.
  in.args.head_weights = at::randn({tq, c.heads}) * 0.3;
  in.args.cu_seqlens = int32_tensor(cu);
  if (!c.padded.empty()) in.args.cu_seqlens_padded = int32_tensor(in.starts);
  in.args.topk = c.topk;
  return in;
}

/// score[q, t] = sum_h w[q, h] * relu(q[q, h] . k[t]) in float64, -inf outside q's window.
at::Tensor naive_index_scores(const IndexerInputs& in, const std::vector<int64_t>& docs) {
  const at::Tensor q = in.args.index_q.to(at::kDouble);
  const at::Tensor k = in.args.index_k.to(at::kDouble);
  const at::Tensor w = in.args.head_weights.to(at::kDouble);
  at::Tensor score = at::einsum("qh,qht->qt", {w, at::relu(at::einsum("qhd,td->qht", {q, k}))});
  for (int64_t r = 0; r < score.size(0); ++r) {
    const auto [lo, hi] = window_of(in.positions[r], docs, in.starts);
    for (int64_t t = 0; t < score.size(1); ++t) {
      if (t < lo || t >= hi) score[r][t] = -std::numeric_limits<double>::infinity();
    }
  }
  return score;
}

/// Checks one output row against the naive scores: min(topk, visible) distinct visible keys
/// whose scores are the largest (ties within `slack` either way), then -1s.
::testing::AssertionResult row_is_top_k(const at::Tensor& row, const at::Tensor& scores,
                                        int64_t topk, double slack) {
  const auto picked = row.to(at::kLong).contiguous();
  const int64_t visible = scores.isfinite().sum().item<int64_t>();
  const int64_t expected_count = std::min(topk, visible);
  std::set<int64_t> chosen;
  for (int64_t j = 0; j < picked.numel(); ++j) {
    const int64_t t = picked[j].item<int64_t>();
    if (j >= expected_count) {
      if (t != -1) return ::testing::AssertionFailure() << "slot " << j << " should be -1: " << t;
      continue;
    }
    if (t < 0 || t >= scores.numel() || !std::isfinite(scores[t].item<double>())) {
      return ::testing::AssertionFailure() << "slot " << j << " picks invisible key " << t;
    }
    if (!chosen.insert(t).second) return ::testing::AssertionFailure() << "key " << t << " twice";
  }
  double lowest_chosen = std::numeric_limits<double>::infinity();
  double highest_other = -std::numeric_limits<double>::infinity();
  for (int64_t t = 0; t < scores.numel(); ++t) {
    const double s = scores[t].item<double>();
    if (!std::isfinite(s)) continue;
    if (chosen.count(t))
      lowest_chosen = std::min(lowest_chosen, s);
    else
      highest_other = std::max(highest_other, s);
  }
  if (lowest_chosen + slack < highest_other) {
    return ::testing::AssertionFailure() << "a key scoring " << highest_other
                                         << " was left out for one scoring " << lowest_chosen;
  }
  return ::testing::AssertionSuccess();
}

const IndexerCase kIndexerCases[] = {
    {"VarlenDocsTopkLargerThanSomeDocs", at::kFloat, 4, 16, 4, 0, {5, 1, 9, 0, 3}},
    {"VarlenChunksOf3", at::kFloat, 4, 16, 4, 3, {5, 1, 9, 0, 3}},
    {"TopkLargerThanEveryDocument", at::kFloat, 2, 8, 16, 4, {7, 2, 11}},
    {"SingleLongDocument", at::kFloat, 8, 32, 6, 5, {40}},
    {"Bf16Varlen", at::kBFloat16, 4, 16, 5, 4, {6, 12, 2}},
    // Context parallelism: documents padded to slots of 8, 4 and 8 tokens; the query rows are a
    // contiguous shard of the padded layout, including padding positions (empty windows).
    {"CpShardOfPaddedDocuments",
     at::kFloat,
     4,
     16,
     3,
     2,
     {5, 3, 6},
     {8, 4, 8},
     {3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}},
    {"CpShardBf16", at::kBFloat16, 4, 16, 4, 0, {5, 3, 6}, {8, 4, 8}, {10, 11, 12, 13, 14, 15}},
};

class TorchIndexerTopkTest : public ::testing::TestWithParam<IndexerCase> {};

TEST_P(TorchIndexerTopkTest, PicksTheTopScoringVisibleKeys) {
  const IndexerCase& c = GetParam();
  const IndexerInputs in = make_indexer_inputs(c, 20);
  const at::Tensor out = ref::detail::indexer_topk_chunked(in.args, c.query_chunk);
  ASSERT_EQ(out.scalar_type(), at::kInt);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{in.args.index_q.size(0), 1, c.topk}));
  const at::Tensor scores = naive_index_scores(in, c.docs);
  // float32 sums in another order than float64: scores closer than this may swap.
  const double slack =
      1e-4 * (scores.isfinite().any().item<bool>()
                  ? scores.masked_fill(scores.isinf(), 0).abs().max().item<double>()
                  : 1.0);
  for (int64_t r = 0; r < out.size(0); ++r) {
    EXPECT_TRUE(row_is_top_k(out[r][0], scores[r], c.topk, slack)) << "query row " << r;
  }
}

TEST_P(TorchIndexerTopkTest, ChunkingDoesNotChangeTheSelection) {
  const IndexerCase& c = GetParam();
  const IndexerInputs in = make_indexer_inputs(c, 21);
  const auto sorted = [](const at::Tensor& t) { return std::get<0>(t.sort(-1)); };
  const at::Tensor whole = ref::detail::indexer_topk_chunked(in.args, 0);
  EXPECT_TRUE(at::equal(sorted(ref::detail::indexer_topk_chunked(in.args, 1)), sorted(whole)));
  EXPECT_TRUE(at::equal(ref::indexer_topk(in.args), whole));
}

INSTANTIATE_TEST_SUITE_P(Cases, TorchIndexerTopkTest, ::testing::ValuesIn(kIndexerCases),
                         [](const auto& info) { return info.param.name; });

TEST(TorchIndexerTopkBehaviour, EveryVisibleKeyWhenTopkCoversTheDocument) {
  // topk >= document length: each query gets exactly its causal prefix, in some order.
  const IndexerCase c{"", at::kFloat, 2, 8, 8, 0, {3, 5}};
  const IndexerInputs in = make_indexer_inputs(c, 22);
  const at::Tensor out = ref::indexer_topk(in.args);
  const at::Tensor sorted = std::get<0>(out.select(1, 0).sort(-1, /*descending=*/true));
  for (int64_t r = 0; r < 8; ++r) {
    const int64_t start = r < 3 ? 0 : 3;
    for (int64_t j = 0; j < 8; ++j) {
      EXPECT_EQ(sorted[r][j].item<int64_t>(), r - j >= start ? r - j : -1) << r << "," << j;
    }
  }
}

TEST(TorchIndexerTopkBehaviour, DocumentsNeverSeeEachOther) {
  const IndexerCase c{"", at::kFloat, 4, 16, 3, 0, {6, 6}};
  IndexerInputs in = make_indexer_inputs(c, 23);
  // Make the first document's keys score hugely for everyone: the second document must not care.
  in.args.index_k = in.args.index_k.clone();
  in.args.index_k.narrow(0, 0, 6).mul_(100);
  in.args.head_weights = in.args.head_weights.abs();
  const at::Tensor after = ref::indexer_topk(in.args);
  const at::Tensor second = after.narrow(0, 6, 6);
  EXPECT_TRUE(((second >= 6) | (second == -1)).all().item<bool>()) << second;
}

// ---- sparse_mla ---------------------------------------------------------------------------------

struct MlaCase {
  std::string name;
  at::ScalarType dtype;
  int64_t tokens, heads, latent, rope, dv, slots, query_chunk;
};

struct MlaInputs {
  at::Tensor q, kv, w_vc, idx;
  double scale = 0;
};

// Indices as the indexer makes them: each query selects up to `slots` distinct keys among those
// of its document up to itself (documents of 5, 1 and the rest), -1 elsewhere; row 2 selects
// nothing (to check it yields zeros).
at::Tensor make_indices(int64_t tokens, int64_t slots, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor idx = at::full({tokens, 1, slots}, -1, at::kInt);
  const std::vector<int64_t> doc_start_of = [&] {
    std::vector<int64_t> s(tokens);
    for (int64_t t = 0; t < tokens; ++t) s[t] = t < 5 ? 0 : (t < 6 ? 5 : 6);
    return s;
  }();
  for (int64_t t = 0; t < tokens; ++t) {
    if (t == 2) continue;
    const int64_t visible = t - doc_start_of[t] + 1;
    const at::Tensor order = at::randperm(visible, at::kLong) + doc_start_of[t];
    const int64_t n = std::min(slots, visible);
    const at::Tensor slot_order = at::randperm(slots, at::kLong).narrow(0, 0, n);
    for (int64_t j = 0; j < n; ++j) {
      idx[t][0][slot_order[j].item<int64_t>()] = order[j].item<int64_t>();
    }
  }
  return idx;
}

MlaInputs make_mla_inputs(const MlaCase& c, uint64_t seed) {
  at::manual_seed(seed);
  MlaInputs in;
  const int64_t dqk = c.latent + c.rope;
  in.q = at::randn({c.tokens, c.heads, dqk}).to(c.dtype);
  in.kv = at::randn({c.tokens, 1, dqk}).to(c.dtype);
  in.w_vc = (at::randn({c.heads, c.dv, c.latent}) / std::sqrt(double(c.latent))).to(c.dtype);
  in.idx = make_indices(c.tokens, c.slots, seed + 1);
  in.scale = 1.0 / std::sqrt(static_cast<double>(dqk));
  return in;
}

/// HF's dense formulation: score every key, mask the unselected ones, softmax, values, w_vc.
at::Tensor dense_mla(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& w_vc,
                     const at::Tensor& idx, double scale) {
  const int64_t tokens = q.size(0);
  const int64_t latent = w_vc.size(2);
  at::Tensor selected = at::zeros({tokens, kv.size(0) + 1}, at::kBool); // column Tk: the -1s
  const at::Tensor cols = idx.select(1, 0).to(at::kLong);
  selected.scatter_(1, at::where(cols < 0, kv.size(0), cols), true);
  selected = selected.narrow(1, 0, kv.size(0));                   // [T, Tk]
  const at::Tensor k = kv.select(1, 0);                           // [Tk, Dqk]
  const at::Tensor s = at::einsum("thd,kd->thk", {q, k}) * scale; // [T, H, Tk]
  at::Tensor p = at::softmax(s.masked_fill(selected.logical_not().unsqueeze(1), -INFINITY), -1);
  p = at::where(selected.any(-1).view({tokens, 1, 1}), p, at::zeros_like(p));
  const at::Tensor o = at::einsum("thk,kl->thl", {p, k.narrow(1, 0, latent)}); // [T, H, L]
  return at::einsum("thl,hvl->thv", {o, w_vc});
}

ops::SparseMlaArgs mla_args(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& w_vc,
                            const MlaInputs& in) {
  ops::SparseMlaArgs a;
  a.q_absorbed = q;
  a.kv_latent = kv;
  a.w_vc = w_vc;
  a.topk_indices = in.idx;
  a.softmax_scale = in.scale;
  return a;
}

const MlaCase kMlaCases[] = {
    {"Fp32Whole", at::kFloat, 13, 3, 16, 8, 12, 4, 0},
    {"Fp32ChunksOf4", at::kFloat, 13, 3, 16, 8, 12, 4, 4},
    {"Fp32SlotsBeyondEveryDocument", at::kFloat, 11, 2, 8, 4, 6, 9, 3},
    {"Bf16ChunksOf5", at::kBFloat16, 13, 4, 32, 16, 24, 5, 5},
};

class TorchSparseMlaTest : public ::testing::TestWithParam<MlaCase> {};

TEST_P(TorchSparseMlaTest, MatchesDenseMaskedAttention) {
  const MlaCase& c = GetParam();
  const MlaInputs in = make_mla_inputs(c, 30);
  const at::Tensor out =
      ref::detail::sparse_mla_chunked(mla_args(in.q, in.kv, in.w_vc, in), c.query_chunk);
  ASSERT_EQ(out.scalar_type(), c.dtype);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{c.tokens, c.heads, c.dv}));
  const at::Tensor expected = dense_mla(in.q.to(at::kDouble), in.kv.to(at::kDouble),
                                        in.w_vc.to(at::kDouble), in.idx, in.scale);
  EXPECT_TRUE(close(out, expected, test::tolerance(c.dtype)));
  EXPECT_TRUE(at::equal(out[2], at::zeros_like(out[2]))) << "a row that selects nothing";
}

TEST_P(TorchSparseMlaTest, GradientsMatchFloat64Autograd) {
  const MlaCase& c = GetParam();
  const MlaInputs in = make_mla_inputs(c, 31);
  at::Tensor q = in.q.clone().requires_grad_(true);
  at::Tensor kv = in.kv.clone().requires_grad_(true);
  at::Tensor w = in.w_vc.clone().requires_grad_(true);
  const at::Tensor out = ref::detail::sparse_mla_chunked(mla_args(q, kv, w, in), c.query_chunk);
  const at::Tensor probe = at::randn(out.sizes(), at::kDouble);
  const auto grads = torch::autograd::grad({(out.to(at::kDouble) * probe).sum()}, {q, kv, w});

  at::Tensor q64 = in.q.to(at::kDouble).requires_grad_(true);
  at::Tensor kv64 = in.kv.to(at::kDouble).requires_grad_(true);
  at::Tensor w64 = in.w_vc.to(at::kDouble).requires_grad_(true);
  const at::Tensor out64 = dense_mla(q64, kv64, w64, in.idx, in.scale);
  const auto expected = torch::autograd::grad({(out64 * probe).sum()}, {q64, kv64, w64});
  const Tolerance tol = c.dtype == at::kFloat ? Tolerance{1e-5, 1e-5} : Tolerance{3e-2, 3e-2};
  const char* names[] = {"dq", "dkv", "dw_vc"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(grads[i].scalar_type(), c.dtype) << names[i];
    EXPECT_TRUE(close(grads[i], expected[i], tol)) << names[i];
  }
  EXPECT_TRUE(at::equal(grads[0][2], at::zeros_like(grads[0][2]))) << "no gradient, empty row";
}

INSTANTIATE_TEST_SUITE_P(Cases, TorchSparseMlaTest, ::testing::ValuesIn(kMlaCases),
                         [](const auto& info) { return info.param.name; });

TEST(TorchSparseMlaGradient, Float64MatchesFiniteDifferences) {
  const MlaCase c{"", at::kDouble, 8, 2, 5, 3, 4, 3, 3};
  const MlaInputs in = make_mla_inputs(c, 32);
  const at::Tensor probe = at::randn({c.tokens, c.heads, c.dv}, at::kDouble);
  auto objective = [&](const at::Tensor& q, const at::Tensor& kv, const at::Tensor& w) {
    return (ref::detail::sparse_mla_chunked(mla_args(q, kv, w, in), c.query_chunk) * probe).sum();
  };
  std::vector<at::Tensor> inputs = {in.q.clone().requires_grad_(true),
                                    in.kv.clone().requires_grad_(true),
                                    in.w_vc.clone().requires_grad_(true)};
  const auto analytic = torch::autograd::grad({objective(inputs[0], inputs[1], inputs[2])}, inputs);
  const double eps = 1e-6;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const at::Tensor base = inputs[i].detach();
    at::Tensor numeric = at::zeros_like(base);
    for (int64_t j = 0; j < base.numel(); ++j) {
      std::vector<at::Tensor> plus = {inputs[0].detach(), inputs[1].detach(), inputs[2].detach()};
      std::vector<at::Tensor> minus = plus;
      plus[i] = base.clone();
      minus[i] = base.clone();
      plus[i].view(-1)[j] += eps;
      minus[i].view(-1)[j] -= eps;
      numeric.view(-1)[j] = (objective(plus[0], plus[1], plus[2]).item<double>() -
                             objective(minus[0], minus[1], minus[2]).item<double>()) /
                            (2 * eps);
    }
    EXPECT_TRUE(close(analytic[i], numeric, {1e-6, 1e-7})) << "input " << i;
  }
}

TEST(TorchSparseMlaLayout, AcceptsNonContiguousInputs) {
  // q as a slice of a wider projection and kv_latent as a slice of [latent | rope | extra].
  const MlaCase c{"", at::kFloat, 9, 2, 8, 4, 6, 3, 0};
  const MlaInputs in = make_mla_inputs(c, 33);
  const at::Tensor wide_q = at::randn({c.tokens, c.heads, 20});
  wide_q.narrow(2, 0, 12).copy_(in.q);
  const at::Tensor wide_kv = at::randn({c.tokens, 1, 15});
  wide_kv.narrow(2, 0, 12).copy_(in.kv);
  const at::Tensor out =
      ref::sparse_mla(mla_args(wide_q.narrow(2, 0, 12), wide_kv.narrow(2, 0, 12),
                               in.w_vc.transpose(1, 2).contiguous().transpose(1, 2), in));
  EXPECT_TRUE(close(out, ref::sparse_mla(mla_args(in.q, in.kv, in.w_vc, in)), {1e-6, 1e-6}));
}

TEST(TorchSparseMlaLayout, OrderOfTheSelectedKeysDoesNotMatter) {
  const MlaCase c{"", at::kFloat, 10, 2, 8, 4, 6, 4, 0};
  MlaInputs in = make_mla_inputs(c, 34);
  const at::Tensor before = ref::sparse_mla(mla_args(in.q, in.kv, in.w_vc, in));
  in.idx = in.idx.flip(-1).contiguous();
  EXPECT_TRUE(close(ref::sparse_mla(mla_args(in.q, in.kv, in.w_vc, in)), before, {1e-6, 1e-6}));
}

} // namespace
} // namespace kiln
