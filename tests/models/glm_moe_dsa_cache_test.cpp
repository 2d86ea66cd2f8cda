// glm_moe_dsa cached decoding (plugins/models/glm_moe_dsa/cache.h): forward_cached against forward
// over the whole sequences, on the HF fixtures of tests/fixtures/glm_moe_dsa/<case>/ (index_topk =
// 8, so rows grow past it and the sparse selection over the cache is exercised), plus the cache's
// size, reuse, ragged rows and errors. The model is built through its plugin, as the host builds
// it; the family's object library is linked in for its Config.
#include "cache.h"
#include "config.h"
#include "model.h"

#include "core/model_registry.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "kiln/sdk/cache.h"
#include "kiln/sdk/error.h"
#include "support/model_test.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kiln {
namespace {

using test::load_plugins_once;
using test::relative_error;

namespace fs = std::filesystem;
namespace dsa = models::glm_moe_dsa;

const fs::path kFixtures = fs::path(KILN_SOURCE_DIR) / "tests/fixtures/glm_moe_dsa";
const c10::Device& kDevice = test::kTestDevice;
constexpr double kTolerance = 1e-5; // fp32: rounding of differently shaped GEMMs only

/// The model of a fixture folder through the plugin (fp32 on the suite's device).
std::shared_ptr<sdk::Model> build(const fs::path& dir) {
  load_plugins_once();
  const auto config = io::read_config(dir);
  const auto& family = core::ModelRegistry::global().find_for_config(config, "test");
  auto model = family.family.create({.json = config, .source = dir / "config.json"},
                                    {.device = kDevice, .dtype = at::kFloat});
  model->load_weights(io::CheckpointReader(dir));
  return model;
}

sdk::CachedDecoding& cached(sdk::Model& model) {
  auto* decoding = dynamic_cast<sdk::CachedDecoding*>(&model);
  EXPECT_NE(decoding, nullptr) << "glm_moe_dsa implements sdk::CachedDecoding";
  return *decoding;
}

/// Documents packed into ids [T] and int32 cu_seqlens [D + 1].
std::pair<at::Tensor, at::Tensor> pack(const std::vector<at::Tensor>& docs) {
  std::vector<int64_t> cu = {0};
  for (const auto& d : docs) cu.push_back(cu.back() + d.numel());
  return {at::cat(docs), at::tensor(cu, at::kLong).to(at::kInt)};
}

/// A decoding script: prompts (one per cache row, int64 [len]) prefilled packed, then appends,
/// each int64 [B, S] (S = 1: decode steps).
struct Script {
  std::vector<at::Tensor> prompts;
  std::vector<at::Tensor> appends;
};

/// Random prompts of the given lengths and `steps` appends of `width(k)` tokens per row.
Script random_script(const std::vector<int64_t>& lengths, int64_t steps, uint64_t seed,
                     const std::function<int64_t(int64_t)>& width = {}) {
  at::manual_seed(seed);
  constexpr int64_t kVocab = 64; // the fixtures' vocab_size
  Script s;
  for (int64_t n : lengths) s.prompts.push_back(at::randint(kVocab, {n}, at::kLong));
  const auto rows = static_cast<int64_t>(lengths.size());
  for (int64_t k = 0; k < steps; ++k) {
    s.appends.push_back(at::randint(kVocab, {rows, width ? width(k) : 1}, at::kLong));
  }
  return s;
}

/// forward_cached through `cache` (fresh or reset): the prefill's logits [T, V], then each
/// append's [B, S, V].
std::vector<at::Tensor> run_cached(sdk::Model& model, sdk::InferenceCache& cache,
                                   const Script& script) {
  const c10::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  auto [ids, cu] = pack(script.prompts);
  out.push_back(cached(model).forward_cached({.input_ids = ids, .cu_seqlens = cu}, cache).logits);
  for (const auto& step : script.appends) {
    out.push_back(cached(model).forward_cached({.input_ids = step}, cache).logits);
  }
  return out;
}

/// The same logits from forward over the whole sequences (packed) after each forward: the
/// prefill's, then each append's tokens, the last S of every document.
std::vector<at::Tensor> run_uncached(sdk::Model& model, const Script& script) {
  const c10::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  std::vector<at::Tensor> seqs = script.prompts;
  auto [ids, cu] = pack(seqs);
  out.push_back(model.forward({.input_ids = ids, .cu_seqlens = cu}).logits);
  for (const auto& step : script.appends) {
    const int64_t width = step.size(1);
    for (size_t b = 0; b < seqs.size(); ++b) seqs[b] = at::cat({seqs[b], step[b]});
    auto [all, offsets] = pack(seqs);
    const at::Tensor logits = model.forward({.input_ids = all, .cu_seqlens = offsets}).logits;
    std::vector<at::Tensor> rows;
    const at::Tensor ends = offsets.to(at::kLong);
    for (size_t b = 0; b < seqs.size(); ++b) {
      rows.push_back(logits.narrow(0, ends[b + 1].item<int64_t>() - width, width));
    }
    out.push_back(at::stack(rows));
  }
  return out;
}

void expect_same_logits(const std::vector<at::Tensor>& ours, const std::vector<at::Tensor>& ref,
                        double tolerance, const std::string& what) {
  ASSERT_EQ(ours.size(), ref.size());
  for (size_t k = 0; k < ours.size(); ++k) {
    ASSERT_EQ(ours[k].sizes(), ref[k].sizes()) << what << ", forward " << k;
    EXPECT_LE(relative_error(ours[k], ref[k]), tolerance) << what << ", forward " << k;
  }
}

/// Runs `fn`, which must throw a kiln::Error whose message contains `needle`.
void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
  }
}

