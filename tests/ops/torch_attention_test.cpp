// The torch reference `attention` against a naive float64 formula written here (dense ATen in
// double: repeated kv heads, full score matrix, causal mask, softmax): BSHD and THD (documents of
// different lengths, length 1 and 0, keys longer than queries), GQA group sizes 1, 3 and 4, query
// chunks that do and do not divide the sequence; gradients of q, k and v against the float64
// formula's autograd; documents isolated from each other.
#include "kernels.h"
#include "op_test_util.h"

#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace kiln {
namespace {

namespace ref = backends::torch_ref;
using test::close;
using test::Tolerance;
using test::tolerance;

// ---- the float64 formula ------------------------------------------------------------------------

/// One sequence: q [Sq, Hq, D], k [Sk, Hkv, D], v [Sk, Hkv, Dv]; query i sits at Sk - Sq + i.
at::Tensor naive_sequence(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          double scale) {
  const int64_t sq = q.size(0);
  const int64_t sk = k.size(0);
  const int64_t groups = q.size(1) / k.size(1);
  const at::Tensor kr = k.repeat_interleave(groups, 1); // head h uses kv head h / groups
  const at::Tensor vr = v.repeat_interleave(groups, 1);
  const at::Tensor s = at::einsum("qhd,khd->hqk", {q, kr}) * scale; // [Hq, Sq, Sk]
  const at::Tensor future = at::arange(sk).unsqueeze(0) > (at::arange(sq) + (sk - sq)).unsqueeze(1);
  const at::Tensor p = at::softmax(s.masked_fill(future, -INFINITY), -1);
  return at::einsum("hqk,khd->qhd", {p, vr}); // [Sq, Hq, Dv]
}

/// The op's formula in float64 for either layout (inputs are upcast; differentiable).
at::Tensor naive_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, const std::vector<int64_t>& cu_q = {},
                           const std::vector<int64_t>& cu_k = {}) {
  std::vector<at::Tensor> parts;
  if (cu_q.empty()) {
    for (int64_t b = 0; b < q.size(0); ++b) {
      parts.push_back(naive_sequence(q[b], k[b], v[b], scale).unsqueeze(0));
    }
  } else {
    const std::vector<int64_t>& ck = cu_k.empty() ? cu_q : cu_k;
    for (size_t n = 0; n + 1 < cu_q.size(); ++n) {
      parts.push_back(naive_sequence(q.narrow(0, cu_q[n], cu_q[n + 1] - cu_q[n]),
                                     k.narrow(0, ck[n], ck[n + 1] - ck[n]),
                                     v.narrow(0, ck[n], ck[n + 1] - ck[n]), scale));
    }
  }
  return at::cat(parts, 0);
}

std::vector<int64_t> offsets(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> cu{0};
  for (int64_t len : lengths) cu.push_back(cu.back() + len);
  return cu;
}

at::Tensor int32_tensor(const std::vector<int64_t>& values) {
  return at::tensor(values, at::kLong).to(at::kInt);
}

// ---- cases --------------------------------------------------------------------------------------

struct AttentionCase {
  std::string name;
  at::ScalarType dtype;
  int64_t hq, hkv, d, dv;
  int64_t query_chunk; // 0 = the memory budget's choice (one chunk at these sizes)
  // BSHD: batch, sq, sk. THD: per-document query lengths and (optionally) key lengths.
  int64_t batch = 0, sq = 0, sk = 0;
  std::vector<int64_t> doc_q = {}, doc_k = {};
  bool thd() const { return !doc_q.empty(); }
};

// Inputs of a case (float64 masters, rounded to the case's dtype) and the op's arguments.
struct Inputs {
  at::Tensor q, k, v; // case dtype
  ops::AttentionArgs args;
  std::vector<int64_t> cu_q, cu_k;
};

Inputs make_inputs(const AttentionCase& c, uint64_t seed) {
  at::manual_seed(seed);
  Inputs in;
  if (c.thd()) {
    in.cu_q = offsets(c.doc_q);
    in.cu_k = c.doc_k.empty() ? std::vector<int64_t>{} : offsets(c.doc_k);
    const int64_t tq = in.cu_q.back();
    const int64_t tk = c.doc_k.empty() ? tq : in.cu_k.back();
    in.q = at::randn({tq, c.hq, c.d}).to(c.dtype);
    in.k = at::randn({tk, c.hkv, c.d}).to(c.dtype);
    in.v = at::randn({tk, c.hkv, c.dv}).to(c.dtype);
    in.args.cu_seqlens = int32_tensor(in.cu_q);
    in.args.max_seqlen = std::max<int64_t>(1, *std::max_element(c.doc_q.begin(), c.doc_q.end()));
    if (!c.doc_k.empty()) {
      in.args.cu_seqlens_k = int32_tensor(in.cu_k);
      in.args.max_seqlen_k = *std::max_element(c.doc_k.begin(), c.doc_k.end());
    }
  } else {
    in.q = at::randn({c.batch, c.sq, c.hq, c.d}).to(c.dtype);
    in.k = at::randn({c.batch, c.sk, c.hkv, c.d}).to(c.dtype);
    in.v = at::randn({c.batch, c.sk, c.hkv, c.dv}).to(c.dtype);
  }
  in.args.q = in.q;
  in.args.k = in.k;
  in.args.v = in.v;
  in.args.softmax_scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  return in;
}

