// The op schemas' entry points: a valid call passes validation and reaches the kernel with its
// arguments intact; a bad call (rank, sizes, dtype, device, values of CPU index tensors) throws a
// one-line user kiln::Error that names the op and the argument, and never reaches a kernel.
// Every op gets a fake CPU kernel (backend "fake"), so no real backend is involved.
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/kernel.h"
#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace kiln {
namespace {

using sdk::Dispatcher;

// ---- fake kernels -------------------------------------------------------------------------------

template <class Op>
int& calls() {
  static int n = 0;
  return n;
}

template <class Op>
std::optional<typename Op::Args>& last_args() {
  static std::optional<typename Op::Args> args;
  return args;
}

template <class Op>
void add_fake_kernel() {
  calls<Op>() = 0;
  last_args<Op>().reset();
  sdk::Kernel<Op> kernel;
  kernel.backend = "fake";
  kernel.device = c10::DeviceType::CPU;
  kernel.run = [](const typename Op::Args& args) {
    ++calls<Op>();
    last_args<Op>() = args;
    if constexpr (!std::is_void_v<typename Op::Result>) return typename Op::Result{};
  };
  Dispatcher::global().add_kernel(sdk::make_kernel_record<Op>(std::move(kernel)));
}

class OpSchemaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Dispatcher::global().reset_for_testing();
    add_fake_kernel<ops::RmsNormOp>();
    add_fake_kernel<ops::GatedRmsNormOp>();
    add_fake_kernel<ops::RopeOp>();
    add_fake_kernel<ops::AttentionOp>();
    add_fake_kernel<ops::IndexerTopkOp>();
    add_fake_kernel<ops::SparseMlaOp>();
    add_fake_kernel<ops::MoeRouteOp>();
    add_fake_kernel<ops::MoeExpertsOp>();
    add_fake_kernel<ops::CausalConv1dOp>();
    add_fake_kernel<ops::Mamba2ScanOp>();
    add_fake_kernel<ops::LinearCrossEntropyOp>();
    add_fake_kernel<ops::AdamwOp>();
    Dispatcher::global().configure({.default_backend = "fake"});
  }
  void TearDown() override { Dispatcher::global().reset_for_testing(); }
};

// ---- helpers ------------------------------------------------------------------------------------

at::Tensor f32(c10::IntArrayRef sizes) {
  return at::zeros(sizes, at::kFloat);
}
at::Tensor bf16(c10::IntArrayRef sizes) {
  return at::zeros(sizes, at::kBFloat16);
}
at::Tensor i64(c10::IntArrayRef sizes) {
  return at::zeros(sizes, at::kLong);
}
at::Tensor meta(c10::IntArrayRef sizes) {
  return at::empty(sizes, at::device(at::kMeta));
}
at::Tensor cu(std::initializer_list<int32_t> offsets) {
  return at::tensor(std::vector<int32_t>(offsets), at::kInt);
}

/// Runs `call` and checks that it throws a one-line user kiln::Error starting with "<op>: " and
/// naming '<arg>' (and containing `detail` when given), and that no kernel ran.
template <class Op, class F>
::testing::AssertionResult rejects(F&& call, std::string_view arg, std::string_view detail = {}) {
  const int before = calls<Op>();
  try {
    call();
  } catch (const Error& e) {
    const std::string& msg = e.message();
    const std::string prefix = std::string(Op::kName) + ": ";
    if (e.kind() != ErrorKind::kUser)
      return ::testing::AssertionFailure() << "not a user error: " << msg;
    if (!msg.starts_with(prefix)) return ::testing::AssertionFailure() << "no op prefix: " << msg;
    if (msg.find("'" + std::string(arg) + "'") == std::string::npos) {
      return ::testing::AssertionFailure() << "argument '" << arg << "' not named: " << msg;
    }
    if (!detail.empty() && msg.find(detail) == std::string::npos) {
      return ::testing::AssertionFailure() << "'" << detail << "' missing: " << msg;
    }
    if (msg.find('\n') != std::string::npos)
      return ::testing::AssertionFailure() << "multi-line: " << msg;
    if (calls<Op>() != before) return ::testing::AssertionFailure() << "the kernel ran: " << msg;
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "not a kiln::Error: " << e.what();
  }
  return ::testing::AssertionFailure() << "no error thrown";
}

// ---- op names -----------------------------------------------------------------------------------

TEST(OpNamesTest, ListsEveryOpOnceWithItsTraitsName) {
  const auto names = ops::op_names();
  const std::string_view traits[] = {
      ops::RmsNormOp::kName,    ops::GatedRmsNormOp::kName,       ops::RopeOp::kName,
      ops::AttentionOp::kName,  ops::IndexerTopkOp::kName,        ops::SparseMlaOp::kName,
      ops::MoeRouteOp::kName,   ops::MoeExpertsOp::kName,         ops::CausalConv1dOp::kName,
      ops::Mamba2ScanOp::kName, ops::LinearCrossEntropyOp::kName, ops::AdamwOp::kName};
  ASSERT_EQ(names.size(), std::size(traits));
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(names[i], traits[i]); // same fixed order
}

