// `kiln run` as a user runs it: every shipped recipe, the embedded quickstart, stopping with
// Ctrl-C and continuing, and HF transformers loading what a run saved.
#include "io/safetensors.h"
#include "recipe/recipe.h"
#include "support/run_kiln.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

namespace {

namespace fs = std::filesystem;
const fs::path kSource = KILN_SOURCE_DIR;

using Result = kiln::test::CliResult;
using kiln::test::run_shell;

Result kiln(const std::string& args, const std::string& env = "") {
  return kiln::test::run_kiln(args, env);
}

// Training losses by step from a run's metrics.jsonl.
std::map<int64_t, double> losses(const fs::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::map<int64_t, double> out;
  for (std::string line; std::getline(in, line);) {
    const auto record = nlohmann::json::parse(line);
    if (record.contains("loss")) out[record["step"].get<int64_t>()] = record["loss"].get<double>();
  }
  return out;
}

// Small enough for a CPU test, whatever the recipe asks for.
const std::string kSmall =
    "--model.device cpu --model.dtype float32 --data.seq_len 64 --train.micro_batch 2 "
    "--train.grad_accum 1 --train.global_batch_tokens 0 --train.val_steps 1 "
    "--train.sample_tokens 4 --log-format text";

// [model.config] overrides that shrink each family to a few thousand parameters.
const std::map<std::string, std::string> kTinyConfig = {
    {"glm4_moe",
     "--model.config.hidden_size 32 --model.config.num_hidden_layers 2 "
     "--model.config.num_attention_heads 2 --model.config.num_key_value_heads 1 "
     "--model.config.head_dim 16 --model.config.intermediate_size 64 "
     "--model.config.moe_intermediate_size 16 --model.config.n_routed_experts 4 "
     "--model.config.num_experts_per_tok 2"},
    {"glm_moe_dsa",
     "--model.config.hidden_size 32 --model.config.num_attention_heads 2 "
     "--model.config.num_key_value_heads 2 --model.config.head_dim 8 "
     "--model.config.q_lora_rank 24 --model.config.kv_lora_rank 16 "
     "--model.config.qk_nope_head_dim 8 --model.config.qk_rope_head_dim 8 "
     "--model.config.qk_head_dim 16 --model.config.v_head_dim 8 --model.config.index_n_heads 2 "
     "--model.config.index_head_dim 16 --model.config.index_topk 8 "
     "--model.config.intermediate_size 48 --model.config.moe_intermediate_size 16 "
     "--model.config.n_routed_experts 4 --model.config.num_experts_per_tok 2"},
    {"nemotron_v3",
     "--model.config.hidden_size 32 --model.config.num_attention_heads 2 "
     "--model.config.num_key_value_heads 1 --model.config.head_dim 8 "
     "--model.config.mamba_num_heads 4 --model.config.mamba_head_dim 8 "
     "--model.config.n_groups 2 --model.config.ssm_state_size 8 --model.config.chunk_size 8 "
     "--model.config.intermediate_size 48 --model.config.moe_intermediate_size 16 "
     "--model.config.moe_shared_expert_intermediate_size 24 "
     "--model.config.n_routed_experts 4 --model.config.num_experts_per_tok 2"},
};

class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("kiln-run-{}-{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(RunTest, EveryShippedRecipeRuns) {
  // Recipes that build from [model.config] run shrunk; recipes that start from a checkpoint run
  // on the checkpoint the first ones saved for their family.
  std::vector<fs::path> from_scratch, from_checkpoint;
  for (const auto& entry : fs::recursive_directory_iterator(kSource / "recipes")) {
    const fs::path& file = entry.path();
    if (file.extension() != ".toml" || file.filename().string().starts_with("_")) continue;
    const auto recipe = kiln::recipe::load_recipe(file);
    (recipe.model.checkpoint.empty() ? from_scratch : from_checkpoint).push_back(file);
  }
  ASSERT_GE(from_scratch.size(), 2u);
  std::map<std::string, fs::path> checkpoints; // family -> a saved checkpoint
  int ran = 0;
  for (const auto& file : from_scratch) {
    const auto recipe = kiln::recipe::load_recipe(file);
    const fs::path run_dir = dir_ / file.stem();
    std::string args = fmt::format(
        "run {} --run.dir {} --train.steps 2 --train.val_every 2 {}", file.string(),
        (dir_ / fmt::format("{}-{}", recipe.model.family, file.stem().string())).string(), kSmall);
    if (file.parent_path().filename() != "recipes") {
      ASSERT_TRUE(kTinyConfig.count(recipe.model.family))
          << "add a tiny config for " << recipe.model.family << " to this test";
      args += " " + kTinyConfig.at(recipe.model.family);
    }
    const auto r = kiln(args);
    EXPECT_EQ(r.code, 0) << file << "\n" << r.out;
    const fs::path saved = dir_ / fmt::format("{}-{}", recipe.model.family, file.stem().string()) /
                           "checkpoints/step-2";
    EXPECT_TRUE(fs::exists(saved / "model.safetensors")) << file;
    checkpoints.emplace(recipe.model.family, saved);
    ++ran;
  }
  for (const auto& file : from_checkpoint) {
    const auto family = file.parent_path().filename().string();
    ASSERT_TRUE(checkpoints.count(family)) << file << ": no from-scratch recipe of " << family;
    // Chat and prompt-completion examples are whole: room for the longest shipped one.
    const auto r = kiln(fmt::format(
        "run {} --run.dir {} --train.steps 2 --model.checkpoint {} {} --data.seq_len 1024",
        file.string(), (dir_ / (family + "-" + file.stem().string())).string(),
        checkpoints.at(family).string(), kSmall));
    EXPECT_EQ(r.code, 0) << file << "\n" << r.out;
    EXPECT_NE(r.out.find("done: steps 1..2"), std::string::npos) << r.out;
    ++ran;
  }
  EXPECT_EQ(ran, static_cast<int>(from_scratch.size() + from_checkpoint.size()));
}

TEST_F(RunTest, WithoutARecipeItRunsTheEmbeddedQuickstart) {
  const auto r =
      kiln(fmt::format("run --train.steps 3 --train.micro_batch 1 --data.seq_len 32 "
                       "--train.val_every 0 --train.sample_tokens 8 --log-format text"),
           fmt::format("cd {} && XDG_CACHE_HOME={}", dir_.string(), (dir_ / "cache").string()));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("kiln run quickstart: glm4_moe"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sample: Shall I compare thee"), std::string::npos) << r.out;
  // The resolved kernel table, printed once after the first step.
  const auto table = r.out.find("backends (runs/quickstart/backends.json):\n  ");
  EXPECT_NE(table, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("auto -> torch", table), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("backends (", table + 1), std::string::npos) << "printed once: " << r.out;
  EXPECT_TRUE(fs::exists(dir_ / "runs/quickstart/checkpoints/step-3/config.json"));
  const auto cached = fs::directory_iterator(dir_ / "cache/kiln")->path();
  EXPECT_TRUE(fs::exists(cached / "quickstart.toml"));
  EXPECT_TRUE(fs::exists(cached / "data/shakespeare/train.jsonl"));
}

// backends.json is written after the first step and again at the end when later work changed
// it: here the sample's one-token decode steps are new shape buckets the `auto` policy measures
// (two CPU rms_norm kernels, testgood's and torch's).
TEST_F(RunTest, BackendsJsonKeepsWhatWasResolvedAfterTheFirstStep) {
  const auto r = kiln(
      fmt::format("run {}/recipes/quickstart.toml --plugin {}/good/libkiln-backend-testgood.so "
                  "--backend.default auto --run.dir {} --train.steps 2 --train.micro_batch 1 "
                  "--data.seq_len 32 --train.val_every 0 --train.sample_tokens 4 --log-format text",
                  KILN_SOURCE_DIR, KILN_TEST_PLUGIN_CASES, (dir_ / "run").string()));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("backends: " + (dir_ / "run/backends.json").string() + " updated, 1 of"),
            std::string::npos)
      << r.out;
  std::ifstream file(dir_ / "run/backends.json");
  const auto table = nlohmann::json::parse(file);
  std::string note;
  for (const auto& entry : table) {
    if (entry["op"] == "rms_norm") note = entry["note"];
  }
  EXPECT_NE(note.find("rms_norm T=32,"), std::string::npos) << note; // a training step
  EXPECT_NE(note.find("rms_norm T=1,"), std::string::npos) << note;  // a decode step
}

TEST_F(RunTest, StoppingEarlyAndContinuingEqualsOneRun) {
  const std::string recipe = (kSource / "recipes/quickstart.toml").string();
  const std::string small =
      "--train.micro_batch 2 --data.seq_len 64 --train.val_every 0 "
      "--train.sample_tokens 0 --log-format text";
  const fs::path split = dir_ / "split", whole = dir_ / "whole";
  ASSERT_EQ(
      kiln(fmt::format("run {} --train.steps 4 --run.dir {} {}", recipe, split.string(), small))
          .code,
      0);
  const auto r =
      kiln(fmt::format("run {} --train.steps 8 --run.dir {} {}", recipe, split.string(), small));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("resuming at step 4"), std::string::npos) << r.out;
  ASSERT_EQ(
      kiln(fmt::format("run {} --train.steps 8 --run.dir {} {}", recipe, whole.string(), small))
          .code,
      0);
  const auto a = losses(split), b = losses(whole);
  ASSERT_EQ(a.size(), 8u);
  EXPECT_EQ(a, b) << "the same losses, to the last bit";
}

