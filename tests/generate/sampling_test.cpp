// The sampling processors on hand-made logits: what each one keeps, HF's repetition penalty,
// greedy limits, seeds, and the option checks.
#include "generate/sampling.h"

#include "kiln/sdk/error.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <mutex>
#include <set>

namespace kiln::generate {
namespace {

at::Generator seeded(uint64_t seed) {
  at::Generator g = at::globalContext().defaultGenerator(at::kCPU);
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_current_seed(seed);
  return g;
}

/// The set of tokens drawn from `logits` (one row) in `draws` samples.
std::set<int64_t> support(const at::Tensor& logits, const SamplingOptions& o, int draws = 400) {
  at::Generator g = seeded(1);
  std::set<int64_t> seen;
  const at::Tensor none = at::zeros(logits.sizes(), at::kBool);
  for (int i = 0; i < draws; ++i) {
    at::Tensor l = logits.clone();
    seen.insert(next_tokens(l, none, o, g)[0].item<int64_t>());
  }
  return seen;
}

// Probabilities 0.4, 0.3, 0.2, 0.1 (token 0 .. 3) and two that can never be drawn.
at::Tensor four_way() {
  return at::log(at::tensor({0.4, 0.3, 0.2, 0.1, 0.0, 0.0}, at::kFloat)).view({1, 6});
}

TEST(Sampling, GreedyTakesTheArgmaxOfEveryRow) {
  at::Tensor logits = at::tensor({0.1f, 3.0f, -1.0f, 2.0f, 5.0f, 0.0f}, at::kFloat).view({2, 3});
  at::Generator g = seeded(0);
  const at::Tensor none = at::zeros({2, 3}, at::kBool);
  const at::Tensor ids = next_tokens(logits, none, SamplingOptions{}, g);
  EXPECT_EQ(ids[0].item<int64_t>(), 1);
  EXPECT_EQ(ids[1].item<int64_t>(), 1);
}

TEST(Sampling, TemperatureSamplesEveryTokenWithProbability) {
  SamplingOptions o;
  o.temperature = 1.0;
  EXPECT_EQ(support(four_way(), o), (std::set<int64_t>{0, 1, 2, 3}));
}

TEST(Sampling, TopKKeepsTheKMostLikely) {
  SamplingOptions o;
  o.temperature = 1.0;
  o.top_k = 2;
  EXPECT_EQ(support(four_way(), o), (std::set<int64_t>{0, 1}));
  o.top_k = 1;
  EXPECT_EQ(support(four_way(), o), (std::set<int64_t>{0}));
}

TEST(Sampling, TopPKeepsTheSmallestSetReachingP) {
  SamplingOptions o;
  o.temperature = 1.0;
  o.top_p = 0.65; // 0.4 + 0.3 >= 0.65: tokens 0 and 1 (HF drops cumulative <= 1 - p from below)
  EXPECT_EQ(support(four_way(), o), (std::set<int64_t>{0, 1}));
  o.top_p = 0.75; // needs 0.2 as well
  EXPECT_EQ(support(four_way(), o), (std::set<int64_t>{0, 1, 2}));
  o.top_p = 0.01; // always keeps the most likely token
  EXPECT_EQ(support(four_way(), o), (std::set<int64_t>{0}));
}

TEST(Sampling, MinPDropsTokensBelowAFractionOfTheTop) {
  SamplingOptions o;
  o.temperature = 1.0;
  o.min_p = 0.45; // floor 0.18: 0.4, 0.3 and 0.2 stay
  EXPECT_EQ(support(four_way(), o), (std::set<int64_t>{0, 1, 2}));
  o.min_p = 0.8; // floor 0.32
  EXPECT_EQ(support(four_way(), o), (std::set<int64_t>{0}));
}

TEST(Sampling, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOfSeenTokens) {
  at::Tensor logits = at::tensor({2.0f, -1.0f, 1.9f, 0.5f}, at::kFloat).view({1, 4});
  const at::Tensor seen = at::tensor({1, 1, 0, 0}, at::kInt).to(at::kBool).view({1, 4});
  SamplingOptions o;
  o.repetition_penalty = 2.0;
  at::Generator g = seeded(0);
  EXPECT_EQ(next_tokens(logits, seen, o, g)[0].item<int64_t>(), 2); // 2.0 / 2 < 1.9
  EXPECT_TRUE(at::allclose(logits, at::tensor({1.0f, -2.0f, 1.9f, 0.5f}).view({1, 4})));
}

TEST(Sampling, ASeedFixesTheDraws) {
  SamplingOptions o;
  o.temperature = 1.0;
  const at::Tensor logits = at::zeros({4, 1000});
  const at::Tensor none = at::zeros({4, 1000}, at::kBool);
  auto draw = [&](uint64_t seed) {
    at::Generator g = seeded(seed);
    at::Tensor l = logits.clone();
    return next_tokens(l, none, o, g);
  };
  EXPECT_TRUE(at::equal(draw(3), draw(3)));
  EXPECT_FALSE(at::equal(draw(3), draw(4)));
}

TEST(Sampling, BadOptionsAreNamedErrors) {
  auto message = [](SamplingOptions o) {
    try {
      o.validate("--");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  SamplingOptions o;
  EXPECT_EQ(message(o), "");
  o.temperature = -1;
  EXPECT_NE(message(o).find("--temperature: expected a finite value >= 0"), std::string::npos);
  o = {};
  o.top_p = 0;
  EXPECT_NE(message(o).find("--top-p: expected a value in (0, 1], found 0"), std::string::npos);
  o = {};
  o.top_k = -2;
  EXPECT_NE(message(o).find("--top-k"), std::string::npos);
  o = {};
  o.min_p = 1.5;
  EXPECT_NE(message(o).find("--min-p"), std::string::npos);
  o = {};
  o.repetition_penalty = 0;
  EXPECT_NE(message(o).find("--repetition-penalty"), std::string::npos);
}

} // namespace
} // namespace kiln::generate
