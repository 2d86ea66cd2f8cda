// nemotron_v3 cached decoding (sdk::CachedDecoding): a forward through the cache (packed prefill,
// one-token steps, multi-token appends, ragged rows) equals Model::forward over the whole
// sequences, on the fixtures in tests/fixtures/nemotron_v3/<case>/ (chunk_size 8, so prompts and
// appends cross scan chunks; conv_kernel 4, so a 2-token prompt leaves a partly empty window).
#include "core/model_registry.h"
#include "io/checkpoint.h"
#include "kiln/sdk/cache.h"
#include "kiln/sdk/error.h"
#include "support/model_test.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace kiln {
namespace {

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

// fp32: the cached path sums the scan and the attention in other orders than one forward.
constexpr double kTolerance = 1e-5;

std::shared_ptr<sdk::Model> build(const fs::path& dir, at::ScalarType dtype) {
  load_plugins_once();
  const auto config = io::read_config(dir);
  const auto& found = core::ModelRegistry::global().find_for_config(config, "test");
  EXPECT_EQ(found.family.name, "nemotron_v3");
  sdk::ModelOptions options;
  options.device = kDevice;
  options.dtype = dtype;
  auto model = found.family.create({.json = config, .source = dir / "config.json"}, options);
  model->load_weights(io::CheckpointReader(dir));
  return model;
}

sdk::CachedDecoding& decoding(sdk::Model& model) {
  auto* cached = dynamic_cast<sdk::CachedDecoding*>(&model);
  EXPECT_NE(cached, nullptr) << "nemotron_v3 implements sdk::CachedDecoding";
  return *cached;
}

void for_each_fixture(const std::function<void(const fs::path&)>& check) {
  const auto all = test::fixture_cases(kFixtures);
  ASSERT_FALSE(all.empty()) << "no fixtures in " << kFixtures;
  for (const auto& name : all) {
    SCOPED_TRACE("fixture " + name);
    check(kFixtures / name);
  }
}

int64_t vocab(const fs::path& dir) {
  return io::read_config(dir).at("vocab_size").get<int64_t>();
}

at::Tensor cu_seqlens_of(const std::vector<at::Tensor>& docs) {
  std::vector<int32_t> cu = {0};
  for (const auto& d : docs) cu.push_back(cu.back() + static_cast<int32_t>(d.size(0)));
  return at::tensor(at::ArrayRef<int32_t>(cu), at::kInt);
}

// Row by row: every row's tokens so far (int64 [len]), and what the cache is fed.
struct Rows {
  std::vector<at::Tensor> tokens;

