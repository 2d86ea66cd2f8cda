// The dispatcher's selection rules: per-op override > default backend > policy, strict, fallback.
// (The `auto` policy's timing and cache: autotune_test.cpp.)
#include "kiln/sdk/dispatch.h"
#include "core/plugin_host.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/log.h"
#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>

namespace kiln::sdk {
namespace {

// A fake backend kernel that tags its output so the test sees which one ran, and takes at least
// `delay_ms` (the `auto` policy measures: the fastest eligible kernel wins).
Kernel<ops::RmsNormOp> tagged(std::string backend, float tag, int priority = 0,
                              std::function<bool(const ops::RmsNormArgs&)> supports = {},
                              int delay_ms = 0) {
  return {.backend = std::move(backend),
          .device = c10::DeviceType::CPU,
          .priority = priority,
          .run =
              [tag, delay_ms](const ops::RmsNormArgs& a) {
                std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
                return at::full_like(a.x, tag);
              },
          .supports = std::move(supports)};
}

float run_rms_norm(const at::Tensor& x) {
  return ops::rms_norm(x, at::ones({x.size(-1)}, x.options()), 1e-6).flatten()[0].item().toFloat();
}

class DispatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The auto policy's timings go to a file of this test, not the user's cache.
    cache_ = std::filesystem::temp_directory_path() /
             fmt::format("kiln-dispatch-test-{}-autotune.json", ::getpid());
    std::filesystem::remove(cache_);
    ::setenv("KILN_AUTOTUNE_CACHE", cache_.c_str(), 1);
    auto& d = Dispatcher::global();
    d.reset_for_testing();
    core::PluginHost::global().reset_for_testing();
    // The real auto policy, from its plugin file.
    const auto r = core::PluginHost::global().load_file(
        std::filesystem::path(KILN_BUILTIN_PLUGIN_DIR) / "libkiln-policy-auto.so", "test");
    ASSERT_EQ(r.status, core::PluginStatus::kLoaded) << r.reason;
    d.add_kernel(make_kernel_record(tagged("torch", 1.0f, -100, {}, 8)));
    d.add_kernel(make_kernel_record(tagged("fast", 2.0f, 10, [](const ops::RmsNormArgs& a) {
      return a.x.scalar_type() == at::kFloat;
    })));
    d.add_kernel(make_kernel_record(tagged("other", 3.0f, 0, {}, 3)));
    set_log_sink([this](LogLevel level, std::string_view m) {
      if (level >= LogLevel::kWarn) logged_.emplace_back(m);
    });
  }
  void TearDown() override {
    set_log_sink(nullptr);
    ::unsetenv("KILN_AUTOTUNE_CACHE");
    std::filesystem::remove(cache_);
  }

  std::filesystem::path cache_;
  std::vector<std::string> logged_; // warnings and errors
};

TEST_F(DispatchTest, AutoPrefersFastestEligibleKernel) {
  Dispatcher::global().configure({.default_backend = "auto"});
  EXPECT_EQ(run_rms_norm(at::randn({2, 4})), 2.0f);
}

TEST_F(DispatchTest, AutoSkipsKernelsWhoseSupportsFails) {
  Dispatcher::global().configure({.default_backend = "auto"});
  EXPECT_EQ(run_rms_norm(at::randn({2, 4}, at::kBFloat16)), 3.0f); // "fast" is float32 only
}

TEST_F(DispatchTest, AutoChoosesBySpeedNotPriority) {
  auto& d = Dispatcher::global();
  d.reset_for_testing();
  core::PluginHost::global().reset_for_testing();
  core::PluginHost::global().load_file(
      std::filesystem::path(KILN_BUILTIN_PLUGIN_DIR) / "libkiln-policy-auto.so", "test");
  d.add_kernel(make_kernel_record(tagged("torch", 1.0f, 1000, {}, 8)));
  d.add_kernel(make_kernel_record(tagged("lowly", 5.0f, -5)));
  d.configure({.default_backend = "auto"});
  EXPECT_EQ(run_rms_norm(at::randn({2, 4})), 5.0f);
}

