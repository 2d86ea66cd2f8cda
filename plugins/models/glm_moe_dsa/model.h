// The glm_moe_dsa causal LM (HF GlmMoeDsaForCausalLM, GLM-5): embeddings, decoder layers with MLA
// + DSA + IndexShare, final norm, LM head; the training hooks of the SDK Model contract; cached
// decoding (cache.h).
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

namespace kiln::models::glm_moe_dsa {

/// ForwardInput.extra / ForwardOutput.extra key of the running IndexShare top-k (in
/// forward_cached its entries are flat cache rows, b * max_len + position).
inline constexpr const char* kTopkKey = "topk_indices";
/// ForwardOutput.aux_losses key of the indexer loss.
inline constexpr const char* kIndexerKlKey = "indexer_kl";

class Model final : public sdk::Model, public sdk::CachedDecoding {
 public:
  Model(Config config, const sdk::ModelOptions& options);

  std::string family() const override { return "glm_moe_dsa"; }
  sdk::ForwardOutput forward(const sdk::ForwardInput& input) override;
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() override;
  void load_weights(const sdk::WeightSource& source) override;
  std::vector<std::pair<std::string, at::Tensor>> state_dict() override;
  std::vector<std::pair<std::string, at::Tensor>> gradients() override;
  nlohmann::json config_json() const override;
  at::Tensor lm_head_weight() override { return lm_head_.weight; }

  /// Throws kiln::Error when batch_size * max_len exceeds int32 (cache.h).
  std::unique_ptr<sdk::InferenceCache> make_cache(int64_t batch_size, int64_t max_len) override;
  /// Every layer stores its new tokens in the cache, then selects (indexer_topk over the cached
  /// index keys, or the shared selection) and attends (sparse_mla over the cached latents): the
  /// attention reads at most index_topk cached tokens per query. Outputs as forward (no indexer
  /// loss), extra["topk_indices"] in flat cache rows.
  sdk::ForwardOutput forward_cached(const sdk::ForwardInput& input,
                                    sdk::InferenceCache& cache) override;

  /// HF's _init_weights: normal(0, initializer_range) weights, zero biases, unit norms.
  void init_random(uint64_t seed);

  const Config& config() const { return config_; }
  const std::vector<DecoderLayer>& layers() const { return layers_; }

 private:
  /// The hub layout of `pick(parameter)` for every parameter (state_dict: the detached tensor;
  /// gradients: its grad); buffers and MTP tensors only when `with_extras`.
  nn::NamedTensors hub_layout(const std::function<at::Tensor(const at::Tensor&)>& pick,
                              bool with_extras);
  /// One decoder layer, through nn::checkpoint when activation checkpointing is on.
  LayerResult run_layer(size_t index, const at::Tensor& h, const TokenLayout& layout,
                        const std::pair<at::Tensor, at::Tensor>& rope, const at::Tensor& topk);
  /// ForwardInput.extra["topk_indices"] checked and on the device (undefined when absent).
  at::Tensor seed_topk(const sdk::ForwardInput& input, int64_t tokens) const;
  /// Final norm, the input's token layout (`batch_shape` [B, S], or empty for [T]) and the LM
  /// head (logits_to_keep, compute_logits) on the last layer's output [N, hidden].
  void finish(at::Tensor h, const sdk::ForwardInput& input, at::IntArrayRef batch_shape,
              sdk::ForwardOutput& out) const;

  Config config_;
  sdk::ModelOptions options_;
  at::TensorOptions tensor_options_;
  bool indexer_kl_ = false;
  nn::Embedding embed_tokens_;
  std::vector<DecoderLayer> layers_;
  nn::RmsNorm norm_;
  nn::Linear lm_head_;
  nn::RotaryEmbedding rotary_;
  /// MTP layers' tensors (model.layers.{num_hidden_layers + j}.*), kept as loaded so a save
  /// writes them back; HF 5.17 never runs them and this family does not train them.
  std::map<std::string, at::Tensor> mtp_weights_;
};

} // namespace kiln::models::glm_moe_dsa