  // The first prompt of each row, fed packed: {input_ids [T], cu_seqlens}.
  sdk::ForwardInput prefill(const std::vector<at::Tensor>& prompts) {
    tokens = prompts;
    return {.input_ids = at::cat(prompts), .cu_seqlens = cu_seqlens_of(prompts)};
  }
  // new_ids [B, S] appended to every row.
  sdk::ForwardInput append(const at::Tensor& new_ids) {
    for (size_t b = 0; b < tokens.size(); ++b) {
      tokens[b] = at::cat({tokens[b], new_ids[static_cast<int64_t>(b)]});
    }
    return {.input_ids = new_ids};
  }
  // forward() over the whole packed sequences: the logits of each row's last `last` tokens,
  // [B, last, V].
  at::Tensor reference(sdk::Model& model, int64_t last) const {
    const at::Tensor cu = cu_seqlens_of(tokens);
    const at::Tensor logits =
        model.forward({.input_ids = at::cat(tokens), .cu_seqlens = cu}).logits.cpu();
    std::vector<at::Tensor> out;
    for (size_t b = 0; b < tokens.size(); ++b) {
      const int64_t end = cu[static_cast<int64_t>(b) + 1].item<int64_t>();
      out.push_back(logits.narrow(0, end - last, last));
    }
    return at::stack(out);
  }
};

// Logits [T, V] of a packed forward as [B, len_b, V] pieces' last `last` tokens ([B, last, V]).
at::Tensor last_of_docs(const at::Tensor& logits, const at::Tensor& cu, int64_t last) {
  std::vector<at::Tensor> out;
  for (int64_t b = 0; b + 1 < cu.size(0); ++b) {
    out.push_back(logits.cpu().narrow(0, cu[b + 1].item<int64_t>() - last, last));
  }
  return at::stack(out);
}

std::vector<at::Tensor> random_prompts(const std::vector<int64_t>& lengths, int64_t vocab) {
  std::vector<at::Tensor> out;
  for (int64_t n : lengths) out.push_back(at::randint(vocab, {n}, at::kLong));
  return out;
}

// Prefill of prompts of 2, 11 and 19 tokens (shorter than the conv window; across scan chunks),
// 10 one-token steps, a 3-token append and one more step; every cached forward's logits against
// forward() on the whole sequences. Returns every cached forward's logits, in order.
std::vector<at::Tensor> decode_and_compare(sdk::Model& model, sdk::InferenceCache& cache,
                                           int64_t vocab_size, uint64_t seed) {
  at::manual_seed(seed);
  sdk::CachedDecoding& cached = decoding(model);
  std::vector<at::Tensor> produced;
  Rows rows;
  const auto prompts = random_prompts({2, 11, 19}, vocab_size);
  const sdk::ForwardInput prefill = rows.prefill(prompts);
  const at::Tensor first = cached.forward_cached(prefill, cache).logits;
  EXPECT_EQ(first.dim(), 2); // packed: [T, V]
  produced.push_back(first.cpu());
  // Every prompt token, not only the last ones.
  EXPECT_LE(relative_error(first, model.forward(prefill).logits), kTolerance);
  EXPECT_LE(relative_error(last_of_docs(first, prefill.cu_seqlens, 1), rows.reference(model, 1)),
            kTolerance);
  EXPECT_EQ(cache.lengths(), (std::vector<int64_t>{2, 11, 19}));

  const std::vector<int64_t> appends = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 1};
  for (size_t i = 0; i < appends.size(); ++i) {
    SCOPED_TRACE("append " + std::to_string(i) + " of " + std::to_string(appends[i]) + " tokens");
    const at::Tensor ids = at::randint(vocab_size, {3, appends[i]}, at::kLong);
    const at::Tensor logits = cached.forward_cached(rows.append(ids), cache).logits;
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, appends[i], vocab_size}));
    EXPECT_LE(relative_error(logits, rows.reference(model, appends[i])), kTolerance);
    produced.push_back(logits.cpu());
  }
  EXPECT_EQ(cache.lengths(), (std::vector<int64_t>{2 + 14, 11 + 14, 19 + 14}));
  return produced;
}

TEST(KILN_SUITE(NemotronV3Cache), PackedPrefillStepsAndAppendsMatchForward) {
  KILN_SKIP_WITHOUT_DEVICE();
  c10::NoGradGuard no_grad;
  for_each_fixture([&](const fs::path& dir) {
    auto model = build(dir, at::kFloat);
    auto cache = decoding(*model).make_cache(3, 64);
    EXPECT_EQ(cache->batch_size(), 3);
    EXPECT_EQ(cache->max_len(), 64);
    decode_and_compare(*model, *cache, vocab(dir), 1234);
  });
}

TEST(KILN_SUITE(NemotronV3Cache), ResetAndReuseGivesIdenticalResults) {
  KILN_SKIP_WITHOUT_DEVICE();
  c10::NoGradGuard no_grad;
  for_each_fixture([&](const fs::path& dir) {
    auto model = build(dir, at::kFloat);
    auto cache = decoding(*model).make_cache(3, 40);
    const auto first = decode_and_compare(*model, *cache, vocab(dir), 99);
    cache->reset();
    EXPECT_EQ(cache->lengths(), (std::vector<int64_t>{0, 0, 0}));
    const auto second = decode_and_compare(*model, *cache, vocab(dir), 99);
    ASSERT_EQ(first.size(), second.size());
    for (size_t i = 0; i < first.size(); ++i) {
      EXPECT_TRUE(at::equal(first[i], second[i])) << "forward " << i << " after reset()";
    }
    // A fresh cache agrees too.
    auto fresh = decoding(*model).make_cache(3, 40);
    const auto third = decode_and_compare(*model, *fresh, vocab(dir), 99);
    for (size_t i = 0; i < first.size(); ++i) EXPECT_TRUE(at::equal(first[i], third[i]));
  });
}