TEST_F(RunTest, CtrlCSavesACheckpointAndARerunContinues) {
  const std::string recipe = (kSource / "recipes/quickstart.toml").string();
  const fs::path run_dir = dir_ / "run";
  const fs::path log = dir_ / "log.txt";
  const pid_t child = ::fork();
  if (child == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    const std::string dir_arg = run_dir.string();
    ::execl(KILN_CLI, KILN_CLI, "run", recipe.c_str(), "--run.dir", dir_arg.c_str(),
            "--train.steps", "100000", "--train.micro_batch", "1", "--data.seq_len", "32",
            "--train.val_every", "0", "--checkpoint.every", "0", "--log-format", "text",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Wait for a few steps, then interrupt as a terminal's Ctrl-C would.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (losses(run_dir).size() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(losses(run_dir).size(), 3u);
  ::kill(child, SIGINT);
  int status = 0;
  ::waitpid(child, &status, 0);
  std::stringstream text;
  text << std::ifstream(log).rdbuf();
  ASSERT_TRUE(WIFEXITED(status)) << text.str();
  EXPECT_EQ(WEXITSTATUS(status), 130) << text.str();
  EXPECT_NE(text.str().find("stopped by signal 2"), std::string::npos) << text.str();
  const int64_t stopped = losses(run_dir).rbegin()->first;
  std::ifstream latest(run_dir / "LATEST");
  std::string target;
  latest >> target;
  EXPECT_EQ(target, fmt::format("checkpoints/step-{}", stopped));

  const auto r =
      kiln(fmt::format("run {} --run.dir {} --train.steps {} --train.micro_batch 1 "
                       "--data.seq_len 32 --train.val_every 0 --log-format text",
                       recipe, run_dir.string(), stopped + 2));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find(fmt::format("resuming at step {}", stopped)), std::string::npos) << r.out;
  EXPECT_EQ(losses(run_dir).size(), static_cast<size_t>(stopped + 2));
}

TEST_F(RunTest, HfTransformersLoadsASavedCheckpoint) {
  const std::string recipe = (kSource / "recipes/glm4_moe/pretrain.toml").string();
  const fs::path run_dir = dir_ / "run";
  ASSERT_EQ(kiln(fmt::format("run {} --run.dir {} --train.steps 2 --train.val_every 0 {} {}",
                             recipe, run_dir.string(), kSmall, kTinyConfig.at("glm4_moe")))
                .code,
            0);
  const fs::path checkpoint = run_dir / "checkpoints/step-2";
  // kiln's logits of the saved model on some ids, written as a fixture for check_hf_load.py.
  const fs::path probe = dir_ / "probe";
  fs::create_directories(probe);
  const at::Tensor ids = at::arange(60, 84, at::kLong).view({2, 12});
  std::vector<std::pair<std::string, at::Tensor>> inputs = {{"input_ids", ids}};
  kiln::io::write_safetensors(probe / "inputs.safetensors", inputs);
  const auto logits = kiln(fmt::format("logits --model {} --input {} --output {}",
                                       checkpoint.string(), (probe / "inputs.safetensors").string(),
                                       (probe / "expected.safetensors").string()));
  ASSERT_EQ(logits.code, 0) << logits.out;
  const auto r = run_shell(fmt::format("{} {} {} {}", KILN_PYTHON,
                                       (kSource / "tools/fixtures/check_hf_load.py").string(),
                                       checkpoint.string(), probe.string()));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("ok: HF"), std::string::npos) << r.out;
}

} // namespace
