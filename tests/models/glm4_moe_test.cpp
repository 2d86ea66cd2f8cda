// glm4_moe against HF transformers 5.17.0: the fixtures in tests/fixtures/glm4_moe/<case>/ were
// written by tools/fixtures/make_fixtures.py (tiny random models, every weight randomised).
#include "core/model_registry.h"
#include "core/plugin_host.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "kiln/nn/loss.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "support/model_test.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace kiln {
namespace {

using test::hf_loss;
using test::load_plugins_once;
using test::relative_error;

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(KILN_SOURCE_DIR) / "tests/fixtures/glm4_moe";

const c10::Device& kDevice = test::kTestDevice;

std::vector<std::string> cases() {
  return test::fixture_cases(kFixtures);
}

std::shared_ptr<sdk::Model> build(const fs::path& dir, at::ScalarType dtype,
                                  sdk::ModelOptions options = {}) {
  load_plugins_once();
  const auto config = io::read_config(dir);
  const auto& family = core::ModelRegistry::global().find_for_config(config, "test");
  EXPECT_EQ(family.family.name, "glm4_moe");
  options.dtype = dtype;
  options.device = kDevice;
  auto model = family.family.create({.json = config, .source = dir / "config.json"}, options);
  model->load_weights(io::CheckpointReader(dir));
  return model;
}

class Glm4MoeParity : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path dir() const { return kFixtures / GetParam(); }
};

TEST_P(Glm4MoeParity, Fp32LogitsLossAndGradientNormsMatchHF) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(dir(), at::kFloat);
  const io::SafetensorsFile inputs(dir() / "inputs.safetensors");
  const io::SafetensorsFile expected(dir() / "expected.safetensors");
  const at::Tensor ids = inputs.load("input_ids");

  const auto out = model->forward({.input_ids = ids});
  EXPECT_LE(relative_error(out.logits, expected.load("logits")), 1e-5);
  const at::Tensor loss = hf_loss(out.logits, ids);
  EXPECT_NEAR(loss.item<double>(), expected.load("loss").item<double>(), 1e-5);

  loss.backward();
  size_t compared = 0;
  std::map<std::string, at::Tensor> grads;
  for (auto& [name, grad] : model->gradients()) grads[name] = grad;
  for (const auto& info : expected.tensors()) {
    if (info.name.rfind("grad_norm/", 0) != 0) continue;
    const std::string name = info.name.substr(10);
    ASSERT_TRUE(grads.count(name)) << "no gradient for " << name;
    const double ours = grads[name].to(at::kDouble).norm().item<double>();
    const double theirs = expected.load(info.name).item<double>();
    EXPECT_NEAR(ours, theirs, 1e-4 * std::max(1.0, std::abs(theirs))) << name;
    ++compared;
  }
  EXPECT_EQ(compared, grads.size()) << "every kiln gradient has an HF counterpart";
  EXPECT_GT(compared, 10u);
}

TEST_P(Glm4MoeParity, ActivationCheckpointingKeepsLossAndGradients) {
  KILN_SKIP_WITHOUT_DEVICE();
  const io::SafetensorsFile inputs(dir() / "inputs.safetensors");
  const at::Tensor ids = inputs.load("input_ids");
  auto run = [&](bool checkpointing) {
    auto model = build(dir(), at::kFloat, {.activation_checkpointing = checkpointing});
    const auto out = model->forward({.input_ids = ids});
    const at::Tensor loss = hf_loss(out.logits, ids);
    loss.backward();
    std::map<std::string, at::Tensor> grads;
    for (auto& [name, grad] : model->gradients()) grads[name] = grad.cpu();
    std::map<int64_t, at::Tensor> load;
    for (auto& [layer, counts] : out.expert_load) load[layer] = counts.cpu();
    return std::tuple(loss.item<double>(), grads, load);
  };
  const auto [plain_loss, plain_grads, plain_load] = run(false);
  const auto [ckpt_loss, ckpt_grads, ckpt_load] = run(true);
  EXPECT_EQ(plain_loss, ckpt_loss);
  ASSERT_EQ(plain_grads.size(), ckpt_grads.size());
  for (const auto& [name, grad] : plain_grads) {
    ASSERT_TRUE(ckpt_grads.count(name)) << name;
    EXPECT_TRUE(at::allclose(grad, ckpt_grads.at(name), 1e-6, 1e-7)) << name;
  }
  // Expert load reported once per MoE layer, not again by the recomputation.
  ASSERT_EQ(plain_load.size(), ckpt_load.size());
  for (const auto& [layer, counts] : plain_load)
    EXPECT_TRUE(at::equal(counts, ckpt_load.at(layer)));
}

