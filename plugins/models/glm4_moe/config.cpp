#include "config.h"

#include "kiln/sdk/error.h"

namespace kiln::models::glm4_moe {
namespace {

// Reads json[key] as T when present and not null, checking its JSON type.
template <class T>
void read(const nlohmann::json& json, const char* key, T& out, const std::string& where) {
  auto it = json.find(key);
  if (it == json.end() || it->is_null()) return;
  const bool ok = [&] {
    if constexpr (std::is_same_v<T, bool>)
      return it->is_boolean();
    else if constexpr (std::is_integral_v<T>)
      return it->is_number_integer();
    else if constexpr (std::is_floating_point_v<T>)
      return it->is_number();
    else
      return it->is_string();
  }();
  KILN_CHECK_USER(ok, "{}: '{}' has the wrong type ({}): expected {}", where, key, it->type_name(),
                  std::is_same_v<T, bool>       ? "a boolean"
                  : std::is_integral_v<T>       ? "an integer"
                  : std::is_floating_point_v<T> ? "a number"
                                                : "a string");
  out = it->get<T>();
}

} // namespace

Config Config::from_json(const nlohmann::json& json, const std::string& where) {
  KILN_CHECK_USER(json.is_object(), "{}: a config must be a JSON object", where);
  Config c;
  c.json = json;
  read(json, "vocab_size", c.vocab_size, where);
  read(json, "hidden_size", c.hidden_size, where);
  read(json, "intermediate_size", c.intermediate_size, where);
  read(json, "moe_intermediate_size", c.moe_intermediate_size, where);
  read(json, "num_hidden_layers", c.num_hidden_layers, where);
  read(json, "num_attention_heads", c.num_attention_heads, where);
  read(json, "num_key_value_heads", c.num_key_value_heads, where);
  read(json, "head_dim", c.head_dim, where);
  read(json, "attention_bias", c.attention_bias, where);
  read(json, "use_qk_norm", c.use_qk_norm, where);
  read(json, "rms_norm_eps", c.rms_norm_eps, where);
  read(json, "num_local_experts", c.n_routed_experts, where); // alias HF accepts
  read(json, "n_routed_experts", c.n_routed_experts, where);
  read(json, "num_experts_per_tok", c.num_experts_per_tok, where);
  read(json, "n_shared_experts", c.n_shared_experts, where);
  read(json, "routed_scaling_factor", c.routed_scaling_factor, where);
  read(json, "n_group", c.n_group, where);
  read(json, "topk_group", c.topk_group, where);
  read(json, "norm_topk_prob", c.norm_topk_prob, where);
  read(json, "first_k_dense_replace", c.first_k_dense_replace, where);
  read(json, "num_mtp_layers", c.num_nextn_predict_layers, where); // alias
  read(json, "num_nextn_predict_layers", c.num_nextn_predict_layers, where);
  read(json, "hidden_act", c.hidden_act, where);
  read(json, "initializer_range", c.initializer_range, where);
  read(json, "tie_word_embeddings", c.tie_word_embeddings, where);
  read(json, "max_position_embeddings", c.max_position_embeddings, where);
  // Rope: HF 5.x nests it in rope_parameters; older files have top-level keys.
  read(json, "rope_theta", c.rope_theta, where);
  read(json, "partial_rotary_factor", c.partial_rotary_factor, where);
  if (auto it = json.find("rope_parameters"); it != json.end() && it->is_object()) {
    read(*it, "rope_theta", c.rope_theta, where + " rope_parameters");
    read(*it, "partial_rotary_factor", c.partial_rotary_factor, where + " rope_parameters");
    read(*it, "rope_type", c.rope_type, where + " rope_parameters");
  }
  if (auto it = json.find("rope_scaling"); it != json.end() && it->is_object()) {
    read(*it, "rope_type", c.rope_type, where + " rope_scaling");
    read(*it, "type", c.rope_type, where + " rope_scaling");
  }
  if (c.head_dim == 0 && c.num_attention_heads > 0) {
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }

  auto positive = [&](const char* name, int64_t value) {
    KILN_CHECK_USER(value > 0, "{}: '{}' must be positive, found {}", where, name, value);
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("num_key_value_heads", c.num_key_value_heads);
  positive("head_dim", c.head_dim);
  positive("n_group", c.n_group);
  positive("topk_group", c.topk_group);
  KILN_CHECK_USER(c.num_attention_heads % c.num_key_value_heads == 0,
                  "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                  where, c.num_attention_heads, c.num_key_value_heads);
  KILN_CHECK_USER(c.rope_type == "default",
                  "{}: rope_type '{}' is not supported by glm4_moe yet; supported: default", where,
                  c.rope_type);
  KILN_CHECK_USER(c.hidden_act == "silu", "{}: hidden_act '{}' is not supported; expected silu",
                  where, c.hidden_act);
  KILN_CHECK_USER(c.rotary_dim() >= 2 && c.rotary_dim() % 2 == 0 && c.rotary_dim() <= c.head_dim,
                  "{}: head_dim {} x partial_rotary_factor {} gives rotary dim {}: expected an "
                  "even number in [2, head_dim]",
                  where, c.head_dim, c.partial_rotary_factor, c.rotary_dim());
  if (c.first_k_dense_replace < c.num_hidden_layers) {
    positive("n_routed_experts", c.n_routed_experts);
    positive("moe_intermediate_size", c.moe_intermediate_size);
    KILN_CHECK_USER(c.num_experts_per_tok >= 1 && c.num_experts_per_tok <= c.n_routed_experts,
                    "{}: num_experts_per_tok {} must be in [1, n_routed_experts = {}]", where,
                    c.num_experts_per_tok, c.n_routed_experts);
    KILN_CHECK_USER(c.n_routed_experts % c.n_group == 0 && c.topk_group <= c.n_group,
                    "{}: n_routed_experts ({}) must be divisible by n_group ({}) and topk_group "
                    "({}) <= n_group",
                    where, c.n_routed_experts, c.n_group, c.topk_group);
  }
  if (c.first_k_dense_replace > 0) positive("intermediate_size", c.intermediate_size);
  KILN_CHECK_USER(!c.tie_word_embeddings,
                  "{}: tie_word_embeddings = true is not supported for glm4_moe (every released "
                  "GLM-4.5 checkpoint unties them)",
                  where);
  return c;
}

} // namespace kiln::models::glm4_moe
