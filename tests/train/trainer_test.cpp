// framework/train: schedules, AdamW, gradient accumulation, packing, exact resume, atomic
// checkpoints, divergence, pruning — through train::run on a tiny glm4_moe.
#include "train/trainer.h"
#include "core/model_registry.h"
#include "core/plugin_host.h"
#include "data/loader.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "kiln/nn/module.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/model.h"
#include "recipe/recipe.h"
#include "support/model_test.h"
#include "support/scratch_dir.h"
#include "train/optimizer.h"
#include "train/run_state.h"
#include "train/schedule.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>

namespace kiln {
namespace {

namespace fs = std::filesystem;

// ---- schedule and optimizer -----------------------------------------------------------------

TEST(ScheduleTest, WarmupThenDecayToMinLr) {
  train::Schedule s{.kind = train::ScheduleKind::kCosine,
                    .lr = 1.0,
                    .min_lr = 0.1,
                    .warmup_steps = 4,
                    .total_steps = 14};
  EXPECT_DOUBLE_EQ(s.at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.at(4), 1.0); // the decay's first step
  EXPECT_NEAR(s.at(9), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 5.0 / 9.0)), 1e-12);
  EXPECT_DOUBLE_EQ(s.at(13), 0.1); // the last step
  s.kind = train::ScheduleKind::kLinear;
  EXPECT_DOUBLE_EQ(s.at(13), 0.1);
  EXPECT_NEAR(s.at(7), 1.0 - 0.9 * 3.0 / 9.0, 1e-12);
  s.kind = train::ScheduleKind::kConstant;
  EXPECT_DOUBLE_EQ(s.at(13), 1.0);
  s.kind = train::ScheduleKind::kWsd;
  s.decay_fraction = 0.3; // 14 * 0.3 -> 4 decay steps: 10..13
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);
  EXPECT_LT(s.at(10), 1.0);
  EXPECT_DOUBLE_EQ(s.at(13), 0.1);
  EXPECT_THROW(train::parse_schedule("exp"), Error);
}

// The update is op adamw: the loaded backends' kernels (the torch reference on the CPU).
class AdamWTest : public ::testing::Test {
 protected:
  void SetUp() override { test::load_plugins_once(); }
};