// ---- rms_norm -----------------------------------------------------------------------------------

TEST_F(OpSchemaTest, RmsNormValidCallDispatches) {
  ops::rms_norm(bf16({2, 3, 8}), bf16({8}), 1e-5);
  ASSERT_EQ(calls<ops::RmsNormOp>(), 1);
  EXPECT_EQ(last_args<ops::RmsNormOp>()->eps, 1e-5);
}

TEST_F(OpSchemaTest, RmsNormRejectsBadArguments) {
  using Op = ops::RmsNormOp;
  EXPECT_TRUE(rejects<Op>([] { ops::rms_norm(f32({2, 8}), f32({4}), 1e-5); }, "weight", "[8]"));
  EXPECT_TRUE(rejects<Op>([] { ops::rms_norm(i64({2, 8}), f32({8}), 1e-5); }, "x", "int64"));
  EXPECT_TRUE(rejects<Op>([] { ops::rms_norm(f32({2, 8}), f32({8}), -1); }, "eps"));
  EXPECT_TRUE(rejects<Op>([] { ops::rms_norm(f32({2, 8}), at::Tensor(), 1e-5); }, "weight"));
  EXPECT_TRUE(rejects<Op>([] { ops::rms_norm(f32({2, 8}), meta({8}), 1e-5); }, "weight", "meta"));
}

// ---- gated_rms_norm -----------------------------------------------------------------------------

TEST_F(OpSchemaTest, GatedRmsNormValidCallDispatchesWithAndWithoutGate) {
  ops::gated_rms_norm(f32({4, 16}), bf16({4, 16}), bf16({16}), 8, 1e-5);
  ops::gated_rms_norm(f32({4, 16}), at::Tensor(), bf16({16}), 16, 1e-5);
  ASSERT_EQ(calls<ops::GatedRmsNormOp>(), 2);
  EXPECT_FALSE(last_args<ops::GatedRmsNormOp>()->gate.defined());
  EXPECT_EQ(last_args<ops::GatedRmsNormOp>()->group_size, 16);
}

TEST_F(OpSchemaTest, GatedRmsNormRejectsBadArguments) {
  using Op = ops::GatedRmsNormOp;
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::gated_rms_norm(f32({4, 16}), f32({4, 8}), f32({16}), 8, 1e-5);
      },
      "gate", "[4, 16]"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::gated_rms_norm(f32({4, 16}), f32({4, 16}), f32({16}), 6, 1e-5);
      },
      "group_size", "6"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::gated_rms_norm(f32({4, 16}), f32({4, 16}), f32({8}), 8, 1e-5);
      },
      "weight"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::gated_rms_norm(f32({4, 16}), i64({4, 16}), f32({16}), 8, 1e-5);
      },
      "gate", "int64"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::gated_rms_norm(f32({4, 16}), meta({4, 16}), f32({16}), 8, 1e-5);
      },
      "gate", "device"));
}

// ---- rope ---------------------------------------------------------------------------------------

TEST_F(OpSchemaTest, RopeValidCallsDispatchInBothLayouts) {
  ops::rope(bf16({2, 5, 4, 64}), f32({2, 5, 16}), f32({2, 5, 16}), ops::RopeStyle::kHalf);
  ops::rope(bf16({7, 4, 64}), f32({7, 32}), f32({7, 32}), ops::RopeStyle::kInterleaved);
  ASSERT_EQ(calls<ops::RopeOp>(), 2);
  EXPECT_EQ(last_args<ops::RopeOp>()->style, ops::RopeStyle::kInterleaved);
}

TEST_F(OpSchemaTest, RopeRejectsBadArguments) {
  using Op = ops::RopeOp;
  const auto half = ops::RopeStyle::kHalf;
  EXPECT_TRUE(rejects<Op>([&] { ops::rope(f32({7, 64}), f32({7, 16}), f32({7, 16}), half); }, "x"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::rope(f32({7, 4, 64}), f32({7, 1, 16}), f32({7, 1, 16}), half);
      },
      "cos", "2 dims, [T, R/2]"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::rope(f32({2, 5, 4, 64}), f32({2, 6, 16}), f32({2, 6, 16}), half);
      },
      "cos", "S (from x)"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::rope(f32({7, 4, 64}), f32({7, 16}), f32({7, 8}), half);
      },
      "sin"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::rope(f32({7, 4, 16}), f32({7, 16}), f32({7, 16}), half);
      },
      "cos", "R = 32"));
}