TEST_P(Glm4MoeParity, ExpertLoadCountsEveryRoutedToken) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(dir(), at::kFloat);
  const io::SafetensorsFile inputs(dir() / "inputs.safetensors");
  const at::Tensor ids = inputs.load("input_ids");
  const auto config = io::read_config(dir());
  const auto out = model->forward({.input_ids = ids, .compute_logits = false});
  EXPECT_FALSE(out.logits.defined());
  ASSERT_TRUE(out.hidden.defined());
  const int64_t layers = config["num_hidden_layers"].get<int64_t>();
  const int64_t dense = config.value("first_k_dense_replace", int64_t{0});
  EXPECT_EQ(static_cast<int64_t>(out.expert_load.size()), std::max<int64_t>(0, layers - dense));
  for (const auto& [layer, counts] : out.expert_load) {
    EXPECT_GE(layer, dense);
    EXPECT_EQ(counts.size(0), config["n_routed_experts"].get<int64_t>());
    EXPECT_EQ(counts.sum().item<int64_t>(),
              ids.numel() * config["num_experts_per_tok"].get<int64_t>());
  }
}

TEST(Glm4MoeOptions, TrainingOptionsItCannotHonourAreRefused) {
  load_plugins_once();
  const fs::path dir = kFixtures / "base";
  const auto config = io::read_config(dir);
  const auto& family = core::ModelRegistry::global().find("glm4_moe");
  try {
    family.family.create({.json = config}, {.mtp_loss_scale = 0.3});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.mtp_loss_scale = 0.3"), std::string::npos)
        << e.what();
  }
  try {
    family.family.create({.json = config}, {.indexer_loss = "kl"});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no DSA indexer"), std::string::npos) << e.what();
  }
}

TEST_P(Glm4MoeParity, Bf16LogitsWithinBf16Error) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(dir(), at::kBFloat16);
  const io::SafetensorsFile inputs(dir() / "inputs.safetensors");
  const io::SafetensorsFile expected(dir() / "expected.safetensors");
  const auto out = model->forward({.input_ids = inputs.load("input_ids")});
  EXPECT_EQ(out.logits.scalar_type(), at::kBFloat16);
  // bf16 keeps 8 bits of mantissa: kiln's and HF's kernels round differently, which moves logits
  // by ~1e-2 of the largest one, and now and then flips a near-tied expert choice, which moves
  // that token's logits by much more. So: every token but a few within bf16 noise.
  const at::Tensor ref = expected.load("logits_bf16").to(at::kDouble);
  const at::Tensor per_token =
      (out.logits.cpu().to(at::kDouble) - ref).abs().amax(-1).flatten() / ref.abs().max();
  const int64_t tokens = per_token.numel();
  const int64_t noisy = (per_token > 3e-2).sum().item<int64_t>();
  EXPECT_LE(noisy, std::max<int64_t>(1, tokens / 20)) << per_token;
  EXPECT_LE(at::median(per_token).item<double>(), 1e-2);
}

TEST_P(Glm4MoeParity, PackedDocumentsEqualSeparateSequences) {
  KILN_SKIP_WITHOUT_DEVICE();
  const fs::path packed = dir() / "packed.safetensors";
  ASSERT_TRUE(fs::exists(packed)) << "every fixture has a packed input (tools/fixtures)";
  auto model = build(dir(), at::kFloat);
  const io::SafetensorsFile file(packed);
  const auto out =
      model->forward({.input_ids = file.load("input_ids"), .cu_seqlens = file.load("cu_seqlens")});
  EXPECT_LE(relative_error(out.logits, file.load("logits")), 1e-5);
}

TEST_P(Glm4MoeParity, LogitsToKeepReturnsTheLastPositions) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(dir(), at::kFloat);
  const io::SafetensorsFile inputs(dir() / "inputs.safetensors");
  const at::Tensor ids = inputs.load("input_ids");
  const auto all = model->forward({.input_ids = ids});
  const auto last = model->forward({.input_ids = ids, .logits_to_keep = 3});
  ASSERT_EQ(last.logits.size(1), 3);
  EXPECT_LE(relative_error(last.logits, all.logits.slice(1, ids.size(1) - 3).cpu()), 1e-6);
}

TEST_P(Glm4MoeParity, SaveLoadRoundTripIsBitIdentical) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(dir(), at::kBFloat16); // the fixtures store bf16 weights, as hub files do
  const fs::path out =
      fs::temp_directory_path() / ("kiln-glm4-" + GetParam() + "-" + std::to_string(::getpid()));
  fs::remove_all(out);
  io::save_checkpoint(out, model->config_json(), model->state_dict(), {.max_shard_bytes = 200000});
  const io::CheckpointReader original(dir());
  const io::CheckpointReader saved(out);
  const auto names = original.list();
  ASSERT_EQ(names.size(), saved.list().size());
  for (const auto& info : names) {
    ASSERT_TRUE(saved.contains(info.name)) << info.name;
    const at::Tensor a = original.load(info.name);
    const at::Tensor b = saved.load(info.name);
    ASSERT_EQ(a.scalar_type(), b.scalar_type()) << info.name;
    EXPECT_TRUE(at::equal(a, b)) << info.name;
  }
  // And the saved folder builds the same model.
  auto again = build(out, at::kBFloat16);
  const io::SafetensorsFile inputs(dir() / "inputs.safetensors");
  const at::Tensor ids = inputs.load("input_ids");
  EXPECT_TRUE(at::equal(again->forward({.input_ids = ids}).logits.cpu(),
                        model->forward({.input_ids = ids}).logits.cpu()));
  fs::remove_all(out);
}

