// The `kiln` executable as a user runs it: output text and exit codes.
#include "io/safetensors.h"

#include "../support/run_kiln.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;

using Result = kiln::test::CliResult;

Result run(const std::string& args, const std::string& env = "") {
  return kiln::test::run_kiln(args, env);
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kiln-cli-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p;
  }

  fs::path dir_;
};

const fs::path kCases = KILN_TEST_PLUGIN_CASES;

TEST_F(CliTest, VersionPrintsFingerprint) {
  const auto r = run("--version");
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out.rfind("kiln 0.1.0 (SDK ABI 1.3, LibTorch ", 0), 0) << r.out;
}

TEST_F(CliTest, PluginsListsTorchAndAuto) {
  const auto r = run("plugins");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("loaded   backend torch"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("loaded   policy  auto"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("backends: " + kiln::test::builtin_backends() + "; policies: auto"),
            std::string::npos)
      << r.out;
}

TEST_F(CliTest, BrokenPluginDirectoryGivesOneLinePerFile) {
  const fs::path bad = dir_ / "bad";
  fs::create_directories(bad);
  fs::copy_file(kCases / "abimajor/libkiln-backend-testabimajor.so",
                bad / "libkiln-backend-testabimajor.so");
  fs::copy_file(kCases / "noentry/libkiln-backend-noentry.so", bad / "libkiln-backend-noentry.so");
  std::ofstream(bad / "libkiln-model-junk.so") << "hello\n";

  const auto r = run("plugins", "KILN_PLUGIN_PATH=" + bad.string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(count(r.out, "FAILED"), 3u) << r.out;
  EXPECT_EQ(count(r.out,
                  "built for kiln SDK ABI 2.0, this host speaks ABI 1.3; rebuild the "
                  "plugin against this kiln's SDK"),
            1u)
      << r.out;
  EXPECT_EQ(count(r.out, "no entry symbol 'kiln_plugin_info'"), 1u) << r.out;
  EXPECT_EQ(count(r.out, "not an ELF shared library (the file starts with 'hello.')"), 1u) << r.out;
  EXPECT_NE(r.out.find("loaded   backend torch"), std::string::npos) << "the rest keeps working";

  // Other commands report each bad file as one warning line and carry on.
  const fs::path recipe =
      write("r.toml", "[model]\nfamily = \"toy\"\n[model.config]\nvocab_size = 11\n");
  const auto check = run("recipe check " + recipe.string() + " --plugin " +
                             (kCases / "toy/libkiln-model-toy.so").string(),
                         "KILN_PLUGIN_PATH=" + bad.string());
  EXPECT_EQ(check.code, 0) << check.out;
  EXPECT_EQ(count(check.out, "warning: "), 3u) << check.out;
  EXPECT_NE(check.out.find(recipe.string() + ": ok"), std::string::npos) << check.out;
}

TEST_F(CliTest, PluginsVerboseListsRegistrations) {
  const auto r =
      run("plugins --verbose --plugin " + (kCases / "good/libkiln-backend-testgood.so").string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("loaded   backend testgood     1.2.3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("provides kernel rms_norm/testgood/cpu"), std::string::npos) << r.out;
}

TEST_F(CliTest, MissingPluginFileIsAUserError) {
  const auto r = run("plugins --plugin /nonexistent/libkiln-backend-x.so");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out, "error: --plugin /nonexistent/libkiln-backend-x.so: no such file\n");
}

// A device out of memory (what CUDA's allocator throws: a c10::OutOfMemoryError whose what()
// ends in a C++ stack trace; testoom's rms_norm throws one) is one error line with the
// allocator's message and what to change, exit 1, and no checkpoint.
TEST_F(CliTest, OutOfMemoryIsOneLineSayingWhatToChange) {
  const auto r =
      run("run " + std::string(KILN_SOURCE_DIR) + "/recipes/quickstart.toml --plugin " +
          (kCases / "oom/libkiln-backend-testoom.so").string() +
          " --backend.default testoom --model.dtype float32 --train.steps 1 --data.seq_len 32 "
          "--train.micro_batch 1 --train.val_every 0 --run.dir " +
          (dir_ / "run").string() + " --log-format text");
  EXPECT_EQ(r.code, 1) << r.out;
  const std::string line =
      "error: out of memory: CUDA out of memory. Tried to allocate 9.00 GiB. GPU 0 has a total "
      "capacity of 79.19 GiB of which 2.12 GiB is free. Of the allocated memory 75.10 GiB is "
      "allocated by PyTorch; ask for less (a shorter data.seq_len, a smaller train.micro_batch "
      "with more train.grad_accum, a smaller model) or use a device with more memory\n";
  EXPECT_NE(r.out.find(line), std::string::npos) << r.out;
  EXPECT_EQ(count(r.out, "error"), 1) << r.out;
  EXPECT_EQ(r.out.find("frame #"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "run/checkpoints")) << r.out;
}

TEST_F(CliTest, RecipeCheckReportsUnknownKeyWithPositionAndSuggestion) {
  const fs::path recipe = write("bad.toml", "[run]\nname = \"x\"\nsede = 3\n");
  const auto r = run("recipe check " + recipe.string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(r.out, "error: " + recipe.string() +
                       ":3:1: unknown key 'run.sede' (did you mean 'run.seed'?)\n");
}

TEST_F(CliTest, RecipeCheckRejectsUnknownFamily) {
  const fs::path recipe =
      write("fam.toml", "[model]\nfamily = \"tyo\"\n[model.config]\nvocab_size = 11\n");
  const auto r = run("recipe check " + recipe.string() + " --plugin " +
                     (kCases / "toy/libkiln-model-toy.so").string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("unknown model family 'tyo' (model.family) (did you mean 'toy'?)"),
            std::string::npos)
      << r.out;
}

TEST_F(CliTest, RecipeCheckRejectsUnknownBackend) {
  const fs::path recipe = write("be.toml",
                                "[model]\nfamily = \"toy\"\n[model.config]\nvocab_size = "
                                "11\n[backend]\ndefault = \"cdua\"\n");
  const auto r = run("recipe check " + recipe.string() + " --plugin " +
                     (kCases / "toy/libkiln-model-toy.so").string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("unknown backend 'cdua' (backend.default); registered backends and "
                       "policies: auto, " +
                       kiln::test::builtin_backends()),
            std::string::npos)
      << r.out;
}

TEST_F(CliTest, QuickstartRecipeChecksWithTheBuiltInPlugins) {
  const std::string recipe = std::string(KILN_SOURCE_DIR) + "/recipes/quickstart.toml";
  const auto r = run("recipe check " + recipe);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, recipe + ": ok\n");
}

TEST_F(CliTest, RecipeShowAppliesOverrides) {
  const auto r = run(std::string("recipe show ") + KILN_SOURCE_DIR +
                     "/recipes/quickstart.toml --model.dtype bfloat16 --set run.seed=7");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("dtype = \"bfloat16\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("seed = 7"), std::string::npos) << r.out;
}

TEST_F(CliTest, LogitsMatchesTheHfFixture) {
  const fs::path fixture = fs::path(KILN_SOURCE_DIR) / "tests/fixtures/glm4_moe/base";
  const fs::path out = dir_ / "out.safetensors";
  const fs::path grads = dir_ / "grads.safetensors";
  const auto r = run("logits --model " + fixture.string() + " --input " +
                     (fixture / "inputs.safetensors").string() + " --output " + out.string() +
                     " --grad-norms " + grads.string() + " --backend torch");
  ASSERT_EQ(r.code, 0) << r.out;
  const kiln::io::SafetensorsFile expected(fixture / "expected.safetensors");
  const kiln::io::SafetensorsFile ours(out);
  const at::Tensor ref = expected.load("logits");
  EXPECT_LE((ours.load("logits") - ref).abs().max().item<double>() / ref.abs().max().item<double>(),
            1e-5);
  EXPECT_NEAR(ours.load("loss").item<double>(), expected.load("loss").item<double>(), 1e-5);
  const kiln::io::SafetensorsFile norms(grads);
  size_t compared = 0;
  for (const auto& info : norms.tensors()) {
    const double theirs = expected.load("grad_norm/" + info.name).item<double>();
    EXPECT_NEAR(norms.load(info.name).item<double>(), theirs, 1e-4 * std::max(1.0, theirs))
        << info.name;
    ++compared;
  }
  EXPECT_EQ(compared, 95u); // every parameter of the base fixture that HF gives a gradient
}

TEST_F(CliTest, LogitsRejectsABadDtype) {
  const auto r = run("logits --model x --input y --output z --dtype fp8");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out, "error: --dtype: expected float32 or bfloat16, found 'fp8'\n");
}

TEST_F(CliTest, UnknownCommandIsAUserError) {
  const auto r = run("trian");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("error: unknown command 'trian'"), std::string::npos) << r.out;
}

TEST_F(CliTest, HelpForEachCommand) {
  for (const char* c : {"plugins", "recipe", "logits", "help"}) {
    const auto r = run(std::string("help ") + c);
    EXPECT_EQ(r.code, 0) << c;
    EXPECT_NE(r.out.find("usage: kiln"), std::string::npos) << r.out;
  }
}

} // namespace