// ---- attention ----------------------------------------------------------------------------------

TEST_F(OpSchemaTest, AttentionValidCallsDispatch) {
  ops::attention(bf16({2, 5, 8, 64}), bf16({2, 5, 2, 64}), bf16({2, 5, 2, 32}), 0.125); // GQA
  ops::attention(bf16({2, 1, 8, 64}), bf16({2, 9, 2, 64}), bf16({2, 9, 2, 64}), 0.125); // decode
  ops::attention({.q = bf16({9, 8, 64}),
                  .k = bf16({9, 2, 64}),
                  .v = bf16({9, 2, 64}),
                  .cu_seqlens = cu({0, 4, 9}),
                  .max_seqlen = 5,
                  .softmax_scale = 0.125});
  EXPECT_FALSE(last_args<ops::AttentionOp>()->cu_seqlens_k.defined());
  ops::attention({.q = bf16({2, 8, 64}),
                  .k = bf16({9, 2, 64}),
                  .v = bf16({9, 2, 64}),
                  .cu_seqlens = cu({0, 1, 2}),
                  .cu_seqlens_k = cu({0, 4, 9}),
                  .max_seqlen = 1,
                  .max_seqlen_k = 5,
                  .softmax_scale = 0.125});
  ASSERT_EQ(calls<ops::AttentionOp>(), 4);
  EXPECT_EQ(last_args<ops::AttentionOp>()->key_max_seqlen(), 5);
}

TEST_F(OpSchemaTest, AttentionRejectsBadShapesAndDtypes) {
  using Op = ops::AttentionOp;
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::attention(f32({2, 5, 8, 64}), f32({2, 5, 3, 64}), f32({2, 5, 3, 64}), 1);
      },
      "k", "Hkv"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::attention(f32({2, 5, 8, 64}), f32({2, 5, 2, 32}), f32({2, 5, 2, 64}), 1);
      },
      "k", "D (from q)"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::attention(f32({2, 5, 8, 64}), bf16({2, 5, 2, 64}), f32({2, 5, 2, 64}), 1);
      },
      "k", "bfloat16"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::attention(f32({2, 5, 8, 64}), f32({2, 4, 2, 64}), f32({2, 4, 2, 64}), 1);
      },
      "k", "Sk"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::attention(f32({2, 5, 8, 64}), f32({3, 5, 2, 64}), f32({3, 5, 2, 64}), 1);
      },
      "k", "B (from q)"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::attention(f32({5, 8, 64}), f32({5, 2, 64}), f32({5, 2, 64}), 1);
      },
      "q", "cu_seqlens"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::attention(f32({2, 5, 8, 64}), f32({2, 5, 2, 64}), f32({2, 5, 2, 64}), 0);
      },
      "softmax_scale"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::attention(f32({2, 5, 8, 64}), meta({2, 5, 2, 64}), f32({2, 5, 2, 64}), 1);
      },
      "k", "one device"));
}

TEST_F(OpSchemaTest, AttentionRejectsBadVarlenOffsets) {
  using Op = ops::AttentionOp;
  auto thd = [](at::Tensor cu_seqlens, int64_t max_seqlen = 5) {
    ops::attention({.q = f32({9, 8, 64}),
                    .k = f32({9, 2, 64}),
                    .v = f32({9, 2, 64}),
                    .cu_seqlens = std::move(cu_seqlens),
                    .max_seqlen = max_seqlen,
                    .softmax_scale = 1});
  };
  EXPECT_TRUE(rejects<Op>([&] { thd(cu({0, 4, 8})); }, "cu_seqlens", "9")); // must end at T
  EXPECT_TRUE(rejects<Op>([&] { thd(cu({1, 4, 9})); }, "cu_seqlens", "start at 0"));
  EXPECT_TRUE(rejects<Op>([&] { thd(cu({0, 5, 4, 9})); }, "cu_seqlens", "non-decreasing"));
  EXPECT_TRUE(rejects<Op>([&] { thd(i64({3})); }, "cu_seqlens", "int32"));
  EXPECT_TRUE(rejects<Op>([&] { thd(cu({0})); }, "cu_seqlens", "N + 1"));
  EXPECT_TRUE(rejects<Op>([&] { thd(cu({0, 4, 9}), 0); }, "max_seqlen"));
  EXPECT_TRUE(rejects<Op>([&] { thd(cu({0, 4, 9}), 4); }, "max_seqlen", "one of 5"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::attention({.q = f32({2, 5, 8, 64}),
                        .k = f32({2, 5, 2, 64}),
                        .v = f32({2, 5, 2, 64}),
                        .cu_seqlens_k = cu({0, 5}),
                        .softmax_scale = 1});
      },
      "cu_seqlens_k"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::attention({.q = f32({2, 8, 64}),
                        .k = f32({9, 2, 64}),
                        .v = f32({9, 2, 64}),
                        .cu_seqlens = cu({0, 1, 2}),
                        .cu_seqlens_k = cu({0, 9}),
                        .max_seqlen = 1,
                        .max_seqlen_k = 9,
                        .softmax_scale = 1});
      },
      "cu_seqlens_k", "N = 2"));
}

