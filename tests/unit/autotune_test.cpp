// The measured `auto` policy (plugins/backends/auto) through the dispatcher, on CPU with fake
// kernels of known speed: the fastest eligible kernel wins, each shape bucket is timed once, the
// winner is cached in the file KILN_AUTOTUNE_CACHE names and read back by a fresh policy, and
// every cache problem is a warning, never an error. Also the SDK's shape buckets of every op.
#include "kiln/sdk/autotune.h"
#include "core/plugin_host.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/log.h"
#include "kiln/sdk/ops.h"
#include "support/scratch_dir.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>

namespace kiln::sdk {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- shape buckets ------------------------------------------------------------------------------

at::Tensor meta(std::vector<int64_t> sizes, at::ScalarType dtype = at::kFloat) {
  return at::empty(sizes, at::TensorOptions().device(at::kMeta).dtype(dtype));
}

template <class Op>
std::string bucket_of(const typename Op::Args& args) {
  return shape_bucket(OpCall{Op::kName, c10::DeviceType::Meta, args.dtype(), &args});
}

TEST(ShapeBucketTest, RoundsUpToAPowerOfTwo) {
  EXPECT_EQ(round_up_pow2(0), 0);
  EXPECT_EQ(round_up_pow2(1), 1);
  EXPECT_EQ(round_up_pow2(2), 2);
  EXPECT_EQ(round_up_pow2(3), 4);
  EXPECT_EQ(round_up_pow2(1024), 1024);
  EXPECT_EQ(round_up_pow2(1025), 2048);
}

TEST(ShapeBucketTest, EveryOpHasItsBucket) {
  const at::Tensor cu3 = meta({3}, at::kInt), cu4 = meta({4}, at::kInt), cu5 = meta({5}, at::kInt);
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> got;
  auto add = [&]<class Op>(Op, const typename Op::Args& args, std::string expected) {
    got[Op::kName].emplace_back(bucket_of<Op>(args), std::move(expected));
  };

  add(ops::RmsNormOp{}, {.x = meta({3, 1000, 4096}), .weight = meta({4096})}, "T=4096,D=4096");
  add(ops::GatedRmsNormOp{}, {.x = meta({5, 3072}), .weight = meta({3072}), .group_size = 1536},
      "T=8,D=3072,group=1536");
  add(ops::RopeOp{}, {.x = meta({2, 700, 16, 128}), .cos = meta({2, 700, 32})},
      "T=2048,H=16,D=128,R=64");
  add(ops::RopeOp{}, {.x = meta({1000, 8, 64}), .cos = meta({1000, 16})}, "T=1024,H=8,D=64,R=32");
  add(ops::AttentionOp{},
      {.q = meta({3, 100, 32, 128}), .k = meta({3, 300, 8, 128}), .v = meta({3, 300, 8, 128})},
      "B=4,Sq=128,Sk=512,Hq=32,Hkv=8,D=128,Dv=128");
  add(ops::AttentionOp{},
      {.q = meta({1000, 32, 192}),
       .k = meta({1000, 8, 192}),
       .v = meta({1000, 8, 128}),
       .cu_seqlens = cu4,
       .max_seqlen = 600},
      "T=1024,Tk=1024,S=1024,Sk=1024,Hq=32,Hkv=8,D=192,Dv=128");
  add(ops::IndexerTopkOp{},
      {.index_q = meta({10000, 32, 128}),
       .index_k = meta({10000, 128}),
       .head_weights = meta({10000, 32}),
       .cu_seqlens = cu3,
       .topk = 2048},
      "T=16384,Tk=16384,H=32,D=128,K=2048");
  add(ops::SparseMlaOp{},
      {.q_absorbed = meta({10000, 64, 576}),
       .kv_latent = meta({5000, 1, 576}),
       .topk_indices = meta({10000, 1, 2048}, at::kInt),
       .w_vc = meta({64, 256, 512})},
      "T=16384,Tk=8192,H=64,D=576,Dv=256,K=2048");
  add(ops::MoeRouteOp{}, {.logits = meta({100, 256}), .top_k = 8, .n_group = 8},
      "T=128,E=256,K=8,G=8");
  add(ops::MoeExpertsOp{},
      {.x = meta({100, 4096}),
       .w_up = meta({128, 3072, 4096}),
       .w_down = meta({128, 4096, 1536}),
       .indices = meta({100, 8}, at::kLong),
       .weights = meta({100, 8})},
      "T=128,H=4096,I=1536,E=128,K=8,act=swiglu");
  add(ops::MoeExpertsOp{},
      {.x = meta({9, 2688}),
       .w_up = meta({128, 1856, 2688}),
       .w_down = meta({128, 2688, 1856}),
       .indices = meta({9, 6}, at::kLong),
       .weights = meta({9, 6}),
       .activation = ops::MoeActivation::kRelu2},
      "T=16,H=2688,I=1856,E=128,K=6,act=relu2");
  add(ops::CausalConv1dOp{}, {.x = meta({2, 1000, 1024}), .weight = meta({1024, 4})},
      "B=2,L=1024,C=1024,K=4");
  add(ops::CausalConv1dOp{},
      {.x = meta({1000, 1024}), .weight = meta({1024, 4}), .cu_seqlens = cu4},
      "T=1024,seqs=4,C=1024,K=4");
  add(ops::CausalConv1dOp{},
      {.x = meta({3, 1024}), .weight = meta({1024, 4}), .mode = ops::CausalConv1dMode::kStep},
      "B=4,C=1024,K=4,step");
  add(ops::Mamba2ScanOp{}, {.x = meta({1, 1000, 64, 64}), .B = meta({1, 1000, 8, 128})},
      "B=1,L=1024,H=64,P=64,G=8,N=128");
  add(ops::Mamba2ScanOp{},
      {.x = meta({1000, 64, 64}), .B = meta({1000, 8, 128}), .cu_seqlens = cu5},
      "T=1024,seqs=4,H=64,P=64,G=8,N=128");
  add(ops::LinearCrossEntropyOp{},
      {.hidden = meta({1000, 2048}),
       .weight = meta({131072, 2048}),
       .labels = meta({1000}, at::kLong)},
      "T=1024,H=2048,V=131072");
  add(ops::AdamwOp{}, {.param = meta({2048, 6144}, at::kBFloat16), .master = meta({2048, 6144})},
      "N=16777216,master=1");
  add(ops::AdamwOp{}, {.param = meta({1000})}, "N=1024,master=0");

  for (const auto& [op, cases] : got) {
    for (const auto& [actual, expected] : cases) EXPECT_EQ(actual, expected) << op;
  }
  // A new op must get its bucket (and a case here).
  for (const auto op : ops::op_names()) EXPECT_TRUE(got.count(std::string(op))) << op;
}

TEST(ShapeBucketTest, UnknownOpIsOneBucketOnTheCallsDeviceType) {
  const int args = 0;
  const OpCall call{"not_an_op", c10::DeviceType::CPU, at::kFloat, &args};
  EXPECT_EQ(shape_bucket(call), "");
  EXPECT_EQ(call_device(call), c10::Device(c10::kCPU));
  const OpCall no_args{"rms_norm", c10::DeviceType::CPU, at::kFloat, nullptr};
  EXPECT_EQ(shape_bucket(no_args), "");
}

TEST(ShapeBucketTest, CallDeviceIsTheDecidingTensorsDevice) {
  const ops::RmsNormArgs args{.x = meta({2, 8}), .weight = meta({8})};
  EXPECT_EQ(call_device(OpCall{"rms_norm", c10::DeviceType::Meta, at::kFloat, &args}),
            c10::Device(at::kMeta));
}

// ---- the policy -----------------------------------------------------------------------------

constexpr int kTimingRuns = 4; // the policy's one warm-up and three timed runs per candidate

// A fake rms_norm kernel that sleeps `delay_ms`, counts its runs and tags its output.
struct Fake {
  std::string backend;
  int delay_ms = 0;
  float tag = 0;
  std::string version = "1";
  bool throws = false;
  bool float_only = false;
  bool grad_only = false; // supports() holds only with gradients enabled
};

class AutoPolicyTest : public test::ScratchDirTest {
 protected:
  void SetUp() override {
    ScratchDirTest::SetUp();
    cache_ = dir_ / "cache" / "autotune.json";
    ::setenv("KILN_AUTOTUNE_CACHE", cache_.c_str(), 1);
    set_log_sink([this](LogLevel level, std::string_view m) {
      if (level >= LogLevel::kWarn) warnings_.emplace_back(m);
    });
    restart({{"torch", 6, 1.0f}, {"fast", 0, 2.0f}, {"slow", 12, 3.0f}});
  }
  void TearDown() override {
    set_log_sink(nullptr);
    ::unsetenv("KILN_AUTOTUNE_CACHE");
    Dispatcher::global().reset_for_testing();
    core::PluginHost::global().reset_for_testing();
    ScratchDirTest::TearDown();
  }