class FixtureCase : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path dir() const { return kFixtures / GetParam(); }
};

class GlmMoeDsaCache : public FixtureCase {};

TEST_P(GlmMoeDsaCache, CachedPrefillOfHfDocumentsMatchesHf) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(dir());
  const io::SafetensorsFile file(dir() / "packed.safetensors");
  const at::Tensor cu = file.load("cu_seqlens");
  auto cache = cached(*model).make_cache(cu.size(0) - 1, 64);
  const c10::NoGradGuard no_grad;
  const auto out = cached(*model).forward_cached(
      {.input_ids = file.load("input_ids"), .cu_seqlens = cu}, *cache);
  EXPECT_LE(relative_error(out.logits, file.load("logits")), kTolerance);
  const at::Tensor lengths = cu.to(at::kLong).diff();
  for (int64_t b = 0; b < lengths.size(0); ++b) {
    EXPECT_EQ(cache->lengths()[b], lengths[b].item<int64_t>());
  }
}

TEST_P(GlmMoeDsaCache, DecodingPastIndexTopkEqualsForwardOnTheWholeSequences) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(dir());
  // Short prompts that cross index_topk = 8 while decoding, and long ones that start past it.
  for (const auto& lengths : {std::vector<int64_t>{2, 5, 3}, std::vector<int64_t>{19, 9, 12}}) {
    const Script script = random_script(lengths, 14, 7);
    auto cache = cached(*model).make_cache(static_cast<int64_t>(lengths.size()), 40);
    const auto ours = run_cached(*model, *cache, script);
    expect_same_logits(ours, run_uncached(*model, script), kTolerance,
                       "prompts " + std::to_string(lengths[0]) + "...");
    for (size_t b = 0; b < lengths.size(); ++b) EXPECT_EQ(cache->lengths()[b], lengths[b] + 14);
  }
}

TEST_P(GlmMoeDsaCache, DecodeStepsSelectAtMostIndexTopkKeysOfTheirOwnRow) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(dir());
  const int64_t topk = io::read_config(dir())["index_topk"].get<int64_t>();
  const int64_t max_len = 32;
  const Script script = random_script({12, 4}, 1, 3);
  auto cache = cached(*model).make_cache(2, max_len);
  run_cached(*model, *cache, {script.prompts, {}});
  const c10::NoGradGuard no_grad;
  const auto out = cached(*model).forward_cached({.input_ids = script.appends[0]}, *cache);
  // The running selection of a decode step: flat cache rows b * max_len + position.
  const at::Tensor sel = out.extra.at(dsa::kTopkKey).cpu().select(1, 0).to(at::kLong); // [2, K]
  ASSERT_EQ(sel.size(0), 2);
  EXPECT_EQ(sel.size(1), topk) << "min(index_topk, longest row)";
  const std::vector<int64_t> lengths = {13, 5};
  for (int64_t b = 0; b < 2; ++b) {
    const at::Tensor valid = sel[b].masked_select(sel[b] >= 0);
    EXPECT_EQ(valid.numel(), std::min(topk, lengths[b])) << "row " << b;
    EXPECT_TRUE((valid >= b * max_len).all().item<bool>()) << valid;
    EXPECT_TRUE((valid < b * max_len + lengths[b]).all().item<bool>()) << valid;
    if (lengths[b] <= topk) { // a short row selects every key, itself included (dense)
      EXPECT_TRUE(valid.eq(b * max_len + lengths[b] - 1).any().item<bool>()) << valid;
    }
  }
}

TEST_P(GlmMoeDsaCache, ResetCacheGivesTheSameResults) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(dir());
  auto cache = cached(*model).make_cache(3, 32);
  const Script first = random_script({6, 2, 9}, 12, 11);
  const auto once = run_cached(*model, *cache, first);
  cache->reset();
  for (int64_t n : cache->lengths()) EXPECT_EQ(n, 0);
  const auto again = run_cached(*model, *cache, first);
  expect_same_logits(again, once, 0.0, "after reset()");
  // A different request in the reset cache still equals forward (no stale rows are read).
  cache->reset();
  const Script other = random_script({3, 10, 1}, 12, 12);
  expect_same_logits(run_cached(*model, *cache, other), run_uncached(*model, other), kTolerance,
                     "another request after reset()");
}