TEST(KILN_SUITE(NemotronV3Cache), RaggedRowsEqualEachRowAlone) {
  KILN_SKIP_WITHOUT_DEVICE();
  c10::NoGradGuard no_grad;
  for_each_fixture([&](const fs::path& dir) {
    auto model = build(dir, at::kFloat);
    sdk::CachedDecoding& cached = decoding(*model);
    at::manual_seed(7);
    const auto prompts = random_prompts({13, 3, 9}, vocab(dir));
    const std::vector<at::Tensor> steps = {at::randint(vocab(dir), {3, 1}, at::kLong),
                                           at::randint(vocab(dir), {3, 4}, at::kLong),
                                           at::randint(vocab(dir), {3, 1}, at::kLong)};
    auto together = cached.make_cache(3, 32);
    std::vector<at::Tensor> batched;
    batched.push_back(
        cached
            .forward_cached({.input_ids = at::cat(prompts), .cu_seqlens = cu_seqlens_of(prompts)},
                            *together)
            .logits.cpu());
    for (const auto& ids : steps) {
      batched.push_back(cached.forward_cached({.input_ids = ids}, *together).logits.cpu());
    }
    const at::Tensor cu = cu_seqlens_of(prompts);
    for (int64_t b = 0; b < 3; ++b) {
      SCOPED_TRACE("row " + std::to_string(b));
      auto alone = cached.make_cache(1, 32);
      const at::Tensor prompt = prompts[static_cast<size_t>(b)];
      const at::Tensor first =
          cached
              .forward_cached({.input_ids = prompt, .cu_seqlens = cu_seqlens_of({prompt})}, *alone)
              .logits;
      EXPECT_LE(relative_error(first, batched[0].narrow(0, cu[b].item<int64_t>(), prompt.size(0))),
                kTolerance);
      for (size_t i = 0; i < steps.size(); ++i) {
        const at::Tensor row = steps[i].narrow(0, b, 1); // [1, S]
        const at::Tensor logits = cached.forward_cached({.input_ids = row}, *alone).logits;
        EXPECT_LE(relative_error(logits, batched[i + 1].narrow(0, b, 1)), kTolerance)
            << "append " << i;
      }
    }
  });
}

TEST(KILN_SUITE(NemotronV3Cache), AppendToEmptyRowsEqualsForward) {
  KILN_SKIP_WITHOUT_DEVICE();
  c10::NoGradGuard no_grad;
  for_each_fixture([&](const fs::path& dir) {
    auto model = build(dir, at::kFloat);
    sdk::CachedDecoding& cached = decoding(*model);
    at::manual_seed(11);
    // A [B, S] first forward (no packing) and a second one, against forward() on [B, S1 + S2].
    const at::Tensor a = at::randint(vocab(dir), {2, 10}, at::kLong);
    const at::Tensor b = at::randint(vocab(dir), {2, 1}, at::kLong);
    auto cache = cached.make_cache(2, 16);
    const at::Tensor first = cached.forward_cached({.input_ids = a}, *cache).logits;
    const at::Tensor second = cached.forward_cached({.input_ids = b}, *cache).logits;
    const at::Tensor whole = model->forward({.input_ids = at::cat({a, b}, 1)}).logits;
    EXPECT_LE(relative_error(first, whole.narrow(1, 0, 10)), kTolerance);
    EXPECT_LE(relative_error(second, whole.narrow(1, 10, 1)), kTolerance);
    // hidden always; logits_to_keep and compute_logits as forward().
    const auto kept = cached.forward_cached({.input_ids = b, .logits_to_keep = 1}, *cache);
    EXPECT_EQ(kept.logits.size(1), 1);
    const auto none = cached.forward_cached({.input_ids = b, .compute_logits = false}, *cache);
    EXPECT_FALSE(none.logits.defined());
    EXPECT_EQ(none.hidden.sizes(), (std::vector<int64_t>{2, 1, kept.hidden.size(-1)}));
  });
}

