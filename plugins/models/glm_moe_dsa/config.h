// glm_moe_dsa configuration: HF's GlmMoeDsaConfig (transformers 5.17) fields with HF's defaults
// (the GLM-5 values) and HF's derived per-layer lists.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::models::glm_moe_dsa {

struct Config {
  int64_t vocab_size = 154880;
  int64_t hidden_size = 6144;
  int64_t intermediate_size = 12288;    ///< dense MLP width
  int64_t moe_intermediate_size = 2048; ///< per-expert width
  int64_t num_hidden_layers = 78;
  int64_t num_attention_heads = 64;
  int64_t num_key_value_heads = 64; ///< MLA: must equal num_attention_heads
  int64_t q_lora_rank = 2048;
  int64_t kv_lora_rank = 512;
  int64_t qk_nope_head_dim = 192;
  int64_t qk_rope_head_dim = 64;
  int64_t v_head_dim = 256;
  int64_t n_routed_experts = 256;
  int64_t num_experts_per_tok = 8;
  int64_t n_shared_experts = 1;
  double routed_scaling_factor = 2.5;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool norm_topk_prob = true;
  int64_t first_k_dense_replace = 3; ///< only derives mlp_layer_types when that is absent
  int64_t index_topk = 2048;
  int64_t index_head_dim = 128;
  int64_t index_n_heads = 32;
  bool attention_bias = false; ///< bias on q_a_proj, kv_a_proj_with_mqa and o_proj
  double attention_dropout = 0.0;
  double rms_norm_eps = 1e-5; ///< decoder and final norms; the MLA norms use 1e-6 (HF)
  double rope_theta = 10000.0;
  std::string rope_type = "default";
  std::string hidden_act = "silu";
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
  int64_t max_position_embeddings = 202752;
  /// MTP layers stored after the decoder layers (model.layers.{num_hidden_layers + j}); HF 5.17
  /// does not read the key and never runs them, GLM-5 files say 1.
  int64_t num_nextn_predict_layers = 0;
  std::vector<std::string> mlp_layer_types; ///< per layer "dense" | "sparse" (MoE)
  std::vector<std::string> indexer_types;   ///< per layer "full" | "shared" (IndexShare)

  /// The config.json as given (unknown keys kept), for saving.
  nlohmann::json json;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const { return mlp_layer_types[layer] == "sparse"; }
  bool has_indexer(int64_t layer) const { return indexer_types[layer] == "full"; }

  /// Parses an HF config.json: rope from `rope_parameters` (HF 5.x) or the older top-level keys;
  /// `indexer_types` explicit, else from `index_topk_pattern`, else from `index_topk_freq` and
  /// `index_skip_topk_offset` as HF derives them; `mlp_layer_types` explicit, else
  /// first_k_dense_replace dense layers. Throws kiln::Error naming `where` and the field.
  static Config from_json(const nlohmann::json& json, const std::string& where);
};

} // namespace kiln::models::glm_moe_dsa