// ---- indexer_topk -------------------------------------------------------------------------------

TEST_F(OpSchemaTest, IndexerTopkValidCallsDispatch) {
  ops::indexer_topk(bf16({9, 4, 32}), bf16({9, 32}), f32({9, 4}), cu({0, 4, 9}), 3);
  // A context-parallel shard: 3 local queries against 12 gathered keys in a padded layout.
  ops::indexer_topk(bf16({3, 4, 32}), bf16({12, 32}), f32({3, 4}), cu({0, 4, 9}), 3, cu({5, 6, 7}),
                    cu({0, 6, 12}));
  ASSERT_EQ(calls<ops::IndexerTopkOp>(), 2);
  EXPECT_EQ(last_args<ops::IndexerTopkOp>()->topk, 3);
  EXPECT_TRUE(last_args<ops::IndexerTopkOp>()->cu_seqlens_padded.defined());
}

TEST_F(OpSchemaTest, IndexerTopkRejectsBadArguments) {
  using Op = ops::IndexerTopkOp;
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({9, 4, 32}), bf16({9, 32}), bf16({9, 4}), cu({0, 9}), 3);
      },
      "head_weights", "float32"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({9, 4, 32}), bf16({9, 16}), f32({9, 4}), cu({0, 9}), 3);
      },
      "index_k", "D_I"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({9, 4, 32}), bf16({9, 4, 32}), f32({9, 4}), cu({0, 9}), 3);
      },
      "index_k", "[Tk, D_I]"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({9, 4, 32}), bf16({12, 32}), f32({9, 4}), cu({0, 9}), 3);
      },
      "index_k", "query_indices"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({9, 4, 32}), bf16({9, 32}), f32({9, 4}), cu({0, 9}), 0);
      },
      "topk"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({9, 4, 32}), bf16({9, 32}), f32({9, 3}), cu({0, 9}), 3);
      },
      "head_weights", "[9, 4]"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({9, 4, 32}), bf16({9, 32}), f32({9, 4}), cu({0, 10}), 3);
      },
      "cu_seqlens", "at most"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({3, 4, 32}), bf16({12, 32}), f32({3, 4}), cu({0, 9}), 3, i64({3}));
      },
      "query_indices", "int32"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({3, 4, 32}), bf16({12, 32}), f32({3, 4}), cu({0, 9}), 3,
                          cu({0, 1, 12}));
      },
      "query_indices", "[0, 12)"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({3, 4, 32}), bf16({12, 32}), f32({3, 4}), cu({0, 4, 9}), 3,
                          cu({0, 1, 2}), cu({0, 12}));
      },
      "cu_seqlens_padded", "N = 2"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({3, 4, 32}), bf16({12, 32}), f32({3, 4}), cu({0, 4, 9}), 3,
                          cu({0, 1, 2}), cu({0, 3, 12}));
      },
      "cu_seqlens_padded", "document 0"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::indexer_topk(bf16({9, 4, 32}), meta({9, 32}), f32({9, 4}), cu({0, 9}), 3);
      },
      "index_k", "meta"));
}

// ---- sparse_mla ---------------------------------------------------------------------------------

TEST_F(OpSchemaTest, SparseMlaValidCallDispatches) {
  at::Tensor idx = at::full({5, 1, 4}, -1, at::kInt);
  idx.select(0, 4).fill_(6);
  ops::sparse_mla(bf16({5, 8, 72}), bf16({7, 1, 72}), idx, bf16({8, 48, 64}), 0.0625);
  ASSERT_EQ(calls<ops::SparseMlaOp>(), 1);
  EXPECT_EQ(last_args<ops::SparseMlaOp>()->softmax_scale, 0.0625);
}