TEST_F(AdamWTest, MatchesTheAdamWFormula) {
  at::manual_seed(0);
  at::Tensor w = at::randn({3, 4}, at::kFloat).requires_grad_(true);
  at::Tensor b = at::randn({4}, at::kFloat).requires_grad_(true);
  const at::Tensor w0 = w.detach().to(at::kDouble), b0 = b.detach().to(at::kDouble);
  train::AdamW adam({{"w", w}, {"b", b}},
                    {.beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1});
  // Reference in fp64: decoupled decay on matrices only.
  at::Tensor rw = w0.clone(), rb = b0.clone();
  at::Tensor mw = at::zeros_like(rw), vw = at::zeros_like(rw), mb = at::zeros_like(rb),
             vb = at::zeros_like(rb);
  const double lr = 0.01;
  for (int step = 1; step <= 3; ++step) {
    const at::Tensor gw = at::randn({3, 4}, at::kFloat), gb = at::randn({4}, at::kFloat);
    w.mutable_grad() = gw.clone();
    b.mutable_grad() = gb.clone();
    adam.step(lr);
    auto update = [&](at::Tensor& p, at::Tensor& m, at::Tensor& v, const at::Tensor& g,
                      double decay) {
      const at::Tensor gd = g.to(at::kDouble);
      p = p * (1 - lr * decay);
      m = 0.9 * m + 0.1 * gd;
      v = 0.99 * v + 0.01 * gd * gd;
      const double c1 = 1 - std::pow(0.9, step), c2 = 1 - std::pow(0.99, step);
      p = p - lr * (m / c1) / ((v / c2).sqrt() + 1e-8);
    };
    update(rw, mw, vw, gw, 0.1);
    update(rb, mb, vb, gb, 0.0);
  }
  EXPECT_TRUE(at::allclose(w.detach().to(at::kDouble), rw, 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(b.detach().to(at::kDouble), rb, 1e-6, 1e-6));
  EXPECT_EQ(adam.steps(), 3);
}

TEST_F(AdamWTest, Bf16ParametersKeepFp32Masters) {
  at::Tensor w = at::full({2, 2}, 1.0, at::kBFloat16).requires_grad_(true);
  train::AdamW adam({{"w", w}}, {.weight_decay = 0.0});
  // Updates of ~1e-4 vanish in bf16 (spacing 2^-7 near 1) but add up in the fp32 master.
  for (int i = 0; i < 50; ++i) {
    w.mutable_grad() = at::ones({2, 2}, at::kBFloat16);
    adam.step(1e-4);
  }
  const auto state = adam.state();
  ASSERT_EQ(state.size(), 3u);
  EXPECT_EQ(state[2].first, "master/w");
  EXPECT_NEAR(state[2].second[0][0].item<double>(), 1.0 - 50 * 1e-4, 1e-5);
  EXPECT_EQ(w[0][0].item<float>(), state[2].second[0][0].to(at::kBFloat16).item<float>());
}

TEST_F(AdamWTest, PiecewiseUpdatesOfBf16ParametersEqualWholeOnesToRounding) {
  // 55 elements in pieces of 7 (the last one short) against one piece, with decay and clipping.
  at::manual_seed(1);
  const at::Tensor init = at::randn({5, 11}, at::kBFloat16);
  at::Tensor whole = init.clone().requires_grad_(true), pieces = init.clone().requires_grad_(true);
  train::AdamW a({{"w", whole}}, {.weight_decay = 0.1});
  train::AdamW b({{"w", pieces}}, {.weight_decay = 0.1, .piece_elements = 7});
  for (int step = 0; step < 3; ++step) {
    const at::Tensor grad = at::randn({5, 11}, at::kBFloat16);
    whole.mutable_grad() = grad.clone();
    pieces.mutable_grad() = grad.clone();
    a.step(1e-2, /*grad_scale=*/2.5);
    b.step(1e-2, /*grad_scale=*/2.5);
  }
  // ATen's CPU kernel (the reference) takes vectors and a scalar tail, which round differently in
  // the last float32 bit: pieces move elements between the two.
  EXPECT_TRUE(at::allclose(whole.to(at::kFloat), pieces.to(at::kFloat), 1e-2, 1e-6));
  const auto sa = a.state(), sb = b.state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_TRUE(
        at::allclose(sa[i].second.to(at::kDouble), sb[i].second.to(at::kDouble), 1e-6, 1e-9))
        << sa[i].first;
  }
  EXPECT_FALSE(at::equal(whole, init)); // it moved
}

// ---- train::run on a tiny glm4_moe ----------------------------------------------------------

constexpr std::string_view kTinyRecipe = R"(
[run]
name = "tiny"
seed = 3

[model]
family = "glm4_moe"

[model.config]
architectures = ["Glm4MoeForCausalLM"]
vocab_size = 256
hidden_size = 32
num_hidden_layers = 2
num_attention_heads = 2
num_key_value_heads = 1
head_dim = 16
intermediate_size = 64
moe_intermediate_size = 16
n_routed_experts = 4
num_experts_per_tok = 2
n_shared_experts = 1
first_k_dense_replace = 1
partial_rotary_factor = 0.5
max_position_embeddings = 256
tie_word_embeddings = false

[data]
train = ["train.jsonl"]
validation = ["val.jsonl"]
seq_len = 48

[train]
steps = 6
micro_batch = 2
log_every = 100

[optim]
lr = 1e-2
warmup_steps = 2

[checkpoint]
every = 0
)";

class TrainerTest : public test::ScratchDirTest {
 protected:
  void SetUp() override {
    ScratchDirTest::SetUp();
    test::load_plugins_once();
    std::string train, val;
    const char* words[] = {"the",  "quick", "brown", "fox",  "jumps", "over",
                           "lazy", "dog",   "and",   "runs", "far",   "away"};
    for (int d = 0; d < 40; ++d) {
      std::string text;
      for (int w = 0; w < 3 + d % 7; ++w) text += std::string(words[(d * 7 + w * 3) % 12]) + " ";
      (d % 8 == 7 ? val : train) += "{\"text\": \"" + text + "\"}\n";
    }
    write_file("train.jsonl", train);
    write_file("val.jsonl", val);
    write_file("tiny.toml", kTinyRecipe);
  }