at::Tensor expected_output(const Inputs& in) {
  return naive_attention(in.q.to(at::kDouble), in.k.to(at::kDouble), in.v.to(at::kDouble),
                         in.args.softmax_scale, in.cu_q, in.cu_k);
}

const AttentionCase kFp32Cases[] = {
    {"BshdMha", at::kFloat, 2, 2, 16, 16, 0, 2, 7, 7},
    {"BshdGqa2ChunksOf4", at::kFloat, 4, 2, 8, 8, 4, 2, 9, 9},
    {"BshdGqa3KvCacheChunksOf2", at::kFloat, 6, 2, 8, 8, 2, 2, 3, 10},
    {"BshdSingleQueryDecode", at::kFloat, 4, 1, 8, 8, 0, 3, 1, 6},
    {"BshdValueDimDiffers", at::kFloat, 3, 3, 16, 12, 5, 1, 11, 11},
    {"ThdDocsChunksOf4", at::kFloat, 4, 1, 8, 8, 4, 0, 0, 0, {5, 1, 9, 3}},
    {"ThdEmptyAndLength1Docs", at::kFloat, 2, 2, 8, 8, 3, 0, 0, 0, {1, 0, 7, 1}},
    {"ThdKeysLongerChunksOf2", at::kFloat, 6, 3, 8, 4, 2, 0, 0, 0, {2, 1, 5}, {5, 1, 8}},
};

const AttentionCase kBf16Cases[] = {
    {"BshdGqa2ChunksOf4", at::kBFloat16, 4, 2, 16, 16, 4, 2, 9, 9},
    {"ThdDocsChunksOf3", at::kBFloat16, 4, 1, 16, 16, 3, 0, 0, 0, {5, 1, 9, 3}},
    {"ThdKeysLonger", at::kBFloat16, 6, 3, 16, 16, 0, 0, 0, 0, {2, 1, 5}, {5, 1, 8}},
};

std::string case_name(const ::testing::TestParamInfo<AttentionCase>& info) {
  return info.param.name;
}

// ---- forward ------------------------------------------------------------------------------------

class TorchAttentionTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(TorchAttentionTest, MatchesFloat64Formula) {
  const AttentionCase& c = GetParam();
  const Inputs in = make_inputs(c, 10);
  const at::Tensor out = ref::detail::attention_chunked(in.args, c.query_chunk);
  ASSERT_EQ(out.scalar_type(), c.dtype);
  EXPECT_TRUE(close(out, expected_output(in), tolerance(c.dtype)));
}

TEST_P(TorchAttentionTest, ChunkingDoesNotChangeTheResult) {
  const AttentionCase& c = GetParam();
  const Inputs in = make_inputs(c, 11);
  const at::Tensor whole = ref::detail::attention_chunked(in.args, 0);
  const at::Tensor rows = ref::detail::attention_chunked(in.args, 1);
  EXPECT_TRUE(
      close(rows, whole, c.dtype == at::kFloat ? Tolerance{1e-6, 1e-6} : Tolerance{1e-2, 1e-2}));
  EXPECT_TRUE(at::equal(ref::attention(in.args), whole));
}

INSTANTIATE_TEST_SUITE_P(Fp32, TorchAttentionTest, ::testing::ValuesIn(kFp32Cases), case_name);
INSTANTIATE_TEST_SUITE_P(Bf16, TorchAttentionTest, ::testing::ValuesIn(kBf16Cases), case_name);

// ---- gradients ----------------------------------------------------------------------------------

class TorchAttentionGradTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(TorchAttentionGradTest, MatchesFloat64Autograd) {
  const AttentionCase& c = GetParam();
  Inputs in = make_inputs(c, 12);
  at::Tensor q = in.q.clone().requires_grad_(true);
  at::Tensor k = in.k.clone().requires_grad_(true);
  at::Tensor v = in.v.clone().requires_grad_(true);
  ops::AttentionArgs args = in.args;
  args.q = q;
  args.k = k;
  args.v = v;
  const at::Tensor out = ref::detail::attention_chunked(args, c.query_chunk);
  const at::Tensor probe = at::randn(out.sizes(), at::kDouble);
  const auto grads = torch::autograd::grad({(out.to(at::kDouble) * probe).sum()}, {q, k, v});

