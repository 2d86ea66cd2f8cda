#include "generate/generator.h"

#include "kiln/sdk/error.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <numeric>

namespace kiln::generate {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// Packs sequences as THD: ids int64 [T] and int32 [N + 1] offsets, on `device`.
std::pair<at::Tensor, at::Tensor> pack(const std::vector<std::vector<int64_t>>& sequences,
                                       c10::Device device) {
  std::vector<int64_t> ids;
  std::vector<int32_t> cu = {0};
  for (const auto& s : sequences) {
    ids.insert(ids.end(), s.begin(), s.end());
    cu.push_back(static_cast<int32_t>(ids.size()));
  }
  return {at::tensor(at::ArrayRef<int64_t>(ids), at::kLong).to(device),
          at::tensor(at::ArrayRef<int32_t>(cu), at::kInt).to(device)};
}

/// The hidden state of each packed sequence's last token: [N, H].
at::Tensor last_of_each(const at::Tensor& hidden, const at::Tensor& cu_seqlens) {
  return hidden.index_select(0, cu_seqlens.slice(0, 1).to(at::kLong) - 1);
}

} // namespace

double GenerationStats::decode_tokens_per_s() const {
  return decode_s > 0.0 ? static_cast<double>(decode_tokens) / decode_s : 0.0;
}

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStopId:
      return "stop token";
    case FinishReason::kStopped:
      return "stop string";
  }
  return "?";
}

Generator::Generator(sdk::Model& model, GenerationOptions options)
    : model_(model), options_(std::move(options)), device_(model.lm_head_weight().device()) {
  KILN_CHECK_USER(options_.max_new_tokens >= 1, "max_new_tokens: expected >= 1, found {}",
                  options_.max_new_tokens);
  options_.sampling.validate("--");
  if (options_.use_cache) {
    decoder_ = dynamic_cast<sdk::CachedDecoding*>(&model_);
    KILN_CHECK_USER(decoder_ != nullptr,
                    "model family '{}' has no generation cache (it does not implement "
                    "sdk::CachedDecoding); generate with --no-cache",
                    model_.family());
  }
}

at::Tensor Generator::head(const at::Tensor& hidden) const {
  // The LM head as every family defines it (sdk::Model::lm_head_weight), in the model's dtype;
  // the sampler works on float32 like HF's.
  return at::linear(hidden, model_.lm_head_weight()).to(at::kFloat);
}

at::Tensor Generator::last_logits(const std::vector<std::vector<int64_t>>& sequences,
                                  bool through_cache) {
  const auto [ids, cu] = pack(sequences, device_);
  sdk::ForwardInput input;
  input.input_ids = ids;
  input.cu_seqlens = cu;
  input.compute_logits = false;
  const sdk::ForwardOutput out =
      through_cache ? decoder_->forward_cached(input, *cache_) : model_.forward(input);
  return head(last_of_each(out.hidden, cu));
}

at::Tensor Generator::step(const at::Tensor& last_tokens) {
  sdk::ForwardInput input;
  input.input_ids = last_tokens.view({-1, 1});
  input.compute_logits = false;
  return head(decoder_->forward_cached(input, *cache_).hidden.select(1, -1));
}

Generation Generator::generate(const std::vector<std::vector<int64_t>>& prompts,
                               const TokenCallback& on_token) {
  c10::NoGradGuard no_grad;
  const auto t0 = Clock::now();
  const int64_t batch = static_cast<int64_t>(prompts.size());
  KILN_CHECK_USER(batch >= 1, "generate: no prompt given");
  int64_t longest = 0;
  Generation result;
  for (size_t b = 0; b < prompts.size(); ++b) {
    KILN_CHECK_USER(!prompts[b].empty(), "generate: prompt {} has no tokens", b);
    longest = std::max<int64_t>(longest, static_cast<int64_t>(prompts[b].size()));
    result.stats.prompt_tokens += static_cast<int64_t>(prompts[b].size());
  }
  const int64_t vocab = model_.lm_head_weight().size(0);
  for (const auto& p : prompts) {
    for (int64_t id : p) {
      KILN_CHECK_USER(id >= 0 && id < vocab,
                      "generate: token id {} is outside the vocabulary [0, {})", id, vocab);
    }
  }

  // The device's default generator, seeded per request; greedy decoding leaves it untouched.
  at::Generator generator = at::globalContext().defaultGenerator(device_);
  if (!options_.sampling.greedy()) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_current_seed(options_.sampling.seed);
  }
  at::Tensor seen;
  if (options_.sampling.repetition_penalty != 1.0) {
    seen = at::zeros({batch, vocab}, at::TensorOptions().dtype(at::kBool).device(device_));
    for (int64_t b = 0; b < batch; ++b) {
      seen[b].index_fill_(0, at::tensor(at::ArrayRef<int64_t>(prompts[b]), at::kLong).to(device_),
                          true);
    }
  }

  if (options_.use_cache) {
    const int64_t max_len = longest + options_.max_new_tokens;
    if (cache_ && cache_->batch_size() == batch && cache_->max_len() >= max_len) {
      cache_->reset();
    } else {
      cache_.reset(); // free the old one before allocating
      cache_ = decoder_->make_cache(batch, max_len);
    }
  }

  std::vector<std::vector<int64_t>> sequences = prompts; // for use_cache = false
  result.tokens.assign(static_cast<size_t>(batch), {});
  result.finish.assign(static_cast<size_t>(batch), FinishReason::kLength);
  std::vector<bool> running(static_cast<size_t>(batch), true);
  int64_t still_running = batch;
  at::Tensor logits = last_logits(prompts, /*through_cache=*/options_.use_cache);
  Clock::time_point decode_start;
  for (int64_t i = 0; i < options_.max_new_tokens && still_running > 0; ++i) {
    if (options_.keep_logits)
      result.logits.push_back(logits.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true));
    const at::Tensor next = next_tokens(logits, seen, options_.sampling, generator);
    const at::Tensor host = next.to(at::kCPU); // the step's one sync
    const int64_t* ids = host.data_ptr<int64_t>();
    for (int64_t b = 0; b < batch; ++b) {
      if (!running[b]) continue;
      auto& row = result.tokens[b];
      row.push_back(ids[b]);
      sequences[b].push_back(ids[b]);
      ++result.stats.generated_tokens;
      if (i > 0) ++result.stats.decode_tokens;
      bool stop = std::find(options_.stop_ids.begin(), options_.stop_ids.end(), ids[b]) !=
                  options_.stop_ids.end();
      if (stop) result.finish[b] = FinishReason::kStopId;
      if (on_token && on_token(b, row) && !stop) {
        stop = true;
        result.finish[b] = FinishReason::kStopped;
      }
      if (stop) {
        running[b] = false;
        --still_running;
      }
    }
    if (i == 0) {
      result.stats.first_token_s = seconds_since(t0);
      decode_start = Clock::now();
    }
    if (still_running == 0 || i + 1 == options_.max_new_tokens) break;
    if (seen.defined()) seen.scatter_(1, next.view({-1, 1}), true);
    logits = options_.use_cache ? step(next) : last_logits(sequences, false);
    ++result.stats.steps;
  }
  result.stats.decode_s = result.stats.steps > 0 ? seconds_since(decode_start) : 0.0;
  return result;
}

} // namespace kiln::generate