TEST_P(Glm4MoeParity, HfLoadsWhatKilnSaves) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(dir(), at::kFloat);
  const fs::path out =
      fs::temp_directory_path() / ("kiln-glm4-hf-" + GetParam() + "-" + std::to_string(::getpid()));
  fs::remove_all(out);
  io::save_checkpoint(out, model->config_json(), model->state_dict(), {.max_shard_bytes = 300000});
  const std::string command =
      fmt::format("{} {}/tools/fixtures/check_hf_load.py {} {} 2>&1", KILN_PYTHON, KILN_SOURCE_DIR,
                  out.string(), dir().string());
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("ok: HF 5.17.0"), std::string::npos) << output;
  fs::remove_all(out);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Glm4MoeParity, ::testing::ValuesIn(cases()));
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Glm4MoeParity);

TEST(Glm4MoeWeights, UnexpectedAndMissingTensorsAreNamed) {
  KILN_SKIP_WITHOUT_DEVICE();
  const auto all = cases();
  ASSERT_FALSE(all.empty()) << "no fixtures in " << kFixtures;
  const fs::path src = kFixtures / all.front();
  auto model = build(src, at::kFloat);
  const fs::path out = fs::temp_directory_path() / ("kiln-glm4-bad-" + std::to_string(::getpid()));
  fs::remove_all(out);
  auto state = model->state_dict();
  state.emplace_back("model.layers.0.self_attn.rotary.inv_freq", at::zeros({4}));
  io::save_checkpoint(out, model->config_json(), state, {});
  const auto config = io::read_config(out);
  const auto& family = core::ModelRegistry::global().find("glm4_moe");
  auto fresh = family.family.create({.json = config}, {.device = kDevice});
  try {
    fresh->load_weights(io::CheckpointReader(out));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("1 unexpected tensor(s) for glm4_moe"), std::string::npos)
        << e.message();
    EXPECT_NE(e.message().find("model.layers.0.self_attn.rotary.inv_freq"), std::string::npos);
  }
  state.pop_back();
  state.erase(state.begin()); // drop model.embed_tokens.weight
  io::save_checkpoint(out, model->config_json(), state, {});
  try {
    fresh->load_weights(io::CheckpointReader(out));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("1 tensor(s) missing for glm4_moe: model.embed_tokens.weight"),
              std::string::npos)
        << e.message();
  }
  fs::remove_all(out);
}

TEST(CausalLmLabels, PackedDocumentsShiftWithinEachDocument) {
  const at::Tensor ids = at::arange(10, 20, at::kLong); // documents of 3, 5 and 2 tokens
  const at::Tensor cu = at::tensor({0, 3, 8, 10}, at::kInt);
  const at::Tensor expected = at::tensor({11, 12, -100, 14, 15, 16, 17, -100, 19, -100}, at::kLong);
  EXPECT_TRUE(at::equal(nn::causal_lm_labels(ids, cu), expected));
  const at::Tensor batch = at::arange(6, at::kLong).view({2, 3});
  EXPECT_TRUE(at::equal(nn::causal_lm_labels(batch),
                        at::tensor({1, 2, -100, 4, 5, -100}, at::kLong).view({2, 3})));
}

TEST(Glm4MoeInit, RandomInitFollowsHfInitWeights) {
  KILN_SKIP_WITHOUT_DEVICE();
  load_plugins_once();
  const auto config = io::read_config(kFixtures / "base");
  const auto& family = core::ModelRegistry::global().find("glm4_moe");
  auto model = family.family.create({.json = config}, {.device = kDevice, .seed = 7});
  auto again = family.family.create({.json = config}, {.device = kDevice, .seed = 7});
  const auto a = model->state_dict();
  const auto b = again->state_dict();
  ASSERT_EQ(a.size(), b.size());
  const double std = config.value("initializer_range", 0.02);
  for (size_t i = 0; i < a.size(); ++i) {
    const auto& [name, t] = a[i];
    EXPECT_TRUE(at::equal(t, b[i].second)) << name << ": the same seed gives the same weights";
    if (name.find("layernorm") != std::string::npos ||
        name.find("norm.weight") != std::string::npos) {
      EXPECT_TRUE(at::all(t == 1).item<bool>()) << name; // norms start at one
    } else if (name.ends_with(".bias")) {
      EXPECT_TRUE(at::all(t == 0).item<bool>()) << name;
    } else if (t.numel() > 1000) {
      EXPECT_NEAR(t.to(at::kDouble).std().item<double>(), std, 0.1 * std) << name;
      EXPECT_NEAR(t.to(at::kDouble).mean().item<double>(), 0.0, 0.1 * std) << name;
    }
  }
  const auto out = model->forward(
      {.input_ids = at::randint(config["vocab_size"].get<int64_t>(), {2, 9}, at::kLong)});
  EXPECT_TRUE(at::isfinite(out.logits).all().item<bool>());
}

} // namespace
} // namespace kiln
