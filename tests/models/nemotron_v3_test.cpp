// nemotron_v3 against HF transformers 5.17.0 (and, for MTP, NeMo AutoModel's formula on HF's
// modules): the fixtures in tests/fixtures/nemotron_v3/<case>/ were written by
// tools/fixtures/make_nemotron_v3.py (tiny random models, every weight randomised, chunk_size 8
// with sequences several chunks long and not a multiple of it).
#include "core/model_registry.h"
#include "core/plugin_host.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "kiln/nn/loss.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"
#include "support/model_test.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <map>

namespace kiln {
namespace {

using test::hf_loss;
using test::load_plugins_once;
using test::relative_error;

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(KILN_SOURCE_DIR) / "tests/fixtures/nemotron_v3";

const c10::Device& kDevice = test::kTestDevice;

// ctest keys labels by test name, so the GPU build names its tests apart (...OnGpu).
#ifdef KILN_GPU_VARIANT
#define KILN_SUITE(name) name##OnGpu
#else
#define KILN_SUITE(name) name
#endif

std::vector<std::string> cases() {
  return test::fixture_cases(kFixtures);
}

const sdk::ModelFamily& family() {
  load_plugins_once();
  return core::ModelRegistry::global().find("nemotron_v3").family;
}

std::shared_ptr<sdk::Model> build(const fs::path& dir, at::ScalarType dtype,
                                  sdk::ModelOptions options = {}) {
  load_plugins_once();
  const auto config = io::read_config(dir);
  const auto& found = core::ModelRegistry::global().find_for_config(config, "test");
  EXPECT_EQ(found.family.name, "nemotron_v3");
  options.device = kDevice;
  options.dtype = dtype;
  auto model = found.family.create({.json = config, .source = dir / "config.json"}, options);
  model->load_weights(io::CheckpointReader(dir));
  return model;
}

double mtp_scale(const fs::path& dir) {
  return io::SafetensorsFile(dir / "expected.safetensors").load("mtp_loss_scale").item<double>();
}

// Gradient norms of `model` against the fixture's `prefix` entries: every entry has a kiln
// gradient within 1e-4 (relative above 1); returns how many were compared.
size_t expect_grad_norms(sdk::Model& model, const io::SafetensorsFile& expected,
                         const std::string& prefix) {
  std::map<std::string, at::Tensor> grads;
  for (auto& [name, grad] : model.gradients()) grads[name] = grad;
  size_t compared = 0;
  for (const auto& info : expected.tensors()) {
    if (info.name.rfind(prefix, 0) != 0) continue;
    const std::string name = info.name.substr(prefix.size());
    EXPECT_TRUE(grads.count(name)) << "no gradient for " << name;
    if (!grads.count(name)) continue;
    const double ours = grads[name].cpu().to(at::kDouble).norm().item<double>();
    const double theirs = expected.load(info.name).item<double>();
    EXPECT_NEAR(ours, theirs, 1e-4 * std::max(1.0, std::abs(theirs))) << prefix << name;
    ++compared;
  }
  return compared;
}

// Runs `check` on every fixture folder (one ctest entry per behaviour, not per fixture: each
// process pays LibTorch's start-up).
void for_each_fixture(const std::function<void(const fs::path&)>& check) {
  const auto all = cases();
  ASSERT_FALSE(all.empty()) << "no fixtures in " << kFixtures;
  for (const auto& name : all) {
    SCOPED_TRACE("fixture " + name);
    check(kFixtures / name);
  }
}

TEST(KILN_SUITE(NemotronV3Parity), Fp32LogitsLossAndGradientNormsMatchHF) {
  KILN_SKIP_WITHOUT_DEVICE();
  for_each_fixture([&](const fs::path& dir) {
    auto model = build(dir, at::kFloat);
    const io::SafetensorsFile inputs(dir / "inputs.safetensors");
    const io::SafetensorsFile expected(dir / "expected.safetensors");
    const at::Tensor ids = inputs.load("input_ids");

    const auto out = model->forward({.input_ids = ids});
    ASSERT_EQ(out.logits.scalar_type(), at::kFloat);
    EXPECT_LE(relative_error(out.logits, expected.load("logits")), 1e-5);
    const at::Tensor loss = nn::causal_lm_loss(out.logits, nn::causal_lm_labels(ids));
    EXPECT_NEAR(loss.item<double>(), expected.load("loss").item<double>(), 1e-5);

    loss.backward();
    const size_t compared = expect_grad_norms(*model, expected, "grad_norm/");
    EXPECT_EQ(compared, model->gradients().size()) << "every kiln gradient has an HF counterpart";
    EXPECT_GT(compared, 40u);
  });
}

TEST(KILN_SUITE(NemotronV3Parity), Bf16LogitsWithinBf16Error) {
  KILN_SKIP_WITHOUT_DEVICE();
  for_each_fixture([&](const fs::path& dir) {
    auto model = build(dir, at::kBFloat16);
    const io::SafetensorsFile inputs(dir / "inputs.safetensors");
    const io::SafetensorsFile expected(dir / "expected.safetensors");
    const auto out = model->forward({.input_ids = inputs.load("input_ids")});
    EXPECT_EQ(out.logits.scalar_type(), at::kFloat); // HF upcasts Nemotron-H's logits
    // bf16 keeps 8 bits of mantissa and kiln's kernels round in other places than HF's: every token
    // within bf16 noise of HF's bf16 run, but a near-tied expert choice may flip one now and then.
    const at::Tensor ref = expected.load("logits_bf16").to(at::kDouble);
    const at::Tensor per_token =
        (out.logits.cpu().to(at::kDouble) - ref).abs().amax(-1).flatten() / ref.abs().max();
    const int64_t noisy = (per_token > 3e-2).sum().item<int64_t>();
    EXPECT_LE(noisy, std::max<int64_t>(1, per_token.numel() / 20)) << per_token;
    EXPECT_LE(at::median(per_token).item<double>(), 1e-2);
  });
}

TEST(KILN_SUITE(NemotronV3Parity), PackedDocumentsEqualHfRunOnEachDocument) {
  KILN_SKIP_WITHOUT_DEVICE();
  for_each_fixture([&](const fs::path& dir) {
    const io::SafetensorsFile file(dir / "packed.safetensors");
    auto model = build(dir, at::kFloat, {.mtp_loss_scale = mtp_scale(dir)});
    const at::Tensor ids = file.load("input_ids");
    const at::Tensor cu = file.load("cu_seqlens");
    const auto out = model->forward(
        {.input_ids = ids, .cu_seqlens = cu, .labels = nn::causal_lm_labels(ids, cu)});
    EXPECT_LE(relative_error(out.logits, file.load("logits")), 1e-5);
    ASSERT_TRUE(out.aux_losses.count("mtp"));
    EXPECT_NEAR(out.aux_losses.at("mtp").item<double>(), file.load("mtp_loss").item<double>(),
                1e-5 * std::max(1.0, file.load("mtp_loss").item<double>()));
  });
}

// kiln against itself: the packed run equals BSHD runs of one document each (state resets in the
// conv and the scan, attention within documents), in logits and in gradients.
TEST(KILN_SUITE(NemotronV3Parity), ThdEqualsEachDocumentAsItsOwnBatch) {
  KILN_SKIP_WITHOUT_DEVICE();
  for_each_fixture([&](const fs::path& dir) {
    const io::SafetensorsFile file(dir / "packed.safetensors");
    const at::Tensor ids = file.load("input_ids");
    const at::Tensor cu = file.load("cu_seqlens");
    auto packed = build(dir, at::kFloat);
    auto separate = build(dir, at::kFloat);
    const auto out = packed->forward({.input_ids = ids, .cu_seqlens = cu});
    // Sums of per-token losses on both sides (the means count T - N and len - 1 valid labels).
    const int64_t docs_count = cu.size(0) - 1;
    nn::causal_lm_loss(out.logits, nn::causal_lm_labels(ids, cu))
        .mul(ids.size(0) - docs_count)
        .backward();
    std::vector<at::Tensor> docs;
    for (int64_t d = 0; d < docs_count; ++d) {
      const int64_t begin = cu[d].item<int64_t>(), len = cu[d + 1].item<int64_t>() - begin;
      const at::Tensor doc = ids.narrow(0, begin, len).unsqueeze(0);
      const at::Tensor logits = separate->forward({.input_ids = doc}).logits;
      nn::causal_lm_loss(logits, nn::causal_lm_labels(doc)).mul(len - 1).backward();
      docs.push_back(logits[0].detach());
    }
    EXPECT_LE(relative_error(out.logits, at::cat(docs, 0)), 1e-5);
    std::map<std::string, at::Tensor> theirs;
    for (auto& [name, g] : separate->gradients()) theirs[name] = g;
    for (auto& [name, g] : packed->gradients()) {
      ASSERT_TRUE(theirs.count(name)) << name;
      EXPECT_LE((g - theirs[name]).abs().max().item<double>(),
                1e-5 * std::max(1.0, theirs[name].abs().max().item<double>()))
          << name;
    }
  });
}

TEST(KILN_SUITE(NemotronV3Parity), MtpLossAndGradientsMatchNemoFormula) {
  KILN_SKIP_WITHOUT_DEVICE();
  for_each_fixture([&](const fs::path& dir) {
    const double scale = mtp_scale(dir);
    auto model = build(dir, at::kFloat, {.mtp_loss_scale = scale});
    const io::SafetensorsFile inputs(dir / "inputs.safetensors");
    const io::SafetensorsFile expected(dir / "expected.safetensors");
    const at::Tensor ids = inputs.load("input_ids");
    const auto out = model->forward(
        {.input_ids = ids, .compute_logits = false, .labels = nn::causal_lm_labels(ids)});
    EXPECT_FALSE(out.logits.defined());
    ASSERT_TRUE(out.aux_losses.count("mtp"));
    const at::Tensor mtp = out.aux_losses.at("mtp");
    EXPECT_EQ(mtp.scalar_type(), at::kFloat);
    EXPECT_EQ(mtp.dim(), 0);
    const double theirs = expected.load("mtp_loss").item<double>();
    EXPECT_NEAR(mtp.item<double>(), theirs, 1e-5 * std::max(1.0, theirs));
    mtp.backward();
    const size_t compared = expect_grad_norms(*model, expected, "mtp_grad_norm/");
    EXPECT_EQ(compared, model->gradients().size()) << "main and MTP tensors";
  });
}

TEST(KILN_SUITE(NemotronV3Parity), NoMtpLossWithoutLabelsOrScale) {
  KILN_SKIP_WITHOUT_DEVICE();
  for_each_fixture([&](const fs::path& dir) {
    const io::SafetensorsFile inputs(dir / "inputs.safetensors");
    const at::Tensor ids = inputs.load("input_ids");
    auto off = build(dir, at::kFloat);
    EXPECT_TRUE(
        off->forward({.input_ids = ids, .labels = nn::causal_lm_labels(ids)}).aux_losses.empty());
    auto on = build(dir, at::kFloat, {.mtp_loss_scale = 0.5});
    EXPECT_TRUE(on->forward({.input_ids = ids}).aux_losses.empty()); // no labels: inference
  });
}

TEST(KILN_SUITE(NemotronV3Parity), ActivationCheckpointingGivesIdenticalGradients) {
  KILN_SKIP_WITHOUT_DEVICE();
  for_each_fixture([&](const fs::path& dir) {
    const io::SafetensorsFile inputs(dir / "inputs.safetensors");
    const at::Tensor ids = inputs.load("input_ids");
    const at::Tensor labels = nn::causal_lm_labels(ids);
    std::vector<std::map<std::string, at::Tensor>> grads;
    std::vector<sdk::ForwardOutput> outs;
    for (const bool checkpointing : {false, true}) {
      auto model = build(dir, at::kFloat,
                         {.activation_checkpointing = checkpointing, .mtp_loss_scale = 0.2});
      auto out = model->forward({.input_ids = ids, .labels = labels});
      (nn::causal_lm_loss(out.logits, labels) + out.aux_losses.at("mtp")).backward();
      std::map<std::string, at::Tensor> g;
      for (auto& [name, t] : model->gradients()) g[name] = t;
      grads.push_back(std::move(g));
      outs.push_back(std::move(out));
    }
    // Bit for bit on the CPU; a GPU may order its atomic gradient sums differently from run to run.
    auto same = [](const at::Tensor& a, const at::Tensor& b) {
      if (!a.is_cuda()) return at::equal(a, b);
      return (a - b).abs().max().item<double>() <=
             1e-6 * std::max(1.0, b.abs().max().item<double>());
    };
    EXPECT_TRUE(same(outs[0].logits, outs[1].logits));
    ASSERT_EQ(grads[0].size(), grads[1].size());
    for (const auto& [name, g] : grads[0]) {
      ASSERT_TRUE(grads[1].count(name)) << name;
      EXPECT_TRUE(same(g, grads[1].at(name))) << name;
    }
    ASSERT_EQ(outs[0].expert_load.size(), outs[1].expert_load.size());
    for (const auto& [layer, load] : outs[0].expert_load) {
      EXPECT_TRUE(at::equal(load, outs[1].expert_load.at(layer))) << "layer " << layer;
    }
  });
}

TEST(KILN_SUITE(NemotronV3Parity), ExpertLoadCountsTheRoutedTokensOfEveryMoeLayer) {
  KILN_SKIP_WITHOUT_DEVICE();
  for_each_fixture([&](const fs::path& dir) {
    const auto config = io::read_config(dir);
    auto model = build(dir, at::kFloat, {.mtp_loss_scale = 0.1});
    const io::SafetensorsFile inputs(dir / "inputs.safetensors");
    const at::Tensor ids = inputs.load("input_ids");
    const auto out = model->forward({.input_ids = ids, .labels = nn::causal_lm_labels(ids)});
    const int64_t experts = config["n_routed_experts"].get<int64_t>();
    const int64_t k = config["num_experts_per_tok"].get<int64_t>();
    // MoE layers: 'E' of the main pattern at their index; MTP sublayers at num_layers + j.
    std::string main = config.contains("hybrid_override_pattern")
                           ? config["hybrid_override_pattern"].get<std::string>()
                           : std::string();
    if (main.empty()) {
      for (const auto& t : config["layers_block_type"]) main += t == "moe" ? 'E' : '.';
    }
    std::vector<int64_t> expected_layers;
    for (size_t i = 0; i < main.size(); ++i) {
      if (main[i] == 'E') expected_layers.push_back(static_cast<int64_t>(i));
    }
    for (const auto& info : model->state_dict()) {
      const std::string& name = info.first;
      if (name.starts_with("mtp.layers.") && name.ends_with("mixer.gate.weight")) {
        expected_layers.push_back(static_cast<int64_t>(main.size()) + std::stoll(name.substr(11)));
      }
    }
    std::vector<int64_t> found;
    for (const auto& [layer, load] : out.expert_load) {
      found.push_back(layer);
      EXPECT_EQ(load.scalar_type(), at::kLong);
      EXPECT_EQ(load.sizes(), (std::vector<int64_t>{experts}));
      EXPECT_FALSE(load.requires_grad());
      EXPECT_EQ(load.sum().item<int64_t>(), ids.numel() * k) << "layer " << layer;
    }
    std::sort(expected_layers.begin(), expected_layers.end());
    EXPECT_EQ(found, expected_layers);
  });
}

TEST(KILN_SUITE(NemotronV3Parity), LogitsToKeepReturnsTheLastPositions) {
  KILN_SKIP_WITHOUT_DEVICE();
  for_each_fixture([&](const fs::path& dir) {
    auto model = build(dir, at::kFloat);
    const io::SafetensorsFile inputs(dir / "inputs.safetensors");
    const at::Tensor ids = inputs.load("input_ids");
    const auto all = model->forward({.input_ids = ids});
    const auto last = model->forward({.input_ids = ids, .logits_to_keep = 3});
    ASSERT_EQ(last.logits.size(1), 3);
    EXPECT_LE(relative_error(last.logits, all.logits.slice(1, ids.size(1) - 3)), 1e-6);
    const auto hidden_only = model->forward({.input_ids = ids, .compute_logits = false});
    EXPECT_FALSE(hidden_only.logits.defined());
    EXPECT_TRUE(at::equal(hidden_only.hidden, all.hidden));
  });
}

TEST(KILN_SUITE(NemotronV3Parity), SaveLoadRoundTripIsBitIdentical) {
  KILN_SKIP_WITHOUT_DEVICE();
  for_each_fixture([&](const fs::path& dir) {
    auto model = build(dir, at::kBFloat16); // the fixtures store bf16 weights, as hub files do
    const fs::path out = fs::temp_directory_path() / ("kiln-nemotron-" + dir.filename().string() +
                                                      "-" + std::to_string(::getpid()));
    fs::remove_all(out);
    io::save_checkpoint(out, model->config_json(), model->state_dict(),
                        {.max_shard_bytes = 100000});
    const io::CheckpointReader original(dir);
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
    auto again = build(out, at::kBFloat16);
    const at::Tensor ids = io::SafetensorsFile(dir / "inputs.safetensors").load("input_ids");
    EXPECT_TRUE(at::equal(again->forward({.input_ids = ids}).logits.cpu(),
                          model->forward({.input_ids = ids}).logits.cpu()));
    fs::remove_all(out);
  });
}

// Runs a command, returns {exit status, output}.
std::pair<int, std::string> run(const std::string& command) {
  FILE* pipe = ::popen(("OMP_NUM_THREADS=1 " + command + " 2>&1").c_str(), "r");
  std::string output;
  if (pipe == nullptr) return {-1, output};
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
  return {::pclose(pipe), output};
}

TEST(KILN_SUITE(NemotronV3Io), HfLoadsWhatKilnSaves) {
  KILN_SKIP_WITHOUT_DEVICE();
  const fs::path src = kFixtures / "latent"; // legacy pattern strings, latent MoE, biases
  auto model = build(src, at::kFloat);
  const fs::path out =
      fs::temp_directory_path() / ("kiln-nemotron-hf-" + std::to_string(::getpid()));
  fs::remove_all(out);
  io::save_checkpoint(out, model->config_json(), model->state_dict(), {.max_shard_bytes = 300000});
  const auto [status, output] =
      run(fmt::format("{} {}/tools/fixtures/check_hf_load.py {} {}", KILN_PYTHON, KILN_SOURCE_DIR,
                      out.string(), src.string()));
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("ok: HF 5.17.0"), std::string::npos) << output;
  fs::remove_all(out);
}

TEST(KILN_SUITE(NemotronV3Io), KilnLogitsCommandMatchesTheHfFixture) {
  if (kDevice.is_cuda()) GTEST_SKIP() << "the CLI runs on the CPU";
  const fs::path src = kFixtures / "hybrid";
  const fs::path out =
      fs::temp_directory_path() / ("kiln-nemotron-cli-" + std::to_string(::getpid()));
  fs::create_directories(out);
  const auto [status, output] =
      run(fmt::format("{} logits --model {} --input {} --output {} --grad-norms {} --backend torch",
                      KILN_CLI, src.string(), (src / "inputs.safetensors").string(),
                      (out / "logits.safetensors").string(), (out / "grads.safetensors").string()));
  ASSERT_EQ(status, 0) << output;
  const io::SafetensorsFile expected(src / "expected.safetensors");
  const io::SafetensorsFile ours(out / "logits.safetensors");
  EXPECT_LE(relative_error(ours.load("logits"), expected.load("logits")), 1e-5);
  EXPECT_NEAR(ours.load("loss").item<double>(), expected.load("loss").item<double>(), 1e-5);
  const io::SafetensorsFile norms(out / "grads.safetensors");
  size_t compared = 0;
  for (const auto& info : norms.tensors()) {
    const double theirs = expected.load("grad_norm/" + info.name).item<double>();
    EXPECT_NEAR(norms.load(info.name).item<double>(), theirs, 1e-4 * std::max(1.0, theirs))
        << info.name;
    ++compared;
  }
  EXPECT_GT(compared, 40u);
  fs::remove_all(out);
}

TEST(KILN_SUITE(NemotronV3Weights), UnexpectedAndMissingTensorsAreNamed) {
  KILN_SKIP_WITHOUT_DEVICE();
  const fs::path src = kFixtures / "hybrid";
  auto model = build(src, at::kFloat);
  const fs::path out =
      fs::temp_directory_path() / ("kiln-nemotron-bad-" + std::to_string(::getpid()));
  fs::remove_all(out);
  const auto config = io::read_config(src);
  auto check = [&](const nn::NamedTensors& state, const std::string& message) {
    io::save_checkpoint(out, model->config_json(), state, {});
    auto fresh = family().create({.json = config}, {.device = kDevice});
    try {
      fresh->load_weights(io::CheckpointReader(out));
      ADD_FAILURE() << "expected an error: " << message;
    } catch (const Error& e) {
      EXPECT_NE(e.message().find(message), std::string::npos) << e.message();
    }
  };
  auto state = model->state_dict();
  state.emplace_back("backbone.layers.0.mixer.rotary.inv_freq", at::zeros({4}));
  check(state,
        "1 unexpected tensor(s) for nemotron_v3 with 6 layers (+2 MTP sublayers): "
        "backbone.layers.0.mixer.rotary.inv_freq");
  state.pop_back();
  auto without = state;
  std::erase_if(without,
                [](const auto& nt) { return nt.first == "backbone.layers.0.mixer.A_log"; });
  check(without, "1 tensor(s) missing for nemotron_v3: backbone.layers.0.mixer.A_log");
  // Some MTP tensors but not all: an error; none (as HF's save_pretrained writes): allowed.
  without = state;
  std::erase_if(without, [](const auto& nt) { return nt.first == "mtp.layers.0.enorm.weight"; });
  check(without, "1 tensor(s) missing for nemotron_v3: mtp.layers.0.enorm.weight");
  without = state;
  std::erase_if(without, [](const auto& nt) { return nt.first.starts_with("mtp."); });
  io::save_checkpoint(out, model->config_json(), without, {});
  auto fresh = family().create({.json = config}, {.device = kDevice});
  fresh->load_weights(io::CheckpointReader(out));
  const at::Tensor ids = io::SafetensorsFile(src / "inputs.safetensors").load("input_ids");
  EXPECT_TRUE(at::equal(fresh->forward({.input_ids = ids}).logits,
                        model->forward({.input_ids = ids}).logits));
  fs::remove_all(out);
}

// ---- config -------------------------------------------------------------------------------------

nlohmann::json base_config() {
  return io::read_config(kFixtures / "hybrid");
}

std::string create_error(const nlohmann::json& config, const sdk::ModelOptions& options = {}) {
  try {
    family().create({.json = config}, options);
  } catch (const Error& e) {
    return e.message();
  }
  return "no error";
}

TEST(KILN_SUITE(NemotronV3Config), LegacyPatternStringsBuildTheSameModelAsTheLists) {
  nlohmann::json list = base_config();
  nlohmann::json legacy = list;
  legacy.erase("layers_block_type");
  legacy.erase("mtp_layers_block_type");
  legacy["hybrid_override_pattern"] = "ME*M-E";
  legacy["mtp_hybrid_override_pattern"] = "*E";
  legacy["num_hidden_layers"] = 52; // ignored, as HF does
  auto names = [](const nlohmann::json& c) {
    std::vector<std::string> out;
    for (auto& [name, t] : family().create({.json = c}, {})->named_parameters()) {
      out.push_back(name + shape_str(t.sizes()));
    }
    return out;
  };
  EXPECT_EQ(names(list), names(legacy));
  // Legacy names in the list (mamba, attention) are HF's aliases.
  nlohmann::json old_names = list;
  old_names["layers_block_type"] = {"mamba", "moe", "attention", "mamba", "mlp", "moe"};
  EXPECT_EQ(names(list), names(old_names));
}

TEST(KILN_SUITE(NemotronV3Config), BadConfigsAndOptionsAreClearErrors) {
  nlohmann::json c = base_config();
  c.erase("layers_block_type");
  c["hybrid_override_pattern"] = "M*X";
  EXPECT_NE(create_error(c).find("'hybrid_override_pattern' = \"M*X\" has the unknown symbol 'X'"),
            std::string::npos)
      << create_error(c);
  c = base_config();
  c["layers_block_type"] = {"mamba", "conv"};
  EXPECT_NE(create_error(c).find("unknown block type 'conv'"), std::string::npos);
  c = base_config();
  c["mamba_num_heads"] = 3; // n_groups 2
  EXPECT_NE(create_error(c).find("mamba_num_heads (3) must be a multiple of n_groups (2)"),
            std::string::npos);
  c = base_config();
  c["mlp_hidden_act"] = "silu";
  EXPECT_NE(create_error(c).find("mlp_hidden_act 'silu' is not supported; expected relu2"),
            std::string::npos);
  EXPECT_NE(create_error(base_config(), {.indexer_loss = "kl"})
                .find("indexer_loss 'kl' (model.indexer_loss) is not supported"),
            std::string::npos);
  c = base_config();
  c["num_nextn_predict_layers"] = 0;
  EXPECT_NE(create_error(c, {.mtp_loss_scale = 0.1})
                .find("needs MTP layers, but the config has num_nextn_predict_layers = 0"),
            std::string::npos);
  EXPECT_EQ(create_error(c), "no error");
}

TEST(KILN_SUITE(NemotronV3Init), RandomInitFollowsHfInitWeights) {
  const auto config = base_config();
  auto model = family().create({.json = config}, {.seed = 7});
  auto again = family().create({.json = config}, {.seed = 7});
  const auto a = model->state_dict();
  const auto b = again->state_dict();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const auto& [name, t] = a[i];
    EXPECT_TRUE(at::equal(t, b[i].second)) << name << ": the same seed gives the same weights";
    if (name.ends_with("norm.weight") || name.ends_with("layernorm.weight") ||
        name.ends_with("mixer.D")) {
      EXPECT_TRUE(at::all(t == 1).item<bool>()) << name;
    } else if (name.ends_with("A_log")) {
      EXPECT_TRUE(at::allclose(t.exp(), at::arange(1, t.size(0) + 1, at::kFloat))) << name;
    } else if (name.ends_with("dt_bias")) {
      const at::Tensor dt = at::softplus(t);
      EXPECT_TRUE(at::all(dt >= 1e-3 * 0.999).item<bool>() &&
                  at::all(dt <= 0.1 * 1.001).item<bool>())
          << name;
    } else if (name.ends_with(".bias")) {
      EXPECT_TRUE(at::all(t == 0).item<bool>()) << name;
    }
  }
  const auto out =
      model->forward({.input_ids = at::randint(config["vocab_size"].get<int64_t>(), {2, 9})});
  EXPECT_TRUE(at::isfinite(out.logits).all().item<bool>());
}

} // namespace
} // namespace kiln