TEST_F(OpSchemaTest, SparseMlaRejectsBadArguments) {
  using Op = ops::SparseMlaOp;
  const at::Tensor idx = at::zeros({5, 1, 4}, at::kInt);
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::sparse_mla(bf16({5, 8, 72}), bf16({7, 2, 72}), idx, bf16({8, 48, 64}), 1);
      },
      "kv_latent", "one latent head"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::sparse_mla(bf16({5, 8, 72}), bf16({7, 1, 64}), idx, bf16({8, 48, 64}), 1);
      },
      "kv_latent", "L + R"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::sparse_mla(bf16({5, 8, 72}), bf16({7, 1, 72}), i64({5, 1, 4}), bf16({8, 48, 64}), 1);
      },
      "topk_indices", "int32"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::sparse_mla(bf16({5, 8, 72}), bf16({7, 1, 72}), idx, bf16({8, 48, 80}), 1);
      },
      "w_vc", "kv_lora_rank"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::sparse_mla(bf16({5, 8, 72}), bf16({7, 1, 72}), idx, bf16({4, 48, 64}), 1);
      },
      "w_vc", "H (from q_absorbed)"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::sparse_mla(bf16({5, 8, 72}), bf16({7, 1, 72}), idx, f32({8, 48, 64}), 1);
      },
      "w_vc", "bfloat16"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::sparse_mla(bf16({5, 8, 72}), bf16({7, 1, 72}), idx, bf16({8, 48, 64}), -1);
      },
      "softmax_scale"));
  at::Tensor out_of_range = idx.clone();
  out_of_range[2][0][1] = 7;
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::sparse_mla(bf16({5, 8, 72}), bf16({7, 1, 72}), out_of_range, bf16({8, 48, 64}), 1);
      },
      "topk_indices", "found 7"));
}

// ---- moe_route ----------------------------------------------------------------------------------

TEST_F(OpSchemaTest, MoeRouteValidCallDispatches) {
  ops::moe_route({.logits = f32({6, 16}),
                  .e_score_correction_bias = f32({16}),
                  .top_k = 4,
                  .n_group = 4,
                  .topk_group = 2,
                  .routed_scaling_factor = 2.5});
  ops::moe_route({.logits = bf16({6, 16}), .top_k = 2, .score_func = ops::MoeScoreFunc::kSoftmax});
  ASSERT_EQ(calls<ops::MoeRouteOp>(), 2);
  EXPECT_EQ(last_args<ops::MoeRouteOp>()->score_func, ops::MoeScoreFunc::kSoftmax);
}

TEST_F(OpSchemaTest, MoeRouteRejectsBadArguments) {
  using Op = ops::MoeRouteOp;
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::moe_route({.logits = f32({6, 16, 1}), .top_k = 2});
      },
      "logits", "[N, E]"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::moe_route({.logits = f32({6, 16}), .e_score_correction_bias = bf16({16}), .top_k = 2});
      },
      "e_score_correction_bias", "float32"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::moe_route({.logits = f32({6, 16}), .e_score_correction_bias = f32({8}), .top_k = 2});
      },
      "e_score_correction_bias", "[16]"));
  EXPECT_TRUE(rejects<Op>([] { ops::moe_route({.logits = f32({6, 16}), .top_k = 17}); }, "top_k"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::moe_route({.logits = f32({6, 16}), .top_k = 2, .n_group = 3});
      },
      "n_group"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::moe_route({.logits = f32({6, 16}), .top_k = 2, .n_group = 2, .topk_group = 3});
      },
      "topk_group"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::moe_route({.logits = f32({6, 16}), .top_k = 5, .n_group = 4, .topk_group = 1});
      },
      "top_k", "kept groups"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::moe_route({.logits = f32({6, 16}), .top_k = 2, .n_group = 16, .topk_group = 2});
      },
      "n_group", ">= 2"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::moe_route({.logits = f32({6, 16}), .e_score_correction_bias = meta({16}), .top_k = 2});
      },
      "e_score_correction_bias", "meta"));
}

// ---- moe_experts --------------------------------------------------------------------------------

TEST_F(OpSchemaTest, MoeExpertsValidCallsDispatch) {
  at::Tensor indices = i64({6, 2});
  indices[1][1] = -1; // an empty slot (expert on another rank)
  ops::moe_experts(bf16({6, 32}), bf16({4, 2 * 24, 32}), bf16({4, 32, 24}), indices, f32({6, 2}),
                   ops::MoeActivation::kSwiGlu);
  ops::moe_experts(bf16({6, 32}), bf16({4, 24, 32}), bf16({4, 32, 24}), indices, bf16({6, 2}),
                   ops::MoeActivation::kRelu2);
  ASSERT_EQ(calls<ops::MoeExpertsOp>(), 2);
  EXPECT_EQ(last_args<ops::MoeExpertsOp>()->activation, ops::MoeActivation::kRelu2);
}

