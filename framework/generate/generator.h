// The decoding loop behind `kiln generate` (and the trainer's samples): prefill every prompt in one
// packed forward, then one token per row per step through the model's cache (or, with
// use_cache = false, a full forward over every sequence each step), with the sampling options,
// stop token ids, a per-token callback for streaming and stop strings, and timing.
#pragma once

#include "generate/sampling.h"

#include "kiln/sdk/cache.h"
#include "kiln/sdk/model.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kiln::generate {

struct GenerationOptions {
  int64_t max_new_tokens = 64;   ///< >= 1
  SamplingOptions sampling;      ///< greedy by default
  std::vector<int64_t> stop_ids; ///< a row ends after producing one of these (eos ids)
  bool use_cache = true;         ///< false: recompute every sequence in full each step
  bool keep_logits = false;      ///< keep every step's float32 logits (HF's output_logits)
};

enum class FinishReason { kLength, kStopId, kStopped };

struct GenerationStats {
  int64_t prompt_tokens = 0;    ///< all rows
  int64_t generated_tokens = 0; ///< all rows, stop tokens included
  int64_t decode_tokens = 0;    ///< generated_tokens after each row's first
  int64_t steps = 0;            ///< forwards after the prefill
  double first_token_s = 0.0;   ///< from the call to the first token of every row on the host
  double decode_s = 0.0;        ///< the steps after that
  /// Tokens per second of the decode steps, all rows together.
  double decode_tokens_per_s() const;
};

struct Generation {
  std::vector<std::vector<int64_t>> tokens; ///< per row: the generated ids (stop id included)
  std::vector<FinishReason> finish;         ///< per row
  /// With keep_logits: per step, float32 [B, V] on the host, before any sampling processor.
  std::vector<at::Tensor> logits;
  GenerationStats stats;
};

/// Called once per generated token of a row that is still running, with everything the row has
/// generated so far (the new token last). Returning true ends the row (e.g. a stop string).
using TokenCallback = std::function<bool(int64_t row, std::span<const int64_t> generated)>;

class Generator {
 public:
  /// The model must outlive the generator. use_cache needs a family implementing
  /// sdk::CachedDecoding (kiln::Error otherwise, suggesting --no-cache).
  Generator(sdk::Model& model, GenerationOptions options);

  /// Generates for every prompt (a batch of rows; lengths may differ). The cache is kept between
  /// calls and reused when it is large enough.
  Generation generate(const std::vector<std::vector<int64_t>>& prompts,
                      const TokenCallback& on_token = {});

  const GenerationOptions& options() const { return options_; }
  /// The cache of the last call (null before it, or without use_cache).
  const sdk::InferenceCache* cache() const { return cache_.get(); }

 private:
  /// float32 [B, V] logits of each sequence's last token, from one packed forward: through the
  /// cache (the prefill; every row empty) or a full forward without it.
  at::Tensor last_logits(const std::vector<std::vector<int64_t>>& sequences, bool through_cache);
  /// float32 [B, V] logits of one decode step: last_tokens [B] appended to every cache row.
  at::Tensor step(const at::Tensor& last_tokens);
  at::Tensor head(const at::Tensor& hidden) const;

  sdk::Model& model_;
  sdk::CachedDecoding* decoder_ = nullptr;
  GenerationOptions options_;
  c10::Device device_;
  std::unique_ptr<sdk::InferenceCache> cache_;
};

const char* finish_reason_name(FinishReason reason);

} // namespace kiln::generate