  // A fresh dispatcher, auto policy instance (nothing remembered) and set of kernels.
  void restart(const std::vector<Fake>& fakes) {
    auto& d = Dispatcher::global();
    d.reset_for_testing();
    core::PluginHost::global().reset_for_testing();
    const auto r = core::PluginHost::global().load_file(
        fs::path(KILN_BUILTIN_PLUGIN_DIR) / "libkiln-policy-auto.so", "test");
    ASSERT_EQ(r.status, core::PluginStatus::kLoaded) << r.reason;
    runs_.clear();
    for (const auto& f : fakes) {
      auto count = std::make_shared<std::atomic<int>>(0);
      runs_[f.backend] = count;
      Kernel<ops::RmsNormOp> k{.backend = f.backend,
                               .device = c10::DeviceType::CPU,
                               .version = f.version,
                               .run = [f, count](const ops::RmsNormArgs& a) {
                                 ++*count;
                                 if (f.throws) throw std::runtime_error("no kernel image");
                                 std::this_thread::sleep_for(std::chrono::milliseconds(f.delay_ms));
                                 return at::full_like(a.x, f.tag);
                               }};
      if (f.float_only) {
        k.supports = [](const ops::RmsNormArgs& a) { return a.x.scalar_type() == at::kFloat; };
      }
      if (f.grad_only)
        k.supports = [](const ops::RmsNormArgs&) { return at::GradMode::is_enabled(); };
      d.add_kernel(make_kernel_record(std::move(k)));
    }
    d.configure({.default_backend = "auto"});
  }

