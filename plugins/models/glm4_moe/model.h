// The glm4_moe causal LM (HF Glm4MoeForCausalLM): embeddings, decoder layers, final norm, LM head.
#pragma once

#include "cache.h"
#include "config.h"
#include "layers.h"

#include "kiln/nn/linear.h"
#include "kiln/nn/rotary.h"
#include "kiln/sdk/cache.h"
#include "kiln/sdk/model.h"

#include <functional>
#include <map>
#include <vector>

namespace kiln::models::glm4_moe {

class Model final : public sdk::Model, public sdk::CachedDecoding {
 public:
  Model(Config config, const sdk::ModelOptions& options);

  std::string family() const override { return "glm4_moe"; }
  sdk::ForwardOutput forward(const sdk::ForwardInput& input) override;
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() override;
  void load_weights(const sdk::WeightSource& source) override;
  std::vector<std::pair<std::string, at::Tensor>> state_dict() override;
  std::vector<std::pair<std::string, at::Tensor>> gradients() override;
  nlohmann::json config_json() const override;
  at::Tensor lm_head_weight() override { return lm_head_.weight; }

  std::unique_ptr<sdk::InferenceCache> make_cache(int64_t batch_size, int64_t max_len) override;
  sdk::ForwardOutput forward_cached(const sdk::ForwardInput& input,
                                    sdk::InferenceCache& cache) override;

  /// HF's _init_weights: normal(0, initializer_range) weights, zero biases, unit norms.
  void init_random(uint64_t seed);

 private:
  /// The hub layout of `pick(parameter)` for every parameter (state_dict: the detached tensor;
  /// gradients: its grad); buffers and MTP tensors only when `with_extras`.
  nn::NamedTensors hub_layout(const std::function<at::Tensor(const at::Tensor&)>& pick,
                              bool with_extras);

  /// Final norm and LM head (logits_to_keep, compute_logits) on the last layer's output.
  void finish(at::Tensor h, const sdk::ForwardInput& input, sdk::ForwardOutput& out) const;

  Config config_;
  at::TensorOptions options_;
  bool activation_checkpointing_ = false;
  nn::Embedding embed_tokens_;
  std::vector<DecoderLayer> layers_;
  nn::RmsNorm norm_;
  nn::Linear lm_head_;
  nn::RotaryEmbedding rotary_;
  /// MTP layers' tensors (model.layers.{num_hidden_layers + j}.*), kept as loaded so a save
  /// writes them back; the MTP issue gives them modules.
  std::map<std::string, at::Tensor> mtp_weights_;
};

} // namespace kiln::models::glm4_moe