TEST_F(OpSchemaTest, MoeExpertsRejectsBadArguments) {
  using Op = ops::MoeExpertsOp;
  const auto swiglu = ops::MoeActivation::kSwiGlu;
  const at::Tensor idx = i64({6, 2});
  const at::Tensor w = f32({6, 2});
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::moe_experts(bf16({6, 32}), bf16({4, 24, 32}), bf16({4, 32, 24}), idx, w, swiglu);
      },
      "w_up", "2I"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::moe_experts(bf16({6, 32}), bf16({4, 48, 16}), bf16({4, 32, 24}), idx, w, swiglu);
      },
      "w_up", "H (from x)"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::moe_experts(bf16({6, 32}), bf16({4, 48, 32}), bf16({3, 32, 24}), idx, w, swiglu);
      },
      "w_down", "E (from w_up)"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::moe_experts(bf16({6, 32}), bf16({4, 48, 32}), f32({4, 32, 24}), idx, w, swiglu);
      },
      "w_down", "bfloat16"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::moe_experts(bf16({6, 32}), bf16({4, 48, 32}), bf16({4, 32, 24}), idx.to(at::kInt), w,
                         swiglu);
      },
      "indices", "int64"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::moe_experts(bf16({6, 32}), bf16({4, 48, 32}), bf16({4, 32, 24}), idx, f32({6, 3}),
                         swiglu);
      },
      "weights", "[6, 2]"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::moe_experts(bf16({6, 32}), bf16({4, 48, 32}), bf16({4, 32, 24}), idx,
                         at::zeros({6, 2}, at::kHalf), swiglu);
      },
      "weights", "float16"));
  at::Tensor bad = idx.clone();
  bad[3][0] = 4;
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::moe_experts(bf16({6, 32}), bf16({4, 48, 32}), bf16({4, 32, 24}), bad, w, swiglu);
      },
      "indices", "[0, 4) or -1"));
}

// ---- causal_conv1d ------------------------------------------------------------------------------

TEST_F(OpSchemaTest, CausalConv1dValidCallsDispatch) {
  ops::causal_conv1d({.x = bf16({2, 7, 24}), .weight = bf16({24, 4}), .bias = bf16({24})});
  ops::causal_conv1d({.x = bf16({9, 24}),
                      .weight = bf16({24, 4}),
                      .cu_seqlens = cu({0, 2, 9}),
                      .initial_state = bf16({2, 24, 3}),
                      .return_final_state = true});
  EXPECT_EQ(last_args<ops::CausalConv1dOp>()->mode, ops::CausalConv1dMode::kSequence);
  ops::causal_conv1d_update(bf16({2, 24}), bf16({2, 24, 3}), bf16({24, 4}), at::Tensor(),
                            ops::ConvActivation::kSilu);
  ASSERT_EQ(calls<ops::CausalConv1dOp>(), 3);
  EXPECT_EQ(last_args<ops::CausalConv1dOp>()->mode, ops::CausalConv1dMode::kStep);
  EXPECT_TRUE(last_args<ops::CausalConv1dOp>()->return_final_state); // always in kStep
}

TEST_F(OpSchemaTest, CausalConv1dRejectsBadArguments) {
  using Op = ops::CausalConv1dOp;
  const auto silu = ops::ConvActivation::kSilu;
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::causal_conv1d({.x = bf16({2, 7, 24}), .weight = bf16({24, 1, 4})});
      },
      "weight", "[C, K]"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::causal_conv1d({.x = bf16({2, 7, 24}), .weight = bf16({24, 1})});
      },
      "weight", "K >= 2"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::causal_conv1d({.x = bf16({2, 7, 24}), .weight = bf16({16, 4})});
      },
      "weight", "C (from x)"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::causal_conv1d({.x = bf16({7, 24}), .weight = bf16({24, 4})});
      },
      "x", "cu_seqlens"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::causal_conv1d(
            {.x = bf16({2, 7, 24}), .weight = bf16({24, 4}), .initial_state = bf16({2, 24, 4})});
      },
      "initial_state", "[2, 24, 3]"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::causal_conv1d(
            {.x = bf16({2, 7, 24}), .weight = bf16({24, 4}), .initial_state = f32({2, 24, 3})});
      },
      "initial_state", "bfloat16"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::causal_conv1d(
            {.x = bf16({2, 24}), .weight = bf16({24, 4}), .mode = ops::CausalConv1dMode::kStep});
      },
      "initial_state", "required"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::causal_conv1d_update(bf16({2, 1, 24}), bf16({2, 24, 3}), bf16({24, 4}), at::Tensor(),
                                  silu);
      },
      "x", "[B, C]"));
  EXPECT_TRUE(rejects<Op>(
      [&] {
        ops::causal_conv1d_update(bf16({2, 24}), bf16({2, 24, 3}), bf16({24, 4}), bf16({12}), silu);
      },
      "bias"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::causal_conv1d({.x = bf16({9, 24}),
                            .weight = bf16({24, 4}),
                            .cu_seqlens = cu({0, 2, 9}),
                            .initial_state = bf16({1, 24, 3})});
      },
      "initial_state", "[2, 24, 3]"));
}

// ---- mamba2_scan --------------------------------------------------------------------------------

