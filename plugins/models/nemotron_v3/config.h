// nemotron_v3 configuration: HF's NemotronHConfig fields (transformers 5.17) with HF's defaults,
// including its legacy spellings (hybrid_override_pattern strings, mamba_* aliases).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::models::nemotron_v3 {

/// What one layer (a block: norm -> mixer -> residual) mixes with. HF's layers_block_type names.
enum class BlockType {
  kMamba = 0,     ///< "linear_attention" (pattern 'M'): Mamba2 mixer
  kAttention = 1, ///< "full_attention" (pattern '*'): GQA without rope
  kMlp = 2,       ///< "mlp" (pattern '-'): relu2 MLP
  kMoe = 3,       ///< "moe" (pattern 'E'): sigmoid-routed relu2 experts + shared expert
};

/// HF's name of a block type ("linear_attention", ...).
const char* block_type_name(BlockType type);

struct Config {
  int64_t vocab_size = 131072;
  int64_t hidden_size = 4096;
  std::vector<BlockType> layers; ///< layers_block_type; its length is the layer count
  // attention
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 8;
  int64_t head_dim = 128;
  // dense MLP
  int64_t intermediate_size = 21504;
  bool mlp_bias = false;
  std::string mlp_hidden_act = "relu2";
  // Mamba2
  int64_t ssm_state_size = 128;
  int64_t mamba_num_heads = 128;
  int64_t mamba_head_dim = 64;
  int64_t n_groups = 8;
  int64_t conv_kernel = 4;
  int64_t chunk_size = 128;
  bool use_conv_bias = true;
  bool use_bias = false; ///< in_proj / out_proj biases
  std::string mamba_hidden_act = "silu";
  double time_step_min = 0.001; ///< HF's prefill clamp of dt' (its time_step_limit is unused)
  double time_step_max = 0.1;
  double time_step_floor = 1e-4;
  // MoE
  int64_t n_routed_experts = 8;
  int64_t num_experts_per_tok = 2;
  int64_t moe_intermediate_size = 7688;
  int64_t moe_shared_expert_intermediate_size = 7688;
  int64_t moe_latent_size = 0; ///< 0 = none (HF null)
  double routed_scaling_factor = 1.0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool norm_topk_prob = true;
  // MTP
  int64_t num_nextn_predict_layers = 0; ///< MTP depths D
  std::vector<BlockType> mtp_layers;    ///< mtp_layers_block_type: the sublayers of one depth
  // general
  double layer_norm_epsilon = 1e-5;
  double initializer_range = 0.02;
  bool rescale_prenorm_residual = true;
  bool tie_word_embeddings = false;

  /// The config.json as given (unknown keys kept), for saving.
  nlohmann::json json;

  int64_t num_hidden_layers() const { return static_cast<int64_t>(layers.size()); }
  int64_t num_mtp_sublayers() const {
    return num_nextn_predict_layers * static_cast<int64_t>(mtp_layers.size());
  }

  /// Parses an HF config.json and validates it. Throws kiln::Error naming `where` and the field.
  static Config from_json(const nlohmann::json& json, const std::string& where);
};

} // namespace kiln::models::nemotron_v3
