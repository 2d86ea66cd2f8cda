// The plugin host against real plugin files, good and broken (built by tests/plugins/).
#include "core/model_registry.h"
#include "core/plugin_host.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

namespace kiln::core {
namespace {

namespace fs = std::filesystem;

const fs::path kCases = KILN_TEST_PLUGIN_CASES;    // tests/plugins/<case>/
const fs::path kBuiltin = KILN_BUILTIN_PLUGIN_DIR; // lib/kiln/plugins

class PluginLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sdk::Dispatcher::global().reset_for_testing();
    ModelRegistry::global().reset_for_testing();
    PluginHost::global().reset_for_testing();
    unsetenv("KILN_PLUGIN_PATH");
    scratch_ = fs::temp_directory_path() /
               ("kiln-loader-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(scratch_);
    fs::create_directories(scratch_);
  }
  void TearDown() override { fs::remove_all(scratch_); }

  static fs::path case_file(const std::string& dir, const std::string& file) {
    return kCases / dir / file;
  }
  static PluginRecord load(const fs::path& file) {
    return PluginHost::global().load_file(file, "--plugin");
  }
  static PluginRecord load_builtin(const std::string& file) { return load(kBuiltin / file); }

  fs::path scratch_;
};

TEST_F(PluginLoaderTest, LoadsTorchBackendAndAutoPolicy) {
  const auto torch = load_builtin("libkiln-backend-torch.so");
  const auto autop = load_builtin("libkiln-policy-auto.so");
  ASSERT_EQ(torch.status, PluginStatus::kLoaded) << torch.reason;
  ASSERT_EQ(autop.status, PluginStatus::kLoaded) << autop.reason;
  EXPECT_EQ(torch.name, "torch");
  EXPECT_EQ(torch.kind, "backend");
  EXPECT_EQ(autop.kind, "policy");
  EXPECT_EQ(torch.abi, "1.3");
  EXPECT_EQ(sdk::Dispatcher::global().policies(), std::vector<std::string>{"auto"});
  EXPECT_EQ(sdk::Dispatcher::global().backends(), std::vector<std::string>{"torch"});
  EXPECT_NE(std::find(torch.provides.begin(), torch.provides.end(), "kernel rms_norm/torch/cpu"),
            torch.provides.end());
}

TEST_F(PluginLoaderTest, RejectsWrongAbiMajor) {
  const auto r = load(case_file("abimajor", "libkiln-backend-testabimajor.so"));
  EXPECT_EQ(r.status, PluginStatus::kFailed);
  EXPECT_EQ(r.reason,
            "built for kiln SDK ABI 2.0, this host speaks ABI 1.3; rebuild the plugin against "
            "this kiln's SDK");
  EXPECT_TRUE(sdk::Dispatcher::global().kernels().empty());
}

TEST_F(PluginLoaderTest, RejectsNewerAbiMinorThanHost) {
  const auto r = load(case_file("abiminor", "libkiln-backend-testabiminor.so"));
  EXPECT_EQ(r.status, PluginStatus::kFailed);
  EXPECT_EQ(r.reason,
            "built for kiln SDK ABI 1.4, newer than this host's 1.3; upgrade kiln or rebuild the "
            "plugin against this kiln's SDK");
}

TEST_F(PluginLoaderTest, RejectsTorchMismatch) {
  const auto r = load(case_file("oldtorch", "libkiln-backend-testoldtorch.so"));
  EXPECT_EQ(r.status, PluginStatus::kFailed);
  EXPECT_EQ(r.name, "testoldtorch");
  EXPECT_EQ(r.reason.rfind("built for LibTorch 2.10.0 (cxx11_abi=1, CUDA none, ", 0), 0)
      << r.reason;
  EXPECT_NE(r.reason.find("running LibTorch " + sdk::host_fingerprint().torch_version),
            std::string::npos)
      << r.reason;
  EXPECT_TRUE(r.reason.ends_with("; rebuild the plugin")) << r.reason;
}

TEST_F(PluginLoaderTest, RejectsMissingEntrySymbol) {
  const auto r = load(case_file("noentry", "libkiln-backend-noentry.so"));
  EXPECT_EQ(r.status, PluginStatus::kFailed);
  EXPECT_EQ(r.reason,
            "no entry symbol 'kiln_plugin_info': not a kiln plugin; build it with KILN_PLUGIN(...) "
            "and kiln_add_plugin, or remove it");
}

TEST_F(PluginLoaderTest, RejectsFileThatIsNotElf) {
  const fs::path junk = scratch_ / "libkiln-model-junk.so";
  std::ofstream(junk) << "this is not a shared library\n";
  const auto r = load(junk);
  EXPECT_EQ(r.status, PluginStatus::kFailed);
  EXPECT_EQ(r.reason,
            "not an ELF shared library (the file starts with 'this is '); remove it or rebuild it "
            "with kiln_add_plugin");
}

TEST_F(PluginLoaderTest, RejectsUnresolvedSymbols) {
  const auto r = load(case_file("unresolved", "libkiln-backend-testunresolved.so"));
  EXPECT_EQ(r.status, PluginStatus::kFailed);
  EXPECT_EQ(r.reason.rfind("cannot be loaded: ", 0), 0) << r.reason;
  EXPECT_NE(r.reason.find("undefined symbol: kiln_test_symbol_that_does_not_exist"),
            std::string::npos)
      << r.reason;
}

TEST_F(PluginLoaderTest, ThrowingRegistrationIsReportedAndRolledBack) {
  const auto r = load(case_file("throws", "libkiln-backend-testthrows.so"));
  EXPECT_EQ(r.status, PluginStatus::kFailed);
  EXPECT_EQ(r.reason,
            "registration failed: cannot find libfancy.so.3 (testthrows needs it); nothing it "
            "registered is used");
  EXPECT_TRUE(sdk::Dispatcher::global().kernels().empty()); // its rope kernel was discarded
}

TEST_F(PluginLoaderTest, RejectsDuplicateKernel) {
  ASSERT_EQ(load_builtin("libkiln-backend-torch.so").status, PluginStatus::kLoaded);
  const auto before = sdk::Dispatcher::global().kernels().size();
  const auto r = load(case_file("dupkernel", "libkiln-backend-testdup.so"));
  EXPECT_EQ(r.status, PluginStatus::kFailed);
  EXPECT_EQ(r.reason,
            "registration failed: duplicate kernel rms_norm/torch/cpu from plugin 'testdup': "
            "already registered by plugin 'torch'; kernels are never overridden, remove one of the "
            "plugins or rename its backend; nothing it registered is used");
  EXPECT_EQ(sdk::Dispatcher::global().kernels().size(), before);
}

TEST_F(PluginLoaderTest, SameFileTwiceIsSkipped) {
  ASSERT_EQ(load_builtin("libkiln-backend-torch.so").status, PluginStatus::kLoaded);
  const auto again = load_builtin("libkiln-backend-torch.so");
  EXPECT_EQ(again.status, PluginStatus::kSkipped);
  EXPECT_EQ(again.reason, "already loaded");
}

TEST_F(PluginLoaderTest, SamePluginNameFromAnotherFileIsSkipped) {
  ASSERT_EQ(load_builtin("libkiln-backend-torch.so").status, PluginStatus::kLoaded);
  fs::create_directories(scratch_ / "copy");
  fs::copy_file(kBuiltin / "libkiln-backend-torch.so", scratch_ / "copy/libkiln-backend-torch.so");
  const auto r = load(scratch_ / "copy/libkiln-backend-torch.so");
  EXPECT_EQ(r.status, PluginStatus::kSkipped);
  EXPECT_NE(r.reason.find("plugin 'torch' is already loaded from"), std::string::npos) << r.reason;
}

TEST_F(PluginLoaderTest, FileNameMustMatchDescriptor) {
  fs::copy_file(case_file("good", "libkiln-backend-testgood.so"),
                scratch_ / "libkiln-backend-renamed.so");
  const auto r = load(scratch_ / "libkiln-backend-renamed.so");
  EXPECT_EQ(r.status, PluginStatus::kFailed);
  EXPECT_EQ(r.reason,
            "the descriptor says backend plugin 'testgood', so the file must be named "
            "libkiln-backend-testgood.so; rename it or rebuild it with kiln_add_plugin");
}

TEST_F(PluginLoaderTest, OnlyLibkilnFilesAreCandidates) {
  fs::copy_file(case_file("good", "libkiln-backend-testgood.so"), scratch_ / "libother.so");
  setenv("KILN_PLUGIN_PATH", scratch_.c_str(), 1);
  const auto records = PluginHost::global().load({.use_default_dir = false});
  EXPECT_TRUE(records.empty());
}

TEST_F(PluginLoaderTest, DiscoveryOrderIsFilesEnvRecipeDefault) {
  setenv("KILN_PLUGIN_PATH", (kCases / "good").c_str(), 1);
  const auto records = PluginHost::global().load({
      .files = {kCases / "toy/libkiln-model-toy.so"},
      .recipe_dirs = {kCases / "noentry"},
  });
  ASSERT_GE(records.size(), 5u);
  EXPECT_EQ(records[0].origin, "--plugin");
  EXPECT_EQ(records[0].name, "toy");
  EXPECT_EQ(records[1].origin, "KILN_PLUGIN_PATH");
  EXPECT_EQ(records[1].name, "testgood");
  EXPECT_EQ(records[2].origin, "recipe");
  for (size_t i = 3; i < records.size(); ++i) EXPECT_EQ(records[i].origin, "default");
}

TEST_F(PluginLoaderTest, CurrentDirectoryIsNeverSearched) {
  fs::copy_file(case_file("good", "libkiln-backend-testgood.so"),
                scratch_ / "libkiln-backend-testgood.so");
  const fs::path old = fs::current_path();
  fs::current_path(scratch_);
  setenv("KILN_PLUGIN_PATH", ":", 1); // empty entries must not mean "."
  const auto records = PluginHost::global().load({.use_default_dir = false});
  fs::current_path(old);
  EXPECT_TRUE(records.empty());
}

TEST_F(PluginLoaderTest, MissingPluginFileIsAUserError) {
  try {
    PluginHost::global().load({.files = {scratch_ / "libkiln-backend-nothere.so"}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUser);
    EXPECT_NE(e.message().find("no such file"), std::string::npos);
  }
}

TEST_F(PluginLoaderTest, HostKeepsWorkingAfterBrokenPlugins) {
  const fs::path dir = scratch_ / "mixed";
  fs::create_directories(dir);
  for (const auto& [c, f] : std::vector<std::pair<std::string, std::string>>{
           {"abimajor", "libkiln-backend-testabimajor.so"},
           {"noentry", "libkiln-backend-noentry.so"},
           {"throws", "libkiln-backend-testthrows.so"},
           {"unresolved", "libkiln-backend-testunresolved.so"}}) {
    fs::copy_file(case_file(c, f), dir / f);
  }
  std::ofstream(dir / "libkiln-model-junk.so") << "junk";
  const auto records = PluginHost::global().load({.recipe_dirs = {dir}});
  size_t failed = 0;
  for (const auto& r : records) {
    if (r.origin == "recipe") {
      EXPECT_EQ(r.status, PluginStatus::kFailed) << r.path;
      EXPECT_EQ(r.reason.find('\n'), std::string::npos) << "one line per file";
      ++failed;
    }
  }
  EXPECT_EQ(failed, 5u);
  // The default directory's torch and auto still loaded and work.
  const at::Tensor x = at::randn({2, 8});
  const at::Tensor y = ops::rms_norm(x, at::ones({8}), 1e-6);
  EXPECT_TRUE(at::allclose(y, x * at::rsqrt(x.pow(2).mean(-1, true) + 1e-6)));
}

TEST_F(PluginLoaderTest, ModelPluginRunsOpsThroughBackendPlugin) {
  ASSERT_EQ(load_builtin("libkiln-backend-torch.so").status, PluginStatus::kLoaded);
  ASSERT_EQ(load_builtin("libkiln-policy-auto.so").status, PluginStatus::kLoaded);
  ASSERT_EQ(load(case_file("toy", "libkiln-model-toy.so")).status, PluginStatus::kLoaded);
  const auto& family = ModelRegistry::global().find("toy");
  EXPECT_EQ(family.plugin, "toy");
  EXPECT_EQ(&ModelRegistry::global().find("toy_lm"), &family); // alias
  EXPECT_EQ(&ModelRegistry::global().find_for_config({{"architectures", {"ToyForCausalLM"}}}, "x"),
            &family);
  EXPECT_EQ(&ModelRegistry::global().find_for_config({{"model_type", "toy"}}, "x"), &family);

  auto model = family.family.create({.json = {{"vocab_size", 11}, {"hidden_size", 8}}}, {});
  const auto out = model->forward({.input_ids = at::randint(0, 11, {2, 5}, at::kLong)});
  EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{2, 5, 11}));
  const auto resolved = sdk::Dispatcher::global().resolved();
  ASSERT_EQ(resolved.size(), 1u);
  EXPECT_EQ(resolved[0].op, "rms_norm");
  EXPECT_EQ(resolved[0].chosen, "torch");
}