  // Runs rms_norm on x [rows, 8] and returns the tag of the kernel that ran.
  static float run(int64_t rows, at::ScalarType dtype = at::kFloat) {
    const at::Tensor x = at::randn({rows, 8}).to(dtype);
    return ops::rms_norm(x, at::ones({8}, x.options()), 1e-6).flatten()[0].item().toFloat();
  }

  int runs(const std::string& backend) const { return runs_.at(backend)->load(); }

  json read_cache() const { return json::parse(read_file(cache_)); }

  fs::path cache_;
  std::map<std::string, std::shared_ptr<std::atomic<int>>> runs_;
  std::vector<std::string> warnings_;
};

TEST_F(AutoPolicyTest, FastestEligibleKernelWinsAndEachBucketIsTimedOnce) {
  EXPECT_EQ(run(4), 2.0f);
  EXPECT_EQ(runs("slow"), kTimingRuns);
  EXPECT_EQ(runs("torch"), kTimingRuns);
  EXPECT_EQ(runs("fast"), kTimingRuns + 1);            // timed, then the real call
  for (int i = 0; i < 5; ++i) EXPECT_EQ(run(3), 2.0f); // T=3 rounds up to T=4: same bucket
  EXPECT_EQ(runs("slow"), kTimingRuns);
  EXPECT_EQ(runs("fast"), kTimingRuns + 6);

  EXPECT_EQ(run(100), 2.0f); // T=128: a new bucket is timed again
  EXPECT_EQ(runs("slow"), 2 * kTimingRuns);
  EXPECT_TRUE(warnings_.empty());
}

// A bucket whose eligible set changes between calls (supports() depending on gradients, as in
// activation recomputation) keeps one decision per set: alternating calls time nothing again.
TEST_F(AutoPolicyTest, EachEligibleSetOfABucketIsDecidedOnce) {
  restart({{"torch", 6, 1.0f}, {"fast", 0, 2.0f, "1", false, false, true}, {"slow", 12, 3.0f}});
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(run(4), 2.0f); // fast is eligible
    const c10::NoGradGuard no_grad;
    EXPECT_EQ(run(4), 1.0f); // fast is not: torch beats slow
  }
  EXPECT_EQ(runs("slow"), 2 * kTimingRuns); // timed once per set
  EXPECT_EQ(runs("fast"), kTimingRuns + 3);
  // ... and both decisions stay in memory: none is read back from the disk cache.
  const auto resolved = Dispatcher::global().resolved();
  ASSERT_EQ(resolved.size(), 1u);
  EXPECT_EQ(resolved[0].note.find("cached"), std::string::npos) << resolved[0].note;
}