  train::TrainResult run(std::vector<std::string> overrides,
                         const std::string& file = "tiny.toml") {
    recipe::KeyOrigins origins;
    const auto recipe = recipe::load_recipe(file, overrides, &origins);
    return train::run(recipe, origins, {.log_format = train::LogFormat::kText});
  }

  static std::map<std::string, at::Tensor> weights(const fs::path& checkpoint) {
    const io::CheckpointReader reader(checkpoint);
    std::map<std::string, at::Tensor> out;
    for (const auto& info : reader.list()) out[info.name] = reader.load(info.name).clone();
    return out;
  }
};

TEST_F(TrainerTest, LossFallsAndTheRunFolderHasEverything) {
  const auto result = run({"train.val_every=3", "train.steps=8"});
  ASSERT_EQ(result.exit_code, 0);
  ASSERT_EQ(result.losses.size(), 8u);
  EXPECT_LT(result.losses.back(), result.losses.front() - 0.5);
  EXPECT_EQ(result.val_losses.size(), 3u); // steps 3, 6 and the last
  const fs::path dir = "runs/tiny";
  for (const char* file :
       {"recipe.toml", "metrics.jsonl", "backends.json", "LATEST", "checkpoints/step-8/config.json",
        "checkpoints/step-8/model.safetensors", "checkpoints/step-8/tokenizer.json",
        "checkpoints/step-8/trainer_state.json", "checkpoints/step-8/trainer_state.safetensors"}) {
    EXPECT_TRUE(fs::exists(dir / file)) << file;
  }
  EXPECT_EQ(read_file(dir / "LATEST"), "checkpoints/step-8\n");
  // metrics.jsonl: one line per step, one per validation, with MoE load statistics.
  const std::string metrics = read_file(dir / "metrics.jsonl");
  size_t lines = 0, validations = 0;
  for (size_t at = 0; (at = metrics.find('\n', at)) != std::string::npos; ++at) ++lines;
  for (size_t at = 0; (at = metrics.find("val_loss", at)) != std::string::npos; ++at) ++validations;
  EXPECT_EQ(lines, 11u);
  EXPECT_EQ(validations, 3u);
  EXPECT_NE(metrics.find("\"moe/max_over_mean/layer.1\""), std::string::npos);
}

TEST_F(TrainerTest, ResumingIsBitIdenticalToAnUninterruptedRun) {
  const auto straight = run({"run.name=straight"});
  ASSERT_EQ(straight.losses.size(), 6u);
  // Stop after 3 steps of the same 6-step schedule, then continue.
  const auto first = run({"run.name=split", "train.steps=3", "optim.schedule_steps=6"});
  ASSERT_EQ(first.losses.size(), 3u);
  const auto second = run({"run.name=split", "train.steps=6"});
  EXPECT_EQ(second.first_step, 3);
  ASSERT_EQ(second.losses.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(first.losses[i], straight.losses[i]) << "step " << i + 1;
    EXPECT_EQ(second.losses[i], straight.losses[i + 3]) << "step " << i + 4;
  }
  const auto a = weights("runs/straight/checkpoints/step-6");
  const auto b = weights("runs/split/checkpoints/step-6");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, tensor] : a) EXPECT_TRUE(at::equal(tensor, b.at(name))) << name;
  // A finished run has nothing left to do.
  EXPECT_TRUE(run({"run.name=split", "train.steps=6"}).losses.empty());
}

