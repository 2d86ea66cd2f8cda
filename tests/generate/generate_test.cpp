// Greedy generation of every model family against HF transformers' `generate`
// (tests/fixtures/<family>/<case>/generate.safetensors, tools/fixtures/make_generate.py): the same
// tokens with the cache and without, logits within fp32 tolerance of HF's at every step, a ragged
// batch equal to its rows one by one, and the cache reset and reused between requests.
#include "support/model_test.h"

#include "core/model_registry.h"
#include "generate/generator.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "kiln/sdk/error.h"

#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <set>
#include <span>

namespace kiln::test {
namespace {

const std::filesystem::path kFixtures = std::filesystem::path(KILN_SOURCE_DIR) / "tests/fixtures";

struct GenerateCase {
  std::string family, name;
  std::filesystem::path dir() const { return kFixtures / family / name; }
};

void PrintTo(const GenerateCase& c, std::ostream* os) {
  *os << c.family << "/" << c.name;
}

std::vector<GenerateCase> generate_cases() {
  std::vector<GenerateCase> out;
  for (const char* family : {"glm4_moe", "glm_moe_dsa", "nemotron_v3"}) {
    for (const auto& name : fixture_cases(kFixtures / family)) {
      if (std::filesystem::exists(kFixtures / family / name / "generate.safetensors")) {
        out.push_back({family, name});
      }
    }
  }
  return out;
}

/// One prompt of a fixture: its ids, HF's new tokens and HF's per-step logits.
struct Reference {
  std::vector<int64_t> prompt, tokens;
  at::Tensor logits; // fp32 [N, V]
};

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

std::vector<Reference> references(const GenerateCase& c) {
  const io::SafetensorsFile file(c.dir() / "generate.safetensors");
  std::vector<Reference> out;
  for (int i = 0; file.contains(fmt::format("prompt/{}", i)); ++i) {
    Reference r;
    r.prompt = to_vector(file.load(fmt::format("prompt/{}", i)));
    const auto all = to_vector(file.load(fmt::format("generated/{}", i)));
    r.tokens.assign(all.begin() + static_cast<std::ptrdiff_t>(r.prompt.size()), all.end());
    r.logits = file.load(fmt::format("logits/{}", i)).to(at::kFloat);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<std::vector<int64_t>> prompts_of(const std::vector<Reference>& refs) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& r : refs) out.push_back(r.prompt);
  return out;
}

std::shared_ptr<sdk::Model> load_model(const GenerateCase& c) {
  load_plugins_once();
  const nlohmann::json config = io::read_config(c.dir());
  const auto& family = core::ModelRegistry::global().find_for_config(config, c.dir().string());
  auto model = family.family.create({.json = config, .source = c.dir() / "config.json"},
                                    {.device = kTestDevice, .dtype = at::kFloat});
  model->load_weights(io::CheckpointReader(c.dir()));
  return model;
}

generate::GenerationOptions greedy(int64_t new_tokens, bool use_cache) {
  generate::GenerationOptions o;
  o.max_new_tokens = new_tokens;
  o.use_cache = use_cache;
  o.keep_logits = true;
  return o;
}

class GenerateTest : public ::testing::TestWithParam<GenerateCase> {};

TEST_P(GenerateTest, GreedyTokensAndLogitsMatchHfWithAndWithoutCache) {
  KILN_SKIP_WITHOUT_DEVICE();
  const auto model = load_model(GetParam());
  for (const bool use_cache : {true, false}) {
    for (const Reference& ref : references(GetParam())) {
      const int64_t n = static_cast<int64_t>(ref.tokens.size());
      generate::Generator generator(*model, greedy(n, use_cache));
      const auto result = generator.generate({ref.prompt});
      SCOPED_TRACE(fmt::format("cache {}, prompt of {} tokens", use_cache, ref.prompt.size()));
      EXPECT_EQ(result.tokens[0], ref.tokens);
      EXPECT_EQ(result.finish[0], generate::FinishReason::kLength);
      ASSERT_EQ(static_cast<int64_t>(result.logits.size()), n);
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_LT(relative_error(result.logits[i][0], ref.logits[i]), 2e-5) << "step " << i;
      }
    }
  }
}

TEST_P(GenerateTest, CachedLogitsEqualUncachedAtEveryStep) {
  KILN_SKIP_WITHOUT_DEVICE();
  const auto model = load_model(GetParam());
  const auto refs = references(GetParam());
  const auto prompts = prompts_of(refs);
  const int64_t n = static_cast<int64_t>(refs[0].tokens.size());
  generate::Generator cached(*model, greedy(n, true));
  generate::Generator uncached(*model, greedy(n, false));
  const auto a = cached.generate(prompts);
  const auto b = uncached.generate(prompts);
  EXPECT_EQ(a.tokens, b.tokens);
  ASSERT_EQ(a.logits.size(), b.logits.size());
  for (size_t i = 0; i < a.logits.size(); ++i) {
    EXPECT_LT(relative_error(a.logits[i], b.logits[i]), 1e-5) << "step " << i;
  }
}

TEST_P(GenerateTest, RaggedBatchEqualsRowsOneByOneAndCacheIsReused) {
  KILN_SKIP_WITHOUT_DEVICE();
  const auto model = load_model(GetParam());
  const auto refs = references(GetParam());
  const auto prompts = prompts_of(refs);
  const int64_t n = static_cast<int64_t>(refs[0].tokens.size());
  generate::Generator generator(*model, greedy(n, true));
  for (int request = 0; request < 2; ++request) { // the second reuses (resets) the first's cache
    const auto batch = generator.generate(prompts);
    ASSERT_EQ(batch.tokens.size(), refs.size());
    for (size_t b = 0; b < refs.size(); ++b) {
      EXPECT_EQ(batch.tokens[b], refs[b].tokens) << "request " << request << ", row " << b;
    }
  }
  const sdk::InferenceCache* first = generator.cache();
  ASSERT_NE(first, nullptr);
  EXPECT_GT(first->bytes(), 0);
  const auto again = generator.generate({prompts[0]}); // another batch size: a new cache
  EXPECT_EQ(again.tokens[0], refs[0].tokens);
  EXPECT_EQ(generator.cache()->batch_size(), 1);
}

TEST_P(GenerateTest, StopIdsEndRowsAndCallbacksStopThem) {
  KILN_SKIP_WITHOUT_DEVICE();
  const auto model = load_model(GetParam());
  const auto refs = references(GetParam());
  // Row 0 stops at HF's 3rd token (as an eos id); row 1 is stopped by the callback after 5.
  auto options = greedy(static_cast<int64_t>(refs[0].tokens.size()), true);
  options.stop_ids = {refs[0].tokens[2]};
  generate::Generator generator(*model, options);
  const auto result = generator.generate({refs[0].prompt, refs[1].prompt},
                                         [](int64_t row, std::span<const int64_t> generated) {
                                           return row == 1 && generated.size() == 5;
                                         });
  const auto& row0 = result.tokens[0];
  const auto first_stop =
      std::find(refs[0].tokens.begin(), refs[0].tokens.end(), options.stop_ids[0]);
  EXPECT_EQ(row0, std::vector<int64_t>(refs[0].tokens.begin(), first_stop + 1));
  EXPECT_EQ(result.finish[0], generate::FinishReason::kStopId);
  const auto ends_at_stop =
      std::find(refs[1].tokens.begin(), refs[1].tokens.begin() + 5, options.stop_ids[0]);
  if (ends_at_stop == refs[1].tokens.begin() + 5) { // row 1 never produces the stop id early
    EXPECT_EQ(result.tokens[1],
              std::vector<int64_t>(refs[1].tokens.begin(), refs[1].tokens.begin() + 5));
    EXPECT_EQ(result.finish[1], generate::FinishReason::kStopped);
  }
}

TEST_P(GenerateTest, SamplingIsReproducibleForASeed) {
  KILN_SKIP_WITHOUT_DEVICE();
  const auto model = load_model(GetParam());
  const auto refs = references(GetParam());
  auto options = greedy(12, true);
  options.sampling.temperature = 1.5;
  options.sampling.top_k = 20;
  options.sampling.seed = 7;
  const auto a = generate::Generator(*model, options).generate({refs[0].prompt, refs[1].prompt});
  const auto b = generate::Generator(*model, options).generate({refs[0].prompt, refs[1].prompt});
  EXPECT_EQ(a.tokens, b.tokens);
  options.sampling.seed = 8;
  const auto c = generate::Generator(*model, options).generate({refs[0].prompt, refs[1].prompt});
  EXPECT_NE(a.tokens, c.tokens); // 24 tokens at T = 1.5 over >= 20 candidates: never all equal
  EXPECT_NE(a.tokens[0], std::vector<int64_t>(refs[0].tokens.begin(), refs[0].tokens.begin() + 12));
}

TEST_P(GenerateTest, ACacheRefusesWhatDoesNotFit) {
  KILN_SKIP_WITHOUT_DEVICE();
  const auto model = load_model(GetParam());
  auto* decoder = dynamic_cast<sdk::CachedDecoding*>(model.get());
  ASSERT_NE(decoder, nullptr) << GetParam().family << " has no generation cache";
  c10::NoGradGuard no_grad;
  auto cache = decoder->make_cache(2, 6);
  sdk::ForwardInput too_long;
  too_long.input_ids = at::arange(7, at::kLong).view({1, 7}).expand({2, 7}).contiguous();
  try {
    decoder->forward_cached(too_long, *cache);
    ADD_FAILURE() << "no error for 7 tokens in a cache of 6";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_len 6"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cache->lengths(), (std::vector<int64_t>{0, 0})); // nothing was committed
  sdk::ForwardInput step;
  step.input_ids = at::ones({2, 3}, at::kLong);
  decoder->forward_cached(step, *cache);
  EXPECT_EQ(cache->lengths(), (std::vector<int64_t>{3, 3}));
  sdk::ForwardInput packed;
  packed.input_ids = at::ones({3}, at::kLong);
  packed.cu_seqlens = at::tensor({0, 1, 3}, at::kInt);
  try {
    decoder->forward_cached(packed, *cache);
    ADD_FAILURE() << "no error for a packed prefill into non-empty rows";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("empty cache rows"), std::string::npos) << e.what();
  }
  cache->reset();
  EXPECT_EQ(cache->lengths(), (std::vector<int64_t>{0, 0}));
  decoder->forward_cached(packed, *cache);
  EXPECT_EQ(cache->lengths(), (std::vector<int64_t>{1, 2}));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GenerateTest, ::testing::ValuesIn(generate_cases()),
                         [](const auto& info) {
                           return info.param.family + "_" + info.param.name;
                         });

TEST(GenerateFixtures, EveryFamilyHasGenerationReferences) {
  std::set<std::string> families;
  for (const auto& c : generate_cases()) families.insert(c.family);
  EXPECT_EQ(families, (std::set<std::string>{"glm4_moe", "glm_moe_dsa", "nemotron_v3"}));
}

} // namespace
} // namespace kiln::test