TEST_F(DispatchTest, DefaultBackendIsUsed) {
  Dispatcher::global().configure({.default_backend = "other"});
  EXPECT_EQ(run_rms_norm(at::randn({2, 4})), 3.0f);
}

TEST_F(DispatchTest, PerOpOverrideWinsOverDefault) {
  Dispatcher::global().configure({.default_backend = "other", .ops = {{"rms_norm", "torch"}}});
  EXPECT_EQ(run_rms_norm(at::randn({2, 4})), 1.0f);
}

TEST_F(DispatchTest, StrictMakesUnsupportedCallAnError) {
  Dispatcher::global().configure({.default_backend = "fast", .strict = true});
  EXPECT_EQ(run_rms_norm(at::randn({2, 4})), 2.0f);
  try {
    run_rms_norm(at::randn({2, 4}, at::kBFloat16));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(
        e.message(),
        "op 'rms_norm' on cpu (bfloat16): backend 'fast' does not support these arguments and "
        "backend.strict = true; registered for this op and device: fast, other, torch");
  }
}

TEST_F(DispatchTest, StrictMakesMissingKernelAnError) {
  Dispatcher::global().configure({.default_backend = "other", .strict = true});
  const at::Tensor x = at::randn({1, 2, 2, 4});
  const at::Tensor cs = at::randn({1, 2, 2});
  try {
    ops::rope(x, cs, cs, ops::RopeStyle::kHalf);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(),
              "op 'rope' on cpu (float32): backend 'other' has no kernel for it and backend.strict "
              "= true; registered for this op and device: (none)");
  }
}

TEST_F(DispatchTest, NonStrictFallsBackThroughAutoAndWarnsOnce) {
  Dispatcher::global().configure({.default_backend = "fast"});
  const at::Tensor x = at::randn({2, 4}, at::kBFloat16);
  EXPECT_EQ(run_rms_norm(x), 3.0f);
  EXPECT_EQ(run_rms_norm(x), 3.0f);
  ASSERT_EQ(logged_.size(), 1u);
  EXPECT_EQ(
      logged_[0],
      "op 'rms_norm' on cpu (bfloat16): backend 'fast' does not support these arguments; fell "
      "back to 'other' (set backend.strict = true to make this an error)");
}

// A kernel that declines may say why (note_selection from its supports(), as the cuda backend
// does on a GPU it has no code for): the forced backend's error, its fallback warning and the
// resolved table name the reason.
TEST_F(DispatchTest, DecliningKernelsReasonIsInTheErrorAndTheFallbackNote) {
  auto& d = Dispatcher::global();
  d.add_kernel(make_kernel_record(tagged("picky", 4.0f, 0, [](const ops::RmsNormArgs& a) {
    if (a.x.size(-1) == 4) return true;
    note_selection(fmt::format("picky: needs D = 4; found {}", a.x.size(-1)));
    return false;
  })));
  d.configure({.default_backend = "picky", .strict = true});
  EXPECT_EQ(run_rms_norm(at::randn({2, 4})), 4.0f);
  try {
    run_rms_norm(at::randn({2, 6}));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(),
              "op 'rms_norm' on cpu (float32): backend 'picky' does not support these arguments "
              "(picky: needs D = 4; found 6) and backend.strict = true; registered for this op "
              "and device: fast, other, picky, torch");
  }
  d.configure({.default_backend = "picky"});
  EXPECT_EQ(run_rms_norm(at::randn({2, 6}, at::kBFloat16)), 3.0f);
  ASSERT_EQ(logged_.size(), 1u);
  EXPECT_EQ(logged_[0],
            "op 'rms_norm' on cpu (bfloat16): backend 'picky' does not support these arguments "
            "(picky: needs D = 4; found 6); fell back to 'other' (set backend.strict = true to "
            "make this an error)");
  bool found = false;
  for (const Resolution& r : d.resolved()) {
    if (r.dtype != at::kBFloat16) continue;
    found = true;
    EXPECT_EQ(r.chosen, "other");
    EXPECT_NE(r.note.find("(picky: needs D = 4; found 6)"), std::string::npos) << r.note;
    // once: the fallback's selection asks supports() again, which says it again
    EXPECT_EQ(r.note.find("needs D = 4"), r.note.rfind("needs D = 4")) << r.note;
  }
  EXPECT_TRUE(found);
}