TEST_P(GlmMoeDsaCache, RaggedRowsEqualEachRowAlone) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(dir());
  // Multi-token appends on rows of different lengths, then decode steps.
  const Script script = random_script({7, 1, 13}, 13, 5, [](int64_t k) { return k == 0 ? 3 : 1; });
  auto cache = cached(*model).make_cache(3, 40);
  const auto batch = run_cached(*model, *cache, script);
  expect_same_logits(batch, run_uncached(*model, script), kTolerance, "batch");
  for (int64_t b = 0; b < 3; ++b) {
    Script alone{{script.prompts[b]}, {}};
    for (const auto& step : script.appends) alone.appends.push_back(step.narrow(0, b, 1));
    auto single = cached(*model).make_cache(1, 40);
    const auto ours = run_cached(*model, *single, alone);
    auto [ids, cu] = pack(script.prompts);
    const int64_t start = cu[b].item<int64_t>(), len = script.prompts[b].numel();
    EXPECT_LE(relative_error(batch[0].narrow(0, start, len), ours[0]), kTolerance) << "row " << b;
    for (size_t k = 1; k < batch.size(); ++k) {
      EXPECT_LE(relative_error(batch[k].narrow(0, b, 1), ours[k]), kTolerance)
          << "row " << b << ", append " << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GlmMoeDsaCache,
                         ::testing::ValuesIn(test::fixture_cases(kFixtures)));
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GlmMoeDsaCache);

TEST(GlmMoeDsaCacheSize, LatentAndIndexKeysOnly) {
  KILN_SKIP_WITHOUT_DEVICE();
  for (const char* name : {"base", "share2"}) {
    auto model = build(kFixtures / name);
    const dsa::Config c = dsa::Config::from_json(io::read_config(kFixtures / name), "test");
    int64_t full = 0;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) full += c.has_indexer(i);
    ASSERT_GE(full, 1);
    const int64_t batch = 3, max_len = 20, dtype = 4; // float32
    auto cache = cached(*model).make_cache(batch, max_len);
    EXPECT_EQ(cache->bytes(), c.num_hidden_layers * batch * max_len *
                                      (c.kv_lora_rank + c.qk_rope_head_dim) * dtype +
                                  full * batch * max_len * c.index_head_dim * dtype)
        << name;
    EXPECT_EQ(cache->batch_size(), batch);
    EXPECT_EQ(cache->max_len(), max_len);
  }
  // GLM-5's widths: 512 + 64 = 576 latent values per token and layer (HF keeps 64 heads of
  // 256 + 256 expanded K/V values instead).
  const dsa::Config glm5;
  EXPECT_EQ(glm5.kv_lora_rank + glm5.qk_rope_head_dim, 576);
}

TEST(GlmMoeDsaCacheErrors, ClearMessages) {
  KILN_SKIP_WITHOUT_DEVICE();
  auto model = build(kFixtures / "base");
  sdk::CachedDecoding& decoding = cached(*model);
  const c10::NoGradGuard no_grad;
  auto cache = decoding.make_cache(2, 10);
  const Script script = random_script({4, 6}, 2, 9, [](int64_t) { return 3; });
  auto [ids, cu] = pack(script.prompts);
  decoding.forward_cached({.input_ids = ids, .cu_seqlens = cu}, *cache);

  expect_error([&] { decoding.forward_cached({.input_ids = ids, .cu_seqlens = cu}, *cache); },
               "packed prefill needs empty cache rows, but row 0 holds 4 tokens");
  // Row 1 holds 6 of 10: one append of 3 fits, a second does not.
  decoding.forward_cached({.input_ids = script.appends[0]}, *cache);
  expect_error([&] { decoding.forward_cached({.input_ids = script.appends[1]}, *cache); },
               "cache row 1 holds 9 of max_len 10 tokens and cannot take 3 more");
  EXPECT_EQ(cache->lengths(), (std::vector<int64_t>{7, 9})) << "a refused forward stores nothing";
  expect_error(
      [&] {
        decoding.forward_cached({.input_ids = script.appends[1].narrow(1, 0, 1),
                                 .position_ids = at::zeros({2, 1}, at::kLong)},
                                *cache);
      },
      "takes its positions from the cache");
  expect_error(
      [&] {
        decoding.forward_cached({.input_ids = at::zeros({3, 1}, at::kLong)}, *cache);
      },
      "input_ids must be [B = 2, S >= 1]");
  // A cache of another model (different widths) is refused.
  load_plugins_once();
  auto other = build(kFixtures / "share2");
  auto foreign = cached(*other).make_cache(2, 10);
  expect_error([&] { decoding.forward_cached({.input_ids = ids, .cu_seqlens = cu}, *foreign); },
               "needs a cache made by this model's make_cache");
  expect_error([&] { decoding.make_cache(1 << 20, 1 << 12); },
               "batch_size * max_len must be between 1 and 2147483647");
}

} // namespace
} // namespace kiln