  at::Tensor q64 = in.q.to(at::kDouble).requires_grad_(true);
  at::Tensor k64 = in.k.to(at::kDouble).requires_grad_(true);
  at::Tensor v64 = in.v.to(at::kDouble).requires_grad_(true);
  const at::Tensor out64 = naive_attention(q64, k64, v64, in.args.softmax_scale, in.cu_q, in.cu_k);
  const auto expected = torch::autograd::grad({(out64 * probe).sum()}, {q64, k64, v64});

  const Tolerance tol = c.dtype == at::kFloat ? Tolerance{1e-5, 1e-5} : Tolerance{2e-2, 2e-2};
  const char* names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(grads[i].scalar_type(), c.dtype) << names[i];
    EXPECT_TRUE(close(grads[i], expected[i], tol)) << names[i];
  }
}

INSTANTIATE_TEST_SUITE_P(Fp32, TorchAttentionGradTest, ::testing::ValuesIn(kFp32Cases), case_name);
INSTANTIATE_TEST_SUITE_P(Bf16, TorchAttentionGradTest,
                         ::testing::Values(kBf16Cases[0], kBf16Cases[1]), case_name);

// ---- layout behaviour ---------------------------------------------------------------------------

TEST(TorchAttentionThdTest, DocumentsNeverSeeEachOther) {
  const AttentionCase c{"", at::kFloat, 4, 2, 8, 8, 2, 0, 0, 0, {4, 6, 3}};
  Inputs in = make_inputs(c, 13);
  const at::Tensor before = ref::detail::attention_chunked(in.args, c.query_chunk);
  // Change every key and value of the middle document (tokens 4..9): the others must not move.
  ops::AttentionArgs changed = in.args;
  changed.k = in.k.clone();
  changed.v = in.v.clone();
  changed.k.narrow(0, 4, 6).normal_();
  changed.v.narrow(0, 4, 6).normal_();
  const at::Tensor after = ref::detail::attention_chunked(changed, c.query_chunk);
  EXPECT_TRUE(at::equal(after.narrow(0, 0, 4), before.narrow(0, 0, 4)));
  EXPECT_TRUE(at::equal(after.narrow(0, 10, 3), before.narrow(0, 10, 3)));
  EXPECT_FALSE(at::equal(after.narrow(0, 4, 6), before.narrow(0, 4, 6)));
}

TEST(TorchAttentionThdTest, PackedDocumentsEqualOneBatchRowEach) {
  // The same two sequences as THD and as a BSHD batch of one row each: same numbers.
  const AttentionCase c{"", at::kFloat, 4, 2, 8, 8, 3, 0, 0, 0, {5, 5}};
  const Inputs in = make_inputs(c, 14);
  const at::Tensor thd = ref::detail::attention_chunked(in.args, 3);
  ops::AttentionArgs bshd;
  bshd.q = in.q.view({2, 5, 4, 8});
  bshd.k = in.k.view({2, 5, 2, 8});
  bshd.v = in.v.view({2, 5, 2, 8});
  bshd.softmax_scale = in.args.softmax_scale;
  const at::Tensor batched = ref::detail::attention_chunked(bshd, 3);
  EXPECT_TRUE(close(batched.view({10, 4, 8}), thd, {1e-6, 1e-6}));
}

TEST(TorchAttentionLayoutTest, AcceptsNonContiguousInputs) {
  // q, k, v as slices of a fused qkv projection [B, S, Hq + 2 Hkv, D], as model code makes them.
  at::manual_seed(15);
  const at::Tensor qkv = at::randn({2, 6, 4 + 2 + 2, 8});
  ops::AttentionArgs args;
  args.q = qkv.narrow(2, 0, 4);
  args.k = qkv.narrow(2, 4, 2);
  args.v = qkv.narrow(2, 6, 2);
  args.softmax_scale = 0.3;
  const at::Tensor expected =
      naive_attention(args.q.to(at::kDouble), args.k.to(at::kDouble), args.v.to(at::kDouble), 0.3);
  EXPECT_TRUE(close(ref::detail::attention_chunked(args, 4), expected, tolerance(at::kFloat)));
}

TEST(TorchAttentionLayoutTest, FirstQueryAttendsOnlyToItself) {
  at::manual_seed(16);
  ops::AttentionArgs args;
  args.q = at::randn({1, 4, 2, 8});
  args.k = at::randn({1, 4, 2, 8});
  args.v = at::randn({1, 4, 2, 8});
  args.softmax_scale = 0.5;
  const at::Tensor out = ref::attention(args);
  EXPECT_TRUE(at::equal(out[0][0], args.v[0][0]));
}

TEST(TorchAttentionLayoutTest, RunsUnderInferenceMode) {
  const AttentionCase c{"", at::kFloat, 4, 2, 8, 8, 2, 0, 0, 0, {3, 4}};
  const Inputs in = make_inputs(c, 17);
  const at::Tensor expected = ref::attention(in.args);
  const c10::InferenceMode inference;
  EXPECT_TRUE(at::equal(ref::attention(in.args), expected));
}

} // namespace
} // namespace kiln
