// Next-token selection: greedy, or sampling with temperature, top-k, top-p and min-p, after an
// optional repetition penalty. The processors run in HF transformers' order (repetition penalty,
// temperature, top-k, top-p, min-p) with HF's definitions, so the same settings mean the same
// distribution.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kiln::generate {

struct SamplingOptions {
  double temperature = 0.0;        ///< 0: greedy (argmax); > 0: sample from softmax(logits / T)
  int64_t top_k = 0;               ///< keep the k most likely tokens (0: all)
  double top_p = 1.0;              ///< keep the smallest set with probability >= top_p (1: all)
  double min_p = 0.0;              ///< drop tokens less likely than min_p * the top probability
  double repetition_penalty = 1.0; ///< HF/CTRL: seen tokens' logits / p (if > 0) or * p (if < 0)
  uint64_t seed = 0;               ///< seeds the device's generator before a request

  bool greedy() const { return temperature <= 0.0; }
  /// Throws kiln::Error naming the first bad value (`who` is the option prefix, e.g. "--").
  void validate(const std::string& who) const;
};

/// Applies the options to float32 logits [B, V] (modified in place) and picks one token per row:
/// int64 [B] on the logits' device. `seen` is bool [B, V], true for every token already in a row
/// (prompt and generated), read only when repetition_penalty != 1.
at::Tensor next_tokens(at::Tensor& logits, const at::Tensor& seen, const SamplingOptions& options,
                       at::Generator& generator);

} // namespace kiln::generate