TEST_F(PluginLoaderTest, UnknownFamilyListsLoadedOnes) {
  ASSERT_EQ(load(case_file("toy", "libkiln-model-toy.so")).status, PluginStatus::kLoaded);
  try {
    ModelRegistry::global().find("tyo");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(),
              "unknown model family 'tyo' (model.family) (did you mean 'toy'?); loaded: toy");
  }
  try {
    ModelRegistry::global().find_for_config(
        {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}}, "ckpt/config.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(),
              "ckpt/config.json: no loaded model family handles architectures [LlamaForCausalLM] "
              "/ model_type 'llama'; loaded: toy (load the family's plugin, or set model.family)");
  }
}

TEST_F(PluginLoaderTest, DuplicateFamilyNameIsRejected) {
  ASSERT_EQ(load(case_file("toy", "libkiln-model-toy.so")).status, PluginStatus::kLoaded);
  sdk::ModelFamily clash{.name = "other", .aliases = {"toy"}, .create = [](auto&, auto&) {
                           return std::shared_ptr<sdk::Model>();
                         }};
  try {
    ModelRegistry::global().add(clash, "clashing");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(),
              "duplicate model family name 'toy' from plugin 'clashing': already registered by "
              "family 'toy' of plugin 'toy'");
  }
}

} // namespace
} // namespace kiln::core
