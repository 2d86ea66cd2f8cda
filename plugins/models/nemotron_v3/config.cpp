#include "config.h"

#include "kiln/sdk/error.h"

#include <fmt/format.h>

#include <type_traits>

namespace kiln::models::nemotron_v3 {
namespace {

// Typed reads of one config.json object; absent and null keys leave the default.
class Fields {
 public:
  Fields(const nlohmann::json& json, const std::string& where) : json_(json), where_(where) {}

  template <class T>
  bool read(const char* key, T& out) const {
    auto it = json_.find(key);
    if (it == json_.end() || it->is_null()) return false;
    bool ok = false;
    if constexpr (std::is_same_v<T, bool>) {
      ok = it->is_boolean();
    } else if constexpr (std::is_integral_v<T>) {
      ok = it->is_number_integer();
    } else if constexpr (std::is_floating_point_v<T>) {
      ok = it->is_number();
    } else {
      ok = it->is_string();
    }
    KILN_CHECK_USER(ok, "{}: '{}' is {} ({}); expected {}", where_, key, it->dump(),
                    it->type_name(), kind<T>());
    out = it->get<T>();
    return true;
  }

  /// A list of block types (`key` as a list of HF names) or a pattern string (`pattern_key`).
  bool read_blocks(const char* key, std::vector<BlockType>& out) const {
    auto it = json_.find(key);
    if (it == json_.end() || it->is_null()) return false;
    KILN_CHECK_USER(it->is_array(), "{}: '{}' must be a list of block types, found {}", where_, key,
                    it->dump());
    out.clear();
    for (const auto& v : *it) {
      KILN_CHECK_USER(v.is_string(), "{}: '{}' entries must be strings, found {}", where_, key,
                      v.dump());
      out.push_back(parse_name(v.get<std::string>(), key));
    }
    return true;
  }

  bool read_pattern(const char* key, std::vector<BlockType>& out) const {
    std::string pattern;
    if (!read(key, pattern)) return false;
    out.clear();
    for (const char ch : pattern) {
      switch (ch) {
        case 'M':
          out.push_back(BlockType::kMamba);
          break;
        case '*':
          out.push_back(BlockType::kAttention);
          break;
        case '-':
          out.push_back(BlockType::kMlp);
          break;
        case 'E':
          out.push_back(BlockType::kMoe);
          break;
        default:
          user_error(
              "{}: '{}' = \"{}\" has the unknown symbol '{}'; expected M (mamba), * "
              "(attention), - (mlp) or E (moe)",
              where_, key, pattern, ch);
      }
    }
    return true;
  }

 private:
  template <class T>
  static const char* kind() {
    if constexpr (std::is_same_v<T, bool>) return "a boolean";
    if constexpr (std::is_integral_v<T>) return "an integer";
    if constexpr (std::is_floating_point_v<T>) return "a number";
    return "a string";
  }

  BlockType parse_name(const std::string& name, const char* key) const {
    // HF's current names, and the legacy ones it remaps (remap_legacy_layer_types).
    if (name == "linear_attention" || name == "mamba") return BlockType::kMamba;
    if (name == "full_attention" || name == "attention") return BlockType::kAttention;
    if (name == "mlp") return BlockType::kMlp;
    if (name == "moe") return BlockType::kMoe;
    user_error(
        "{}: '{}' has the unknown block type '{}'; expected linear_attention (mamba), "
        "full_attention (attention), mlp or moe",
        where_, key, name);
  }