// adamw writes into its arguments: a policy must never run its kernels to time them (each run
// would apply the update again). Under `auto` the highest-priority kernel that accepts the call
// runs exactly once, and the resolution says why.
TEST_F(DispatchTest, InPlaceOpIsNeverTimedByAPolicy) {
  auto& d = Dispatcher::global();
  std::map<std::string, int> runs;
  const auto counting = [&runs](std::string backend, int priority, bool accepts) {
    return Kernel<ops::AdamwOp>{.backend = backend,
                                .device = c10::DeviceType::CPU,
                                .priority = priority,
                                .run =
                                    [&runs, backend](const ops::AdamwArgs& a) {
                                      ++runs[backend];
                                      a.param.add_(1.0);
                                    },
                                .supports = [accepts](const ops::AdamwArgs&) { return accepts; }};
  };
  d.add_kernel(make_kernel_record(counting("torch", -100, true)));
  d.add_kernel(make_kernel_record(counting("declines", 20, false)));
  d.add_kernel(make_kernel_record(counting("fast", 10, true)));
  d.configure({.default_backend = "auto"});
  const at::Tensor p = at::zeros({4});
  ops::adamw({.param = p,
              .grad = at::zeros({4}),
              .exp_avg = at::zeros({4}),
              .exp_avg_sq = at::zeros({4})});
  EXPECT_EQ(runs, (std::map<std::string, int>{{"fast", 1}}));
  EXPECT_TRUE(at::equal(p, at::ones({4}))); // one update
  const auto resolved = d.resolved();
  ASSERT_EQ(resolved.size(), 1u);
  EXPECT_EQ(resolved[0].chosen, "fast");
  EXPECT_NE(resolved[0].note.find("policy 'auto' not consulted"), std::string::npos)
      << resolved[0].note;

  // A requested backend that declines falls back the same way (one warning), without auto.
  runs.clear();
  d.configure({.default_backend = "declines"});
  ops::adamw({.param = p,
              .grad = at::zeros({4}),
              .exp_avg = at::zeros({4}),
              .exp_avg_sq = at::zeros({4})});
  EXPECT_EQ(runs, (std::map<std::string, int>{{"fast", 1}}));
  ASSERT_EQ(logged_.size(), 1u);
  EXPECT_NE(logged_[0].find("fell back to 'fast'"), std::string::npos) << logged_[0];
}

TEST_F(DispatchTest, UnknownBackendInConfigListsRegistered) {
  try {
    Dispatcher::global().configure({.default_backend = "cdua"});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUser);
    EXPECT_EQ(e.message(),
              "unknown backend 'cdua' (backend.default); registered backends and policies: auto, "
              "fast, other, torch");
  }
  EXPECT_THROW(Dispatcher::global().configure({.ops = {{"rope", "nope"}}}), Error);
}

TEST_F(DispatchTest, ResolvedTableRecordsEveryBackendUsed) {
  Dispatcher::global().configure({.default_backend = "auto"});
  run_rms_norm(at::randn({2, 4}));
  run_rms_norm(at::randn({2, 4}, at::kBFloat16));
  const auto resolved = Dispatcher::global().resolved();
  ASSERT_EQ(resolved.size(), 2u);
  EXPECT_EQ(resolved[0].dtype, at::kFloat);
  EXPECT_EQ(resolved[0].requested, "auto");
  EXPECT_EQ(resolved[0].chosen, "fast");
  EXPECT_EQ(resolved[1].chosen, "other");
}

TEST_F(DispatchTest, DuplicateKernelIsAnError) {
  auto record = make_kernel_record(tagged("other", 9.0f));
  record.info.plugin = "second";
  try {
    Dispatcher::global().add_kernel(record);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("duplicate kernel rms_norm/other/cpu from plugin 'second'"),
              std::string::npos)
        << e.message();
  }
}

TEST_F(DispatchTest, PolicyAndBackendNamesCannotClash) {
  EXPECT_THROW(Dispatcher::global().add_kernel(make_kernel_record(tagged("auto", 1.0f))), Error);
}

} // namespace
} // namespace kiln::sdk