TEST_F(AutoPolicyTest, ResolvedTableCarriesOneNotePerBucket) {
  run(4);
  run(4);
  run(100);
  const auto resolved = Dispatcher::global().resolved();
  ASSERT_EQ(resolved.size(), 1u);
  EXPECT_EQ(resolved[0].requested, "auto");
  EXPECT_EQ(resolved[0].chosen, "fast");
  const std::string& note = resolved[0].note;
  EXPECT_EQ(note.rfind("rms_norm T=4,D=8: measured fast ", 0), 0u) << note;
  EXPECT_NE(note.find(" -> fast; rms_norm T=128,D=8: measured fast "), std::string::npos) << note;
  EXPECT_NE(note.find(", slow "), std::string::npos) << note;
  EXPECT_EQ(note.find("T=4,D=8", 10), std::string::npos) << "one note per bucket: " << note;

  // configure() forgets the table; the remembered decision still says how it was made.
  Dispatcher::global().configure({.default_backend = "auto"});
  run(4);
  EXPECT_EQ(Dispatcher::global().resolved().at(0).note.rfind("rms_norm T=4,D=8: measured", 0), 0u);
  EXPECT_EQ(runs("slow"), 2 * kTimingRuns);
}

TEST_F(AutoPolicyTest, WinnerIsCachedOnDiskAndReadBackByAFreshPolicy) {
  run(4);
  ASSERT_TRUE(fs::exists(cache_));
  const json doc = read_cache();
  EXPECT_EQ(doc["format"], 1);
  ASSERT_EQ(doc["entries"].size(), 1u);
  const auto& [key, entry] = *doc["entries"].items().begin();
  EXPECT_EQ(key, "cpu|rms_norm|float32|T=4,D=8|fast:1,slow:1,torch:1");
  EXPECT_EQ(entry["device"], "cpu");
  EXPECT_EQ(entry["op"], "rms_norm");
  EXPECT_EQ(entry["dtype"], "float32");
  EXPECT_EQ(entry["bucket"], "T=4,D=8");
  EXPECT_EQ(entry["candidates"], json({"fast:1", "slow:1", "torch:1"}));
  EXPECT_EQ(entry["winner"], "fast");
  EXPECT_GE(entry["ms"]["slow"].get<double>(), 12.0);
  EXPECT_LT(entry["ms"]["fast"].get<double>(), entry["ms"]["torch"].get<double>());
  for (const auto& file : fs::directory_iterator(cache_.parent_path())) {
    EXPECT_EQ(file.path().filename(), "autotune.json") << "no temp file left behind";
  }

  restart({{"torch", 6, 1.0f}, {"fast", 0, 2.0f}, {"slow", 12, 3.0f}});
  EXPECT_EQ(run(4), 2.0f);
  EXPECT_EQ(runs("slow"), 0);
  EXPECT_EQ(runs("fast"), 1);
  EXPECT_EQ(Dispatcher::global().resolved().at(0).note, "rms_norm T=4,D=8: cached -> fast");
}

TEST_F(AutoPolicyTest, WritesMergeWithEntriesOtherProcessesAdded) {
  run(4);
  json doc = read_cache();
  doc["entries"]["NVIDIA H200|sparse_mla|bfloat16|T=16384|cuda:1,torch:1"] = {{"winner", "cuda"}};
  write_file(cache_, doc.dump());
  run(100);
  const json after = read_cache();
  EXPECT_EQ(after["entries"].size(), 3u);
  EXPECT_EQ(after["entries"]["NVIDIA H200|sparse_mla|bfloat16|T=16384|cuda:1,torch:1"]["winner"],
            "cuda");
}

TEST_F(AutoPolicyTest, NewKernelVersionIsTimedAgain) {
  run(4);
  restart({{"torch", 6, 1.0f}, {"fast", 0, 2.0f, "2"}, {"slow", 12, 3.0f}});
  EXPECT_EQ(run(4), 2.0f);
  EXPECT_EQ(runs("slow"), kTimingRuns);
  EXPECT_EQ(read_cache()["entries"].size(), 2u);
  EXPECT_TRUE(
      read_cache()["entries"].contains("cpu|rms_norm|float32|T=4,D=8|fast:2,slow:1,torch:1"));
}

TEST_F(AutoPolicyTest, CachedWinnerThatIsNoLongerEligibleIsTimedAgain) {
  const std::string key = "cpu|rms_norm|float32|T=4,D=8|fast:1,slow:1,torch:1";
  write_file(cache_, json({{"format", 1}, {"entries", {{key, {{"winner", "gone"}}}}}}).dump());
  EXPECT_EQ(run(4), 2.0f);
  EXPECT_EQ(runs("slow"), kTimingRuns);
  EXPECT_EQ(read_cache()["entries"][key]["winner"], "fast");
}