ops::Mamba2ScanArgs scan_args(bool thd) {
  // H = 4 heads of P = 8 channels, G = 2 groups, N = 16 states.
  if (thd) {
    return {.x = bf16({9, 4, 8}),
            .dt = bf16({9, 4}),
            .A = f32({4}),
            .B = bf16({9, 2, 16}),
            .C = bf16({9, 2, 16}),
            .cu_seqlens = cu({0, 3, 9})};
  }
  return {.x = bf16({2, 5, 4, 8}),
          .dt = bf16({2, 5, 4}),
          .A = f32({4}),
          .B = bf16({2, 5, 2, 16}),
          .C = bf16({2, 5, 2, 16})};
}

TEST_F(OpSchemaTest, Mamba2ScanValidCallsDispatch) {
  ops::Mamba2ScanArgs bshd = scan_args(false);
  bshd.D = bf16({4});
  bshd.dt_bias = bf16({4});
  bshd.dt_min = 1e-3;
  ops::mamba2_scan(bshd);
  ops::Mamba2ScanArgs thd = scan_args(true);
  thd.initial_states = f32({2, 4, 8, 16});
  thd.return_final_states = true;
  ops::mamba2_scan(thd);
  ASSERT_EQ(calls<ops::Mamba2ScanOp>(), 2);
  EXPECT_TRUE(last_args<ops::Mamba2ScanOp>()->return_final_states);
}

TEST_F(OpSchemaTest, Mamba2ScanRejectsBadArguments) {
  using Op = ops::Mamba2ScanOp;
  auto with = [](bool thd, auto&& edit) {
    ops::Mamba2ScanArgs args = scan_args(thd);
    edit(args);
    return [args] { ops::mamba2_scan(args); };
  };
  EXPECT_TRUE(rejects<Op>(with(false, [](auto& a) { a.A = bf16({4}); }), "A", "float32"));
  EXPECT_TRUE(rejects<Op>(with(false, [](auto& a) { a.A = f32({3}); }), "A", "[4]"));
  EXPECT_TRUE(rejects<Op>(with(false,
                               [](auto& a) {
                                 a.B = a.C = bf16({2, 5, 3, 16});
                               }),
                          "B", "divide"));
  EXPECT_TRUE(rejects<Op>(with(false,
                               [](auto& a) {
                                 a.C = bf16({2, 5, 2, 8});
                               }),
                          "C", "B's shape"));
  EXPECT_TRUE(rejects<Op>(with(false, [](auto& a) { a.dt = bf16({2, 5, 2}); }), "dt", "[2, 5, 4]"));
  EXPECT_TRUE(rejects<Op>(with(false, [](auto& a) { a.B = f32({2, 5, 2, 16}); }), "B", "bfloat16"));
  EXPECT_TRUE(rejects<Op>(with(false, [](auto& a) { a.D = bf16({8}); }), "D"));
  EXPECT_TRUE(rejects<Op>(with(false, [](auto& a) { a.dt_bias = i64({4}); }), "dt_bias", "int64"));
  EXPECT_TRUE(rejects<Op>(with(false, [](auto& a) { a.chunk_size = 0; }), "chunk_size"));
  EXPECT_TRUE(rejects<Op>(with(false, [](auto& a) { a.dt_min = 1, a.dt_max = 0.5; }), "dt_min"));
  EXPECT_TRUE(rejects<Op>(with(false,
                               [](auto& a) {
                                 a.initial_states = bf16({2, 4, 8, 16});
                               }),
                          "initial_states", "float32"));
  EXPECT_TRUE(rejects<Op>(with(true,
                               [](auto& a) {
                                 a.initial_states = f32({3, 4, 8, 16});
                               }),
                          "initial_states", "num_seqs"));
  EXPECT_TRUE(rejects<Op>(with(true,
                               [](auto& a) {
                                 a.cu_seqlens = cu({0, 3, 8});
                               }),
                          "cu_seqlens", "9"));
  EXPECT_TRUE(rejects<Op>(with(true, [](auto& a) { a.dt = bf16({9, 4, 1}); }), "dt", "[T, H]"));
  EXPECT_TRUE(rejects<Op>(with(false, [](auto& a) { a.dt_bias = meta({4}); }), "dt_bias", "meta"));
}

// ---- linear_cross_entropy -----------------------------------------------------------------------

TEST_F(OpSchemaTest, LinearCrossEntropyValidCallDispatches) {
  at::Tensor labels = i64({6});
  labels[0] = -100;
  ops::linear_cross_entropy({.hidden = bf16({6, 32}),
                             .weight = bf16({50, 32}),
                             .labels = labels,
                             .reduction = ops::LossReduction::kSum,
                             .chunk_size = 4,
                             .return_per_token = true});
  ASSERT_EQ(calls<ops::LinearCrossEntropyOp>(), 1);
  EXPECT_EQ(last_args<ops::LinearCrossEntropyOp>()->reduction, ops::LossReduction::kSum);
}