void expect_error(const std::function<void()>& call, const std::string& needle) {
  try {
    call();
    ADD_FAILURE() << "expected kiln::Error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(KILN_SUITE(NemotronV3Cache), ErrorsAreClear) {
  KILN_SKIP_WITHOUT_DEVICE();
  c10::NoGradGuard no_grad;
  const fs::path dir = kFixtures / "hybrid";
  auto model = build(dir, at::kFloat);
  sdk::CachedDecoding& cached = decoding(*model);
  const auto prompts = random_prompts({4, 6}, vocab(dir));
  const sdk::ForwardInput prefill{.input_ids = at::cat(prompts),
                                  .cu_seqlens = cu_seqlens_of(prompts)};
  auto cache = cached.make_cache(2, 8);
  cached.forward_cached(prefill, *cache);
  // Packed prefill into rows that hold tokens.
  expect_error([&] { cached.forward_cached(prefill, *cache); },
               "packed prefill needs empty cache rows");
  // Past max_len: row 1 holds 6 of 8.
  expect_error(
      [&] {
        cached.forward_cached({.input_ids = at::zeros({2, 3}, at::kLong)}, *cache);
      },
      "cannot take 3 more");
  EXPECT_EQ(cache->lengths(), (std::vector<int64_t>{4, 6})) << "a refused forward changes nothing";
  // Rows that do not match the cache, and position_ids.
  expect_error(
      [&] {
        cached.forward_cached({.input_ids = at::zeros({3, 1}, at::kLong)}, *cache);
      },
      "input_ids must be [B = 2");
  expect_error(
      [&] {
        cached.forward_cached({.input_ids = at::zeros({2, 1}, at::kLong),
                               .position_ids = at::zeros({2, 1}, at::kLong)},
                              *cache);
      },
      "pass no position_ids");
  // A cache of another model.
  auto other = build(kFixtures / "latent", at::kFloat);
  auto foreign = decoding(*other).make_cache(2, 8);
  expect_error([&] { cached.forward_cached(prefill, *foreign); }, "this model's make_cache");
  // The cache still works after the refusals.
  cached.forward_cached({.input_ids = at::zeros({2, 2}, at::kLong)}, *cache);
  EXPECT_EQ(cache->lengths(), (std::vector<int64_t>{6, 8}));
}

TEST(KILN_SUITE(NemotronV3Cache), BytesCountEveryStateTensor) {
  KILN_SKIP_WITHOUT_DEVICE();
  for_each_fixture([&](const fs::path& dir) {
    const nlohmann::json c = io::read_config(dir);
    const int64_t batch = 3, max_len = 20;
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      auto model = build(dir, dtype);
      const int64_t elt = dtype == at::kFloat ? 4 : 2;
      const int64_t heads = c.at("mamba_num_heads"), head_dim = c.at("mamba_head_dim");
      const int64_t state = c.at("ssm_state_size"), groups = c.at("n_groups");
      const int64_t conv_dim = heads * head_dim + 2 * groups * state;
      int64_t expected = 0;
      // The layer kinds: the layers_block_type list, or the legacy pattern string.
      std::vector<std::string> types;
      if (c.contains("layers_block_type")) {
        for (const auto& t : c.at("layers_block_type")) types.push_back(t.get<std::string>());
      } else {
        for (char k : c.at("hybrid_override_pattern").get<std::string>()) {
          types.push_back(k == 'M' ? "linear_attention" : k == '*' ? "full_attention" : "other");
        }
      }
      for (const auto& type : types) {
        if (type == "full_attention") {
          const int64_t kv = c.at("num_key_value_heads"), hd = c.at("head_dim");
          expected += 2 * batch * max_len * kv * hd * elt;
        } else if (type == "linear_attention") {
          expected += batch * conv_dim * (c.at("conv_kernel").get<int64_t>() - 1) * elt;
          expected += batch * heads * head_dim * state * 4; // float32 SSM state, any model dtype
        }
      }
      EXPECT_EQ(decoding(*model).make_cache(batch, max_len)->bytes(), expected)
          << c10::toString(dtype);
    }
  });
}

} // namespace
} // namespace kiln