TEST_F(TrainerTest, GradientAccumulationEqualsOneBigBatch) {
  const auto big = run({"run.name=big", "train.steps=3", "train.micro_batch=4", "data.pack=false"});
  const auto accumulated = run({"run.name=acc", "train.steps=3", "train.micro_batch=2",
                                "train.grad_accum=2", "data.pack=false"});
  ASSERT_EQ(big.losses.size(), accumulated.losses.size());
  for (size_t i = 0; i < big.losses.size(); ++i) {
    EXPECT_NEAR(big.losses[i], accumulated.losses[i], 1e-5 * big.losses[i]) << i;
  }
  EXPECT_NE(big.losses[0], run({"run.name=small", "train.steps=1", "data.pack=false"}).losses[0])
      << "a batch of 2 documents differs from one of 4";
}

TEST_F(TrainerTest, PackedDocumentsLoseNothingToTheirNeighbours) {
  // The summed token losses of a packed micro-batch equal those of each document on its own.
  const auto recipe = recipe::load_recipe("tiny.toml");
  const auto& family = core::ModelRegistry::global().find("glm4_moe");
  auto model = family.family.create({.json = recipe.model.config}, {.seed = 1});
  data::Corpus corpus;
  for (int d = 0; d < 4; ++d) {
    const std::vector<int32_t> tokens = {65 + d, 66, 67 + d, 68, 69 + d * 2, 70};
    const std::vector<uint8_t> targets(tokens.size(), 1);
    corpus.add(std::span(tokens).first(3 + d), std::span(targets).first(3 + d));
  }
  c10::NoGradGuard no_grad;
  auto token_losses = [&](const data::MicroBatch& batch) {
    sdk::ForwardInput input{.input_ids = batch.input_ids, .cu_seqlens = batch.cu_seqlens};
    const at::Tensor logits = model->forward(input).logits;
    return at::cross_entropy_loss(logits, batch.labels, {}, at::Reduction::Sum, -100)
        .item<double>();
  };
  const double packed = token_losses(data::make_batch(corpus, {0, 1, 2, 3}));
  double separate = 0;
  for (size_t d = 0; d < 4; ++d) separate += token_losses(data::make_batch(corpus, {d}));
  EXPECT_NEAR(packed, separate, 1e-5 * separate);
}

