// `kiln bench op` on a GPU: a backend's peak memory is its own, whatever its place in --backends;
// an output a backend leaves unwritten is reported, not read from what an earlier row left.
#include "support/cuda_backend.h"
#include "support/run_kiln.h"
#include "support/scratch_dir.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>

namespace {

using kiln::test::run_kiln;

class BenchGpuTest : public kiln::test::ScratchDirTest {};

// The torch reference creates cuBLAS's workspace (32 MiB on an H100) and the allocator keeps it:
// without prime_backends and the per-row baseline every row after the first reference run read
// that much more, so `cuda` read 32 MiB less in front of `torch` than behind it. Skipped where
// the cuda backend's kernels cannot run (no GPU, or not compute capability 9.0).
TEST_F(BenchGpuTest, PeakMemoryIsTheBackendsOwnInEitherOrder) {
  if (const std::string why = kiln::test::cuda_backend_unavailable(); !why.empty()) {
    GTEST_SKIP() << why;
  }
  const std::string cuda = kiln::test::cuda_backend_under_test();
  auto peaks = [&](const std::string& backends) {
    std::map<std::string, double> mib;
    const auto r = run_kiln("bench op --op indexer_topk --backends " + backends +
                            " --shape T=1024,H_I=8,D_I=64,topk=64 --device cuda --steps 2 "
                            "--warmup 1 --json out.json");
    EXPECT_EQ(r.code, 0) << r.out;
    if (r.code != 0) return mib;
    for (const auto& row : nlohmann::json::parse(read_file("out.json"))) {
      mib[row["backend"].get<std::string>()] = row["forward"]["peak_mib"].get<double>();
    }
    return mib;
  };
  const auto first = peaks("torch," + cuda), second = peaks(cuda + ",torch");
  ASSERT_EQ(first.size(), 2u);
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(first.at(cuda), second.at(cuda));
  EXPECT_EQ(first.at("torch"), second.at("torch"));
  // The inputs and the output at least: K (1024 x 64 bf16) and the [1024, 64] int32 indices.
  EXPECT_GT(first.at(cuda), 0.25);
}

// tests/plugins' `testlazy` returns its outputs unwritten (at::empty). Behind a torch row, the
// caching allocator may hand them the very blocks that held torch's correct outputs: before
// every unused block was poisoned, a build of the cuda backend whose selection never wrote its
// rows read "rows differ 0.024%, 0 non-finite runs", as the real kernel did. Now each of its runs
// (2 timed and the correctness run) must read as unwritten, for an integer and a float output.
TEST_F(BenchGpuTest, AnUnwrittenOutputIsReportedNotTakenFromAnEarlierRow) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU";
  const std::string env = std::string("KILN_PLUGIN_PATH=") + KILN_TEST_PLUGIN_CASES + "/lazy";
  auto rows = [&](const std::string& op, const std::string& shape) {
    std::map<std::string, nlohmann::json> by_backend;
    const auto r = run_kiln("bench op --op " + op + " --backends torch,testlazy --shape " + shape +
                                " --device cuda --steps 2 --warmup 1 --json out.json",
                            env);
    EXPECT_EQ(r.code, 0) << r.out;
    if (r.code != 0) return by_backend;
    EXPECT_NE(r.out.find("warning: testlazy fwd: 3 run(s) gave non-finite or unwritten output"),
              std::string::npos)
        << r.out;
    for (const auto& row : nlohmann::json::parse(read_file("out.json"))) {
      by_backend[row["backend"].get<std::string>()] = row["forward"];
    }
    return by_backend;
  };

  const auto topk = rows("indexer_topk", "T=1024,H_I=8,D_I=64,topk=64");
  ASSERT_EQ(topk.size(), 2u);
  EXPECT_EQ(topk.at("torch")["nonfinite_runs"], 0);
  EXPECT_EQ(topk.at("torch")["rows_differ_beyond_ties"], 0);
  EXPECT_EQ(topk.at("testlazy")["nonfinite_runs"], 3);
  EXPECT_EQ(topk.at("testlazy")["rows_differ"], 1024); // every row: its slots are all poison
  EXPECT_EQ(topk.at("testlazy")["rows_differ_beyond_ties"], 1024);

  const auto norm = rows("rms_norm", "T=256,D=512");
  ASSERT_EQ(norm.size(), 2u);
  EXPECT_EQ(norm.at("torch")["nonfinite_runs"], 0);
  EXPECT_EQ(norm.at("testlazy")["nonfinite_runs"], 3);
}

} // namespace
