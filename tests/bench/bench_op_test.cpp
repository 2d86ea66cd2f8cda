// `kiln bench op`: FLOP formulas (shared/perf.md's worked examples), the shape parser, the
// sparse_mla index generator, and the command on the CPU with the torch backend.
#include "bench/measure.h"
#include "bench/ops.h"
#include "kiln/sdk/error.h"

#include "support/run_kiln.h"
#include "support/scratch_dir.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

namespace {

using kiln::test::run_kiln;

TEST(BenchFlopsTest, SparseMlaForwardMatchesPerfMdFloor) {
  // perf.md §Floors: sparse MLA fwd, T=32768, topk 2048, H=64: 9.35 TFLOP.
  const double flops = kiln::bench::sparse_mla_forward_flops(32768, 64, 2048, 512, 64);
  EXPECT_NEAR(flops / 1e12, 9.35, 0.005);
  EXPECT_DOUBLE_EQ(flops, 2.0 * 64 * (576 + 512) * 2048.0 * 32768);
}

TEST(BenchFlopsTest, SparseMlaBackwardIsPerfMdRule) {
  EXPECT_DOUBLE_EQ(kiln::bench::sparse_mla_backward_flops(4096, 64, 2048, 512, 64),
                   2.0 * 64 * 2048 * 4096 * (2 * 512 + 3 * 576));
}

TEST(BenchFlopsTest, IndexerMatchesPerfMdFloor) {
  // perf.md §Floors: indexer, T=32768, H_I=32, D=128, causal: 4.4 TFLOP.
  const double flops = kiln::bench::indexer_flops(32768, 32, 128);
  EXPECT_NEAR(flops / 1e12, 4.4, 0.01);
  EXPECT_DOUBLE_EQ(flops, 2.0 * (32768.0 * 32769 / 2) * 32 * 128);
}

TEST(BenchFlopsTest, MoeMatchesPerfMdGlm45AirLayer) {
  // perf.md §Floors: GLM-4.5-Air MoE layer at T=8192: 2.55 TFLOP (8 routed experts of width
  // 1408 plus the shared expert, hidden 4096, SwiGLU).
  const double routed = kiln::bench::moe_experts_flops(8192, 8, 4096, 1408, true);
  const double shared = kiln::bench::moe_experts_flops(8192, 1, 4096, 1408, true);
  EXPECT_NEAR((routed + shared) / 1e12, 2.55, 0.005);
  EXPECT_DOUBLE_EQ(kiln::bench::moe_experts_flops(10, 2, 3, 4, false), 2.0 * 10 * 2 * 3 * 4 * 2);
}

TEST(BenchFlopsTest, AttentionCountsOnlyCausalPairs) {
  // Sq = Sk = 4: 4 + 3 + 2 + 1 = 10 visible pairs.
  EXPECT_DOUBLE_EQ(kiln::bench::attention_forward_flops(1, 4, 4, 2, 8, 8), 2.0 * 2 * 10 * 16);
  // Decoding 1 query against 5 keys: 5 pairs.
  EXPECT_DOUBLE_EQ(kiln::bench::attention_forward_flops(1, 1, 5, 1, 8, 8), 2.0 * 5 * 16);
}

TEST(BenchShapeTest, ParsesAndResolvesDefaults) {
  const auto& spec = kiln::bench::find_op("sparse_mla");
  const auto shape =
      kiln::bench::resolve_shape(spec, kiln::bench::parse_shape("T=16384,H=64,topk=2048"));
  EXPECT_EQ(shape.at("T"), 16384);
  EXPECT_EQ(shape.at("Tk"), 16384); // defaults to T
  EXPECT_EQ(shape.at("L"), 512);
  EXPECT_EQ(shape.at("Dv"), 256);
  EXPECT_EQ(shape.str(), "T=16384,H=64,topk=2048,Tk=16384,L=512,R=64,Dv=256");
}

TEST(BenchShapeTest, BadSyntaxIsUserError) {
  for (const char* bad : {"T=abc", "T", "=3", "T=0", "T=1,T=2", "T=1,,H=2", "T=-4"}) {
    try {
      kiln::bench::parse_shape(bad);
      ADD_FAILURE() << bad;
    } catch (const kiln::Error& e) {
      EXPECT_EQ(e.kind(), kiln::ErrorKind::kUser) << bad;
      EXPECT_NE(std::string(e.what()).find("--shape"), std::string::npos) << e.what();
    }
  }
}

TEST(BenchInputsTest, SparseMlaIndicesAreCausalDistinctAndPadded) {
  const auto& spec = kiln::bench::find_op("sparse_mla");
  const auto shape = kiln::bench::resolve_shape(
      spec, kiln::bench::parse_shape("T=40,Tk=48,H=2,topk=16,L=8,R=4,Dv=6"));
  at::manual_seed(3);
  const auto in = spec.make_inputs(shape, at::kFloat, at::kCPU);
  const at::Tensor idx = in.tensors[2]; // [T, 1, topk]
  ASSERT_EQ(idx.sizes(), (at::IntArrayRef{40, 1, 16}));
  ASSERT_EQ(idx.scalar_type(), at::kInt);
  for (int64_t t = 0; t < 40; ++t) {
    const int64_t pos = 48 - 40 + t, visible = pos + 1;
    auto row = std::get<0>(idx[t][0].sort());
    const int64_t valid = row.ge(0).sum().item<int64_t>();
    EXPECT_EQ(valid, std::min<int64_t>(16, visible)) << t;
    const at::Tensor picked = row.narrow(0, 16 - valid, valid);
    EXPECT_LE(picked.max().item<int64_t>(), pos) << t;
    EXPECT_EQ(std::get<0>(at::_unique(picked)).numel(), valid) << t; // distinct
  }
}

TEST(BenchCompareTest, SetsTellNearTiesFromWrongPicks) {
  // Scores of keys 0..4 for every row: keys 2 and 3 tie.
  const at::Tensor scores = at::tensor({5.0f, 4.0f, 3.0f, 3.0f, 1.0f});
  auto score = [&](const at::Tensor& rows, const at::Tensor& keys) {
    return scores.index_select(0, keys.clamp_min(0).flatten()).view(keys.sizes());
  };
  auto rows = [](std::vector<int32_t> v) { return at::tensor(v, at::kInt).view({-1, 1, 3}); };
  const at::Tensor ref = rows({0, 1, 2, /**/ 0, 1, 2, /**/ 0, 1, 2, /**/ 0, 1, -1});
  const at::Tensor mine = rows({2, 1, 0, /**/ 0, 1, 3, /**/ 0, 1, 4, /**/ 0, 1, 2});
  const auto stats = kiln::bench::compare_sets(mine, ref, score);
  EXPECT_EQ(stats.rows, 4);
  EXPECT_EQ(stats.rows_differ, 3);             // order does not matter (row 0)
  EXPECT_EQ(stats.rows_differ_beyond_ties, 2); // row 1 is a tie; row 2 picks a low key; row 3
                                               // has a different count of -1 slots
  // row 2: the reference's k-th score 3, its pick 1, the reference's largest 5
  EXPECT_DOUBLE_EQ(stats.max_pick_gap, (3.0 - 1.0) / 5.0);
}

TEST(BenchCompareTest, ValuesGiveAbsAndRelativeToReferenceMax) {
  const auto e = kiln::bench::compare_values(at::tensor({1.0f, 2.5f}), at::tensor({1.0f, 2.0f}));
  EXPECT_DOUBLE_EQ(e.max_abs, 0.5);
  EXPECT_DOUBLE_EQ(e.max_rel, 0.25);
}

class BenchCliTest : public kiln::test::ScratchDirTest {};

// Small shapes per op: the command on the CPU, torch against itself in float32.
const char* kSmallShapes[][2] = {
    {"sparse_mla", "T=48,H=4,topk=16,L=32,R=8,Dv=16"},
    {"indexer_topk", "T=96,H_I=4,D_I=16,topk=8"},
    {"attention", "B=2,S=32,Hq=4,Hkv=2,D=16"},
    {"moe_experts", "tokens=32,E=8,k=2,H=32,I=16"},
    {"rms_norm", "T=16,D=64"},
    {"mamba2_scan", "B=2,L=20,H=4,P=8,G=2,N=8"},
    {"causal_conv1d", "B=2,L=20,C=16,K=4"},
    {"linear_cross_entropy", "T=24,H=16,V=70"},
    {"adamw", "N=100"},
};

TEST_F(BenchCliTest, EveryOpRunsWithTableAndJsonAndZeroErrorInFloat32) {
  for (const auto& [op, shape] : kSmallShapes) {
    const auto r =
        run_kiln(fmt::format("bench op --op {} --backends torch,auto --shape {} "
                             "--dtype fp32 --device cpu --steps 2 --warmup 1 "
                             "--backward --json out.json",
                             op, shape));
    ASSERT_EQ(r.code, 0) << op << "\n" << r.out;
    for (const char* column :
         {"backend", "pass", "median ms", "TFLOP/s", "% peak", "peak MiB", "wall clock"}) {
      EXPECT_NE(r.out.find(column), std::string::npos) << op << ": " << column << "\n" << r.out;
    }
    const bool integer = std::string(op) == "indexer_topk";
    const bool differentiable = !integer && std::string(op) != "adamw";
    EXPECT_NE(r.out.find(integer ? "rows differ" : "max abs err"), std::string::npos) << r.out;

    const auto json = nlohmann::json::parse(read_file("out.json"));
    ASSERT_TRUE(json.is_array()) << op;
    ASSERT_EQ(json.size(), 2u) << op;
    EXPECT_EQ(json[0]["backend"], "torch");
    EXPECT_EQ(json[1]["backend"], "auto");
    EXPECT_EQ(json[1]["chosen"], "torch");
    for (const auto& b : json) {
      EXPECT_EQ(b["op"], op);
      EXPECT_EQ(b["dtype"], "float32");
      EXPECT_EQ(b["device"], "cpu");
      const auto& fwd = b["forward"];
      for (const char* key : {"median_ms", "min_ms", "flops", "tflops", "pct_peak", "peak_mib",
                              "max_abs_err", "max_rel_err", "timer", "nonfinite_runs"}) {
        EXPECT_TRUE(fwd.contains(key)) << op << ": " << key;
      }
      EXPECT_GT(fwd["median_ms"].get<double>(), 0.0) << op;
      EXPECT_TRUE(fwd["pct_peak"].is_null()) << op; // no peak known on the CPU
      EXPECT_TRUE(fwd["peak_mib"].is_null()) << op;
      EXPECT_EQ(fwd["nonfinite_runs"], 0) << op;
      if (integer) {
        EXPECT_EQ(fwd["rows_differ"], 0) << op;
      } else {
        EXPECT_EQ(fwd["max_abs_err"].get<double>(), 0.0) << op;
        EXPECT_EQ(fwd["max_rel_err"].get<double>(), 0.0) << op;
      }
      if (!differentiable) {
        EXPECT_FALSE(b.contains("backward")) << op;
      } else {
        ASSERT_TRUE(b.contains("backward")) << op;
        EXPECT_EQ(b["backward"]["max_abs_err"].get<double>(), 0.0) << op;
        EXPECT_EQ(b["backward"]["nonfinite_runs"], 0) << op;
        ASSERT_TRUE(b.contains("forward_backward")) << op;
        EXPECT_GT(b["forward_backward"]["median_ms"].get<double>(), 0.0) << op;
        EXPECT_EQ(b["forward_backward"]["nonfinite_runs"], 0) << op;
      }
      const std::string name(op);
      if (name != "rms_norm" && name != "mamba2_scan" && name != "causal_conv1d" &&
          name != "adamw") {
        EXPECT_GT(fwd["flops"].get<double>(), 0.0) << op;
        EXPECT_GT(fwd["tflops"].get<double>(), 0.0) << op;
      } else {
        EXPECT_TRUE(fwd["flops"].is_null()) << op; // no FLOP convention: not counted
      }
    }
  }
}

TEST_F(BenchCliTest, Bfloat16ErrorIsSmallButNonzero) {
  const auto r = run_kiln(
      "bench op --op sparse_mla --shape T=32,H=2,topk=8,L=32,R=8,Dv=16 "
      "--dtype bf16 --device cpu --steps 1 --warmup 0 --json out.json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto fwd = nlohmann::json::parse(read_file("out.json"))[0]["forward"];
  EXPECT_GT(fwd["max_abs_err"].get<double>(), 0.0);
  EXPECT_LT(fwd["max_rel_err"].get<double>(), 0.05);
}

TEST_F(BenchCliTest, BadInputIsOneLineExit2) {
  const std::pair<std::string, std::string> cases[] = {
      {"bench op --op nope --device cpu", "unknown op 'nope'"},
      {"bench op --op rope --device cpu", "no input generator yet"},
      {"bench op --op sparse_mla --shape T=abc --device cpu", "'T' must be a positive integer"},
      {"bench op --op sparse_mla --shape X=3 --device cpu", "has no key 'X'"},
      {"bench op --op sparse_mla --backends torch,nope --device cpu",
       "unknown backend 'nope'; registered backends: " + kiln::test::builtin_backends()},
      {"bench op --op sparse_mla --dtype int8 --device cpu", "--dtype"},
      {"bench op --op sparse_mla --steps 0 --device cpu", "--steps"},
      {"bench model recipe.toml", "missing --ab KEY=V1,V2"},
      {"bench", "expected a subcommand"},
  };
  for (const auto& [args, message] : cases) {
    const auto r = run_kiln(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(message), std::string::npos) << args << "\n" << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << "\n" << r.out;
  }
}

TEST_F(BenchCliTest, HelpListsOpsAndKeys) {
  const auto r = run_kiln("help bench");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("sparse_mla    T=4096,H=64,topk=2048,Tk=T"), std::string::npos) << r.out;
}

} // namespace