TEST_F(TrainerTest, ACrashDuringSaveLeavesThePreviousCheckpoint) {
  ASSERT_EQ(run({"train.steps=2", "checkpoint.every=1"}).exit_code, 0);
  ASSERT_EQ(read_file("runs/tiny/LATEST"), "checkpoints/step-2\n");
  // A save killed half-way: the model files are written, the rest is not.
  const pid_t child = ::fork();
  if (child == 0) {
    train::ModelFiles files{.config = {{"model_type", "glm4_moe"}},
                            .tensors = {{"w", at::zeros({4})}}};
    files.write_extra = [](const fs::path&) { ::raise(SIGKILL); };
    train::save_run_checkpoint("runs/tiny", 3, files, {}, 0, 0);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(fs::exists("runs/tiny/checkpoints/step-3.partial"));
  EXPECT_FALSE(fs::exists("runs/tiny/checkpoints/step-3"));
  EXPECT_EQ(read_file("runs/tiny/LATEST"), "checkpoints/step-2\n");
  // Resuming picks step 2 and finishes; the next save clears the debris.
  const auto resumed = run({"train.steps=4", "checkpoint.every=1"});
  EXPECT_EQ(resumed.first_step, 2);
  EXPECT_EQ(resumed.losses.size(), 2u);
  EXPECT_FALSE(fs::exists("runs/tiny/checkpoints/step-3.partial"));
}

TEST_F(TrainerTest, KeepPrunesOlderCheckpoints) {
  ASSERT_EQ(run({"train.steps=4", "checkpoint.every=1", "checkpoint.keep=2"}).exit_code, 0);
  EXPECT_FALSE(fs::exists("runs/tiny/checkpoints/step-1"));
  EXPECT_FALSE(fs::exists("runs/tiny/checkpoints/step-2"));
  EXPECT_TRUE(fs::exists("runs/tiny/checkpoints/step-3"));
  EXPECT_TRUE(fs::exists("runs/tiny/checkpoints/step-4"));
}

TEST_F(TrainerTest, ANonFiniteLossStopsBeforeTheUpdateAndKeepsTheLastCheckpoint) {
  const auto result = run({"train.steps=5", "checkpoint.every=1", "optim.lr=1e30",
                           "train.clip_grad=0", "optim.warmup_steps=0", "optim.weight_decay=0"});
  EXPECT_EQ(result.exit_code, 3);
  ASSERT_GE(result.last_step, 1);
  EXPECT_LT(result.last_step, 5);
  EXPECT_EQ(read_file("runs/tiny/LATEST"),
            "checkpoints/step-" + std::to_string(result.last_step) + "\n");
  EXPECT_FALSE(fs::exists("runs/tiny/checkpoints/step-" + std::to_string(result.last_step + 1)));
}

TEST_F(TrainerTest, BadCombinationsAreOneLineErrors) {
  ASSERT_EQ(run({"train.steps=1"}).exit_code, 0);
  try {
    run({"train.steps=2", "checkpoint.resume=none"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already has checkpoints (LATEST = step-1)"),
              std::string::npos)
        << e.what();
  }
  try {
    run({"run.name=other", "checkpoint.resume=runs/tiny/checkpoints"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a kiln training checkpoint"), std::string::npos)
        << e.what();
  }
  try {
    run({"run.name=other", "data.train=[]"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.train: no training files"), std::string::npos)
        << e.what();
  }
}

TEST_F(TrainerTest, HooksSeeTheStartingModelAndEveryStep) {
  recipe::KeyOrigins origins;
  const auto recipe =
      recipe::load_recipe("tiny.toml", std::vector<std::string>{"train.steps=3"}, &origins);
  int64_t first_calls = 0;
  double first_batch_loss = 0;
  std::vector<train::StepReport> steps;
  train::TrainOptions options{.log_format = train::LogFormat::kQuiet};
  options.synchronize_steps = true;
  options.before_first_step = [&](sdk::Model& model, const data::MicroBatch& batch) {
    ++first_calls;
    const c10::NoGradGuard no_grad;
    const at::Tensor logits =
        model.forward({.input_ids = batch.input_ids, .cu_seqlens = batch.cu_seqlens}).logits;
    first_batch_loss =
        at::cross_entropy_loss(logits.to(at::kDouble), batch.labels, {}, at::Reduction::Mean, -100)
            .item<double>();
  };
  options.on_step = [&](const train::StepReport& step) { steps.push_back(step); };
  const auto result = train::run(recipe, origins, options);
  ASSERT_EQ(result.exit_code, 0);
  EXPECT_EQ(first_calls, 1);
  ASSERT_EQ(steps.size(), 3u);
  for (size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(steps[i].step, static_cast<int64_t>(i) + 1);
    EXPECT_EQ(steps[i].loss, result.losses[i]);
    EXPECT_GT(steps[i].tokens, 0);
    EXPECT_LE(steps[i].tokens, 96); // 2 packed sequences of at most 48
    EXPECT_GT(steps[i].targets, 0);
    EXPECT_GT(steps[i].seconds, 0.0);
    EXPECT_GT(steps[i].grad_norm, 0.0);
  }
  // The hook ran before any update, on the first step's (only) micro-batch: its loss is the
  // first step's.
  EXPECT_NEAR(first_batch_loss, result.losses[0], 1e-5 * result.losses[0]);
}

TEST_F(TrainerTest, MockDataAndBf16Train) {
  const auto result = run({"data.mock=true", "model.dtype=bfloat16", "train.steps=3",
                           "train.val_every=2", "train.val_steps=2"});
  ASSERT_EQ(result.exit_code, 0);
  EXPECT_EQ(result.losses.size(), 3u);
  EXPECT_EQ(result.val_losses.size(), 2u);
  // Saved in the model's dtype (HF layout), masters in fp32 beside it.
  const io::SafetensorsFile model("runs/tiny/checkpoints/step-3/model.safetensors");
  EXPECT_EQ(model.tensors()[0].dtype, at::kBFloat16);
  const io::SafetensorsFile state("runs/tiny/checkpoints/step-3/trainer_state.safetensors");
  EXPECT_TRUE(state.contains("master/lm_head.weight"));
}

} // namespace
} // namespace kiln