  const nlohmann::json& json_;
  const std::string& where_;
};

} // namespace

const char* block_type_name(BlockType type) {
  switch (type) {
    case BlockType::kMamba:
      return "linear_attention";
    case BlockType::kAttention:
      return "full_attention";
    case BlockType::kMlp:
      return "mlp";
    case BlockType::kMoe:
      return "moe";
  }
  return "?";
}

Config Config::from_json(const nlohmann::json& json, const std::string& where) {
  KILN_CHECK_USER(json.is_object(), "{}: a config must be a JSON object", where);
  const Fields f(json, where);
  Config c;
  c.json = json;
  f.read("vocab_size", c.vocab_size);
  f.read("hidden_size", c.hidden_size);
  // Layer pattern: the list wins; the legacy string is used only without it (HF 5.17); HF's
  // default pattern otherwise. num_hidden_layers is ignored, as HF does.
  if (!f.read_blocks("layers_block_type", c.layers) && !f.read_blocks("layer_types", c.layers) &&
      !f.read_pattern("hybrid_override_pattern", c.layers)) {
    c.layers = {BlockType::kMamba, BlockType::kMoe, BlockType::kAttention, BlockType::kMlp};
  }
  f.read("num_attention_heads", c.num_attention_heads);
  if (json.contains("num_key_value_heads") && json["num_key_value_heads"].is_null()) {
    c.num_key_value_heads = c.num_attention_heads; // HF's fallback for null
  } else {
    f.read("num_key_value_heads", c.num_key_value_heads);
  }
  f.read("head_dim", c.head_dim);
  f.read("intermediate_size", c.intermediate_size);
  f.read("mlp_bias", c.mlp_bias);
  f.read("mlp_hidden_act", c.mlp_hidden_act);
  f.read("ssm_state_size", c.ssm_state_size);
  f.read("mamba_num_heads", c.mamba_num_heads);
  f.read("mamba_head_dim", c.mamba_head_dim);
  f.read("mamba_hidden_act", c.mamba_hidden_act);
  // HF pops the legacy mamba_* spellings and lets them override the current names.
  f.read("n_groups", c.n_groups);
  f.read("mamba_n_groups", c.n_groups);
  f.read("conv_kernel", c.conv_kernel);
  f.read("mamba_d_conv", c.conv_kernel);
  f.read("chunk_size", c.chunk_size);
  f.read("mamba_chunk_size", c.chunk_size);
  f.read("use_conv_bias", c.use_conv_bias);
  f.read("mamba_conv_bias", c.use_conv_bias);
  f.read("time_step_min", c.time_step_min);
  f.read("mamba_dt_min", c.time_step_min);
  f.read("time_step_max", c.time_step_max);
  f.read("mamba_dt_max", c.time_step_max);
  f.read("time_step_floor", c.time_step_floor);
  f.read("mamba_dt_init_floor", c.time_step_floor);
  f.read("use_bias", c.use_bias);
  f.read("num_local_experts", c.n_routed_experts);
  f.read("n_routed_experts", c.n_routed_experts);
  f.read("num_experts_per_tok", c.num_experts_per_tok);
  f.read("moe_intermediate_size", c.moe_intermediate_size);
  f.read("moe_shared_expert_intermediate_size", c.moe_shared_expert_intermediate_size);
  f.read("moe_latent_size", c.moe_latent_size);
  f.read("routed_scaling_factor", c.routed_scaling_factor);
  f.read("n_group", c.n_group);
  f.read("topk_group", c.topk_group);
  f.read("norm_topk_prob", c.norm_topk_prob);
  f.read("num_nextn_predict_layers", c.num_nextn_predict_layers);
  // MTP pattern: the list, else HF's default ["full_attention", "moe"]; the legacy string replaces
  // the list when the list is the default (HF 5.17).
  const std::vector<BlockType> mtp_default = {BlockType::kAttention, BlockType::kMoe};
  if (!f.read_blocks("mtp_layers_block_type", c.mtp_layers)) c.mtp_layers = mtp_default;
  if (c.mtp_layers == mtp_default) f.read_pattern("mtp_hybrid_override_pattern", c.mtp_layers);
  f.read("layer_norm_epsilon", c.layer_norm_epsilon);
  f.read("initializer_range", c.initializer_range);
  f.read("rescale_prenorm_residual", c.rescale_prenorm_residual);
  f.read("tie_word_embeddings", c.tie_word_embeddings);

  auto positive = [&](const char* name, int64_t value) {
    KILN_CHECK_USER(value > 0, "{}: '{}' must be positive, found {}", where, name, value);
  };
  auto uses = [&](BlockType type) {
    for (const auto* list : {&c.layers, &c.mtp_layers}) {
      if (list == &c.mtp_layers && c.num_nextn_predict_layers == 0) continue;
      for (BlockType t : *list)
        if (t == type) return true;
    }
    return false;
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  KILN_CHECK_USER(!c.layers.empty(), "{}: layers_block_type is empty; expected at least one layer",
                  where);
  KILN_CHECK_USER(c.num_nextn_predict_layers >= 0,
                  "{}: 'num_nextn_predict_layers' must be >= 0, found {}", where,
                  c.num_nextn_predict_layers);
  KILN_CHECK_USER(c.num_nextn_predict_layers == 0 || !c.mtp_layers.empty(),
                  "{}: num_nextn_predict_layers = {} needs a non-empty mtp_layers_block_type",
                  where, c.num_nextn_predict_layers);
  if (uses(BlockType::kAttention)) {
    positive("num_attention_heads", c.num_attention_heads);
    positive("num_key_value_heads", c.num_key_value_heads);
    positive("head_dim", c.head_dim);
    KILN_CHECK_USER(c.num_attention_heads % c.num_key_value_heads == 0,
                    "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                    where, c.num_attention_heads, c.num_key_value_heads);
  }
  if (uses(BlockType::kMlp)) positive("intermediate_size", c.intermediate_size);
  if (uses(BlockType::kMlp) || uses(BlockType::kMoe)) {
    KILN_CHECK_USER(c.mlp_hidden_act == "relu2",
                    "{}: mlp_hidden_act '{}' is not supported; expected relu2", where,
                    c.mlp_hidden_act);
  }
  if (uses(BlockType::kMamba)) {
    positive("mamba_num_heads", c.mamba_num_heads);
    positive("mamba_head_dim", c.mamba_head_dim);
    positive("ssm_state_size", c.ssm_state_size);
    positive("n_groups", c.n_groups);
    positive("chunk_size", c.chunk_size);
    KILN_CHECK_USER(c.conv_kernel >= 2, "{}: 'conv_kernel' must be >= 2, found {}", where,
                    c.conv_kernel);
    KILN_CHECK_USER(c.mamba_num_heads % c.n_groups == 0,
                    "{}: mamba_num_heads ({}) must be a multiple of n_groups ({})", where,
                    c.mamba_num_heads, c.n_groups);
    KILN_CHECK_USER(c.mamba_hidden_act == "silu",
                    "{}: mamba_hidden_act '{}' is not supported; expected silu", where,
                    c.mamba_hidden_act);
  }
  if (uses(BlockType::kMoe)) {
    positive("n_routed_experts", c.n_routed_experts);
    positive("moe_intermediate_size", c.moe_intermediate_size);
    positive("moe_shared_expert_intermediate_size", c.moe_shared_expert_intermediate_size);
    positive("n_group", c.n_group);
    KILN_CHECK_USER(c.moe_latent_size >= 0,
                    "{}: 'moe_latent_size' must be positive or null, "
                    "found {}",
                    where, c.moe_latent_size);
    KILN_CHECK_USER(c.num_experts_per_tok >= 1 && c.num_experts_per_tok <= c.n_routed_experts,
                    "{}: num_experts_per_tok {} must be in [1, n_routed_experts = {}]", where,
                    c.num_experts_per_tok, c.n_routed_experts);
    KILN_CHECK_USER(
        c.n_routed_experts % c.n_group == 0 && c.topk_group >= 1 && c.topk_group <= c.n_group,
        "{}: n_routed_experts ({}) must be divisible by n_group ({}), and topk_group "
        "({}) in [1, n_group]",
        where, c.n_routed_experts, c.n_group, c.topk_group);
  }
  KILN_CHECK_USER(!c.tie_word_embeddings,
                  "{}: tie_word_embeddings = true is not supported for nemotron_v3 (every released "
                  "Nemotron-H checkpoint unties them)",
                  where);
  return c;
}

} // namespace kiln::models::nemotron_v3