TEST_F(OpSchemaTest, LinearCrossEntropyRejectsBadArguments) {
  using Op = ops::LinearCrossEntropyOp;
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::linear_cross_entropy(
            {.hidden = bf16({6, 32}), .weight = bf16({50, 32}), .labels = i64({6}).to(at::kInt)});
      },
      "labels", "int64"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::linear_cross_entropy(
            {.hidden = bf16({6, 32}), .weight = bf16({50, 16}), .labels = i64({6})});
      },
      "weight", "H (from hidden)"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::linear_cross_entropy(
            {.hidden = bf16({6, 32}), .weight = f32({50, 32}), .labels = i64({6})});
      },
      "weight", "bfloat16"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::linear_cross_entropy(
            {.hidden = bf16({2, 3, 32}), .weight = bf16({50, 32}), .labels = i64({6})});
      },
      "hidden", "[T, H]"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::linear_cross_entropy(
            {.hidden = bf16({6, 32}), .weight = bf16({50, 32}), .labels = i64({5})});
      },
      "labels", "[6]"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::linear_cross_entropy({.hidden = bf16({6, 32}),
                                   .weight = bf16({50, 32}),
                                   .labels = at::full({6}, 50, at::kLong)});
      },
      "labels", "found 50"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::linear_cross_entropy({.hidden = bf16({6, 32}),
                                   .weight = bf16({50, 32}),
                                   .labels = i64({6}),
                                   .chunk_size = -1});
      },
      "chunk_size"));
  EXPECT_TRUE(rejects<Op>(
      [] {
        ops::linear_cross_entropy(
            {.hidden = bf16({6, 32}), .weight = bf16({50, 32}), .labels = meta({6})});
      },
      "labels", "meta"));
}

// ---- adamw --------------------------------------------------------------------------------------

ops::AdamwArgs adamw_args(c10::IntArrayRef sizes) {
  return {.param = bf16(sizes),
          .grad = bf16(sizes),
          .master = f32(sizes),
          .exp_avg = f32(sizes),
          .exp_avg_sq = f32(sizes),
          .lr = 1e-3,
          .step = 3};
}

TEST_F(OpSchemaTest, AdamwValidCallsDispatch) {
  ops::adamw(adamw_args({4, 8}));
  ops::AdamwArgs own_master{
      .param = f32({8}), .grad = f32({8}), .exp_avg = f32({8}), .exp_avg_sq = f32({8})};
  ops::adamw(own_master); // a float32 parameter is its own master
  // Disjoint views of one buffer are separate tensors.
  const at::Tensor state = f32({2, 8});
  ops::adamw({.param = f32({8}), .grad = f32({8}), .exp_avg = state[0], .exp_avg_sq = state[1]});
  ASSERT_EQ(calls<ops::AdamwOp>(), 3);
  EXPECT_FALSE(last_args<ops::AdamwOp>()->master.defined());
}

TEST_F(OpSchemaTest, AdamwRejectsBadArguments) {
  using Op = ops::AdamwOp;
  const auto with = [](auto edit) {
    return [edit] {
      ops::AdamwArgs a = adamw_args({4, 8});
      edit(a);
      ops::adamw(a);
    };
  };
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.master = at::Tensor(); }), "master", "bfloat16"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.grad = bf16({8, 4}); }), "grad", "[4, 8]"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.grad = f32({4, 8}); }), "grad", "bfloat16"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.grad = at::Tensor(); }), "grad"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.exp_avg = bf16({4, 8}); }), "exp_avg", "float32"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.exp_avg_sq = f32({32}); }), "exp_avg_sq"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.master = meta({4, 8}); }), "master", "meta"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.param = i64({4, 8}); }), "param", "int64"));
  EXPECT_TRUE(
      rejects<Op>(with([](auto& a) { a.exp_avg_sq = a.exp_avg; }), "exp_avg_sq", "share memory"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) {
                            a.master = a.exp_avg.view({2, 16}).view({4, 8});
                          }),
                          "master", "share memory"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.step = 0; }), "step", "found 0"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.lr = -1; }), "lr"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.eps = -1e-8; }), "eps"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.weight_decay = -0.1; }), "weight_decay"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.beta1 = 1.0; }), "beta1", "[0, 1)"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.beta2 = -0.5; }), "beta2"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.grad_scale = 0; }), "grad_scale"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.grad_scale = INFINITY; }), "grad_scale"));
  EXPECT_TRUE(rejects<Op>(with([](auto& a) { a.piece_elements = 0; }), "piece_elements"));
}

} // namespace
} // namespace kiln