TEST_F(AutoPolicyTest, CorruptCacheFileWarnsOnceAndIsRewritten) {
  write_file(cache_, "{\"format\": 1, \"entries\": {");
  EXPECT_EQ(run(4), 2.0f);
  ASSERT_EQ(warnings_.size(), 1u);
  EXPECT_EQ(
      warnings_[0].rfind(fmt::format("autotune cache {}: not valid JSON: ", cache_.string()), 0),
      0u)
      << warnings_[0];
  EXPECT_NE(warnings_[0].find("ignoring it (the next measurement rewrites it)"), std::string::npos);
  EXPECT_EQ(read_cache()["entries"].size(), 1u);
  run(100);
  EXPECT_EQ(warnings_.size(), 1u);
  EXPECT_EQ(read_cache()["entries"].size(), 2u);
}

TEST_F(AutoPolicyTest, CacheOfAnotherShapeIsIgnoredWithAWarning) {
  write_file(cache_, "[1, 2, 3]");
  EXPECT_EQ(run(4), 2.0f);
  ASSERT_EQ(warnings_.size(), 1u);
  EXPECT_NE(warnings_[0].find("not an autotune cache"), std::string::npos) << warnings_[0];
  EXPECT_EQ(read_cache()["entries"].size(), 1u);
}

TEST_F(AutoPolicyTest, UnwritableCacheKeepsTuningInMemory) {
  write_file("not-a-folder", "x");
  const fs::path cache = dir_ / "not-a-folder" / "autotune.json";
  ::setenv("KILN_AUTOTUNE_CACHE", cache.c_str(), 1);
  EXPECT_EQ(run(4), 2.0f);
  ASSERT_EQ(warnings_.size(), 1u);
  EXPECT_EQ(warnings_[0].rfind(
                fmt::format("autotune cache {}: cannot create the folder", cache.string()), 0),
            0u)
      << warnings_[0];
  EXPECT_NE(warnings_[0].find("kept in memory for this process only"), std::string::npos);
  EXPECT_EQ(run(4), 2.0f);
  EXPECT_EQ(runs("slow"), kTimingRuns); // remembered in memory
  EXPECT_EQ(run(100), 2.0f);
  EXPECT_EQ(warnings_.size(), 1u);
}

TEST_F(AutoPolicyTest, ThrowingCandidateIsDroppedAndWarnedAboutOnce) {
  restart({{"torch", 6, 1.0f}, {"broken", 0, 9.0f, "1", /*throws=*/true}, {"slow", 12, 3.0f}});
  EXPECT_EQ(run(4), 1.0f); // torch beats slow; broken never runs for real
  ASSERT_EQ(warnings_.size(), 1u);
  EXPECT_EQ(warnings_[0],
            "auto policy: kernel rms_norm/broken threw while being timed on rms_norm T=4,D=8 "
            "(cpu): no kernel image; it is not used for these shapes");
  const int broken_runs = runs("broken");
  EXPECT_EQ(run(4), 1.0f);
  EXPECT_EQ(runs("broken"), broken_runs);
  EXPECT_EQ(run(100), 1.0f); // a new bucket tries it again, without a second warning
  EXPECT_EQ(warnings_.size(), 1u);
  EXPECT_NE(Dispatcher::global().resolved().at(0).note.find("broken failed"), std::string::npos);
  const json entry =
      read_cache()["entries"]["cpu|rms_norm|float32|T=4,D=8|broken:1,slow:1,torch:1"];
  EXPECT_EQ(entry["winner"], "torch");
  EXPECT_TRUE(entry["ms"]["broken"].is_null());
}

TEST_F(AutoPolicyTest, TorchIsTheFallbackWhenNothingElseFits) {
  restart({{"torch", 6, 1.0f},
           {"fast", 0, 2.0f, "1", false, /*float_only=*/true},
           {"slow", 12, 3.0f, "1", false, true}});
  EXPECT_EQ(run(4, at::kBFloat16), 1.0f);
  EXPECT_EQ(runs("torch"), 1); // the only candidate: not timed
  EXPECT_FALSE(fs::exists(cache_));
  EXPECT_EQ(Dispatcher::global().resolved().at(0).chosen, "torch");
  EXPECT_EQ(Dispatcher::global().resolved().at(0).note, "");
}

TEST_F(AutoPolicyTest, ConcurrentFirstCallsTimeOnce) {
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      if (run(4) != 2.0f) ++wrong;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(runs("slow"), kTimingRuns);
  EXPECT_EQ(runs("fast"), kTimingRuns + 4);
}

} // namespace
} // namespace kiln::sdk
