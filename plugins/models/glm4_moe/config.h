// glm4_moe configuration: HF's Glm4MoeConfig fields with HF's defaults.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace kiln::models::glm4_moe {

struct Config {
  int64_t vocab_size = 151552;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 10944;    ///< dense MLP width (layers < first_k_dense_replace)
  int64_t moe_intermediate_size = 1408; ///< per-expert width
  int64_t num_hidden_layers = 46;
  int64_t num_attention_heads = 96;
  int64_t num_key_value_heads = 8;
  int64_t head_dim = 0; ///< hidden_size / num_attention_heads when absent
  double partial_rotary_factor = 0.5;
  double rope_theta = 10000.0;
  std::string rope_type = "default";
  bool attention_bias = false;
  bool use_qk_norm = false;
  double rms_norm_eps = 1e-5;
  int64_t n_routed_experts = 128;
  int64_t num_experts_per_tok = 8;
  int64_t n_shared_experts = 1;
  double routed_scaling_factor = 1.0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool norm_topk_prob = true;
  int64_t first_k_dense_replace = 1;
  int64_t num_nextn_predict_layers = 1; ///< MTP layers stored after the decoder layers (HF: 1)
  std::string hidden_act = "silu";
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
  int64_t max_position_embeddings = 131072;

  /// The config.json as given (unknown keys kept), for saving.
  nlohmann::json json;

  int64_t rotary_dim() const { return static_cast<int64_t>(head_dim * partial_rotary_factor); }
  bool is_moe_layer(int64_t layer) const { return layer >= first_k_dense_replace; }

  /// Parses an HF config.json (HF 5.x `rope_parameters` or the older top-level rope keys) and
  /// validates it. Throws kiln::Error naming `where` and the field.
  static Config from_json(const nlohmann::json& json, const std::string& where);
};

} // namespace kiln::models::glm4_moe
