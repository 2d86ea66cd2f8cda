// The glm_moe_dsa causal LM (HF GlmMoeDsaForCausalLM, GLM-5): embeddings, decoder layers with MLA
// + DSA + IndexShare, final norm, LM head; the training hooks of the SDK Model contract.
#pragma once

#include "config.h"
#include "layers.h"

#include "kiln/nn/linear.h"
#include "kiln/nn/rotary.h"
#include "kiln/sdk/model.h"

#include <functional>
#include <map>
#include <vector>

namespace kiln::models::glm_moe_dsa {

/// ForwardInput.extra / ForwardOutput.extra key of the running IndexShare top-k.
inline constexpr const char* kTopkKey = "topk_indices";
/// ForwardOutput.aux_losses key of the indexer loss.
inline constexpr const char* kIndexerKlKey = "indexer_kl";

class Model final : public sdk::Model {
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
