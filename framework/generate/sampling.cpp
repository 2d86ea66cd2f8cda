#include "generate/sampling.h"

#include "kiln/sdk/error.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace kiln::generate {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

} // namespace

void SamplingOptions::validate(const std::string& who) const {
  KILN_CHECK_USER(std::isfinite(temperature) && temperature >= 0.0,
                  "{}temperature: expected a finite value >= 0 (0 = greedy), found {}", who,
                  temperature);
  KILN_CHECK_USER(top_k >= 0, "{}top-k: expected >= 0 (0 = off), found {}", who, top_k);
  KILN_CHECK_USER(top_p > 0.0 && top_p <= 1.0, "{}top-p: expected a value in (0, 1], found {}", who,
                  top_p);
  KILN_CHECK_USER(min_p >= 0.0 && min_p <= 1.0, "{}min-p: expected a value in [0, 1], found {}",
                  who, min_p);
  KILN_CHECK_USER(std::isfinite(repetition_penalty) && repetition_penalty > 0.0,
                  "{}repetition-penalty: expected a finite value > 0 (1 = off), found {}", who,
                  repetition_penalty);
}

at::Tensor next_tokens(at::Tensor& logits, const at::Tensor& seen, const SamplingOptions& o,
                       at::Generator& generator) {
  if (o.repetition_penalty != 1.0) {
    const at::Tensor penalised =
        at::where(logits < 0, logits * o.repetition_penalty, logits / o.repetition_penalty);
    logits = at::where(seen, penalised, logits);
  }
  if (o.greedy()) return logits.argmax(-1);

  logits.div_(o.temperature);
  const int64_t vocab = logits.size(-1);
  if (o.top_k > 0 && o.top_k < vocab) {
    const at::Tensor kth = std::get<0>(logits.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);
    logits.masked_fill_(logits < kth, kNegInf);
  }
  if (o.top_p < 1.0) {
    // HF: sort ascending, drop the tokens whose cumulative probability stays <= 1 - top_p, and
    // always keep the most likely one.
    auto [sorted, order] = logits.sort(/*dim=*/-1, /*descending=*/false);
    const at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    at::Tensor drop = cumulative <= (1.0 - o.top_p);
    drop.select(-1, vocab - 1).fill_(false);
    logits.masked_fill_(drop.scatter(-1, order, drop), kNegInf);
  }
  if (o.min_p > 0.0) {
    const at::Tensor probs = logits.softmax(-1);
    const at::Tensor floor = probs.amax(-1, /*keepdim=*/true) * o.min_p;
    logits.masked_fill_(probs < floor, kNegInf);
  }
  return at::multinomial(logits.softmax(-1), 1, /*replacement=*/false, generator).squeeze(-1);
}

} // namespace kiln::generate
