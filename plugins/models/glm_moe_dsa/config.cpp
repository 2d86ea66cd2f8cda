#include "config.h"

#include "kiln/sdk/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace kiln::models::glm_moe_dsa {
namespace {

// Reads optional config keys of one JSON object, checking their JSON types.
struct Reader {
  const nlohmann::json& json;
  std::string where;

  const nlohmann::json* find(const char* key) const {
    auto it = json.find(key);
    return it == json.end() || it->is_null() ? nullptr : &*it;
  }

  template <class T>
  void operator()(const char* key, T& out) const {
    const nlohmann::json* v = find(key);
    if (v == nullptr) return;
    bool ok = false;
    const char* expected = "a string";
    if constexpr (std::is_same_v<T, bool>) {
      ok = v->is_boolean();
      expected = "a boolean";
    } else if constexpr (std::is_integral_v<T>) {
      ok = v->is_number_integer();
      expected = "an integer";
    } else if constexpr (std::is_floating_point_v<T>) {
      ok = v->is_number();
      expected = "a number";
    } else {
      ok = v->is_string();
    }
    KILN_CHECK_USER(ok, "{}: '{}' has the wrong type ({}): expected {}", where, key, v->type_name(),
                    expected);
    out = v->get<T>();
  }

  // A list of strings, each one of `allowed`.
  void list(const char* key, std::vector<std::string>& out,
            std::initializer_list<const char*> allowed) const {
    const nlohmann::json* v = find(key);
    if (v == nullptr) return;
    KILN_CHECK_USER(v->is_array(), "{}: '{}' must be a list of strings, found {}", where, key,
                    v->type_name());
    out.clear();
    for (const auto& item : *v) {
      const bool known = item.is_string() && std::find(allowed.begin(), allowed.end(),
                                                       item.get<std::string>()) != allowed.end();
      KILN_CHECK_USER(known, "{}: '{}' entry {} is {}: expected one of {}", where, key, out.size(),
                      item.dump(), fmt::join(allowed, ", "));
      out.push_back(item.get<std::string>());
    }
  }
};

// HF's derivation of indexer_types when the file has none (GlmMoeDsaConfig.__post_init__).
std::vector<std::string> derive_indexer_types(const Reader& read, int64_t layers) {
  std::vector<std::string> types;
  if (const nlohmann::json* pattern = read.find("index_topk_pattern")) {
    if (pattern->is_string()) {
      for (const char ch : pattern->get<std::string>()) {
        KILN_CHECK_USER(ch == 'F' || ch == 'S',
                        "{}: 'index_topk_pattern' has '{}': expected only F (full) and S (shared)",
                        read.where, ch);
        types.emplace_back(ch == 'F' ? "full" : "shared");
      }
    } else {
      read.list("index_topk_pattern", types, {"full", "shared"});
    }
    return types;
  }
  int64_t freq = 1, offset = 2;
  read("index_topk_freq", freq);
  read("index_skip_topk_offset", offset);
  freq = std::max<int64_t>(freq, 1);
  for (int64_t i = 0; i < layers; ++i) {
    types.emplace_back(std::max<int64_t>(i - offset + 1, 0) % freq == 0 ? "full" : "shared");
  }
  return types;
}

} // namespace

Config Config::from_json(const nlohmann::json& json, const std::string& where) {
  KILN_CHECK_USER(json.is_object(), "{}: a config must be a JSON object", where);
  const Reader read{json, where};
  Config c;
  c.json = json;
  read("vocab_size", c.vocab_size);
  read("hidden_size", c.hidden_size);
  read("intermediate_size", c.intermediate_size);
  read("moe_intermediate_size", c.moe_intermediate_size);
  read("num_hidden_layers", c.num_hidden_layers);
  read("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = c.num_attention_heads;
  read("num_key_value_heads", c.num_key_value_heads);
  read("q_lora_rank", c.q_lora_rank);
  read("kv_lora_rank", c.kv_lora_rank);
  read("qk_nope_head_dim", c.qk_nope_head_dim);
  read("qk_rope_head_dim", c.qk_rope_head_dim);
  read("v_head_dim", c.v_head_dim);
  read("num_experts", c.n_routed_experts);       // HF's backward-compatible kwarg
  read("num_local_experts", c.n_routed_experts); // HF's attribute_map alias
  read("n_routed_experts", c.n_routed_experts);
  read("num_experts_per_tok", c.num_experts_per_tok);
  read("n_shared_experts", c.n_shared_experts);
  read("routed_scaling_factor", c.routed_scaling_factor);
  read("n_group", c.n_group);
  read("topk_group", c.topk_group);
  read("norm_topk_prob", c.norm_topk_prob);
  read("first_k_dense_replace", c.first_k_dense_replace);
  read("index_topk", c.index_topk);
  read("index_head_dim", c.index_head_dim);
  read("index_n_heads", c.index_n_heads);
  read("attention_bias", c.attention_bias);
  read("attention_dropout", c.attention_dropout);
  read("rms_norm_eps", c.rms_norm_eps);
  read("hidden_act", c.hidden_act);
  read("initializer_range", c.initializer_range);
  read("tie_word_embeddings", c.tie_word_embeddings);
  read("max_position_embeddings", c.max_position_embeddings);
  read("num_nextn_predict_layers", c.num_nextn_predict_layers);
  // Rope: HF 5.x nests it in rope_parameters (which wins); older files have top-level keys.
  read("rope_theta", c.rope_theta);
  if (const nlohmann::json* rope = read.find("rope_scaling"); rope && rope->is_object()) {
    const Reader scaling{*rope, where + " rope_scaling"};
    scaling("type", c.rope_type);
    scaling("rope_type", c.rope_type);
  }
  if (const nlohmann::json* rope = read.find("rope_parameters"); rope && rope->is_object()) {
    const Reader params{*rope, where + " rope_parameters"};
    params("rope_theta", c.rope_theta);
    params("rope_type", c.rope_type);
  }

  auto positive = [&](const char* name, int64_t value) {
    KILN_CHECK_USER(value > 0, "{}: '{}' must be positive, found {}", where, name, value);
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("kv_lora_rank", c.kv_lora_rank);
  positive("qk_nope_head_dim", c.qk_nope_head_dim);
  positive("v_head_dim", c.v_head_dim);
  positive("index_topk", c.index_topk);
  positive("index_n_heads", c.index_n_heads);
  KILN_CHECK_USER(c.num_nextn_predict_layers >= 0,
                  "{}: 'num_nextn_predict_layers' must be >= 0, found {}", where,
                  c.num_nextn_predict_layers);
  if (json.contains("q_lora_rank") && json["q_lora_rank"].is_null()) {
    user_error(
        "{}: q_lora_rank = null (no query compression) is not supported: the DSA indexer "
        "reads the compressed query; GLM-5 sets 2048",
        where);
  }
  positive("q_lora_rank", c.q_lora_rank);
  KILN_CHECK_USER(c.qk_rope_head_dim >= 2 && c.qk_rope_head_dim % 2 == 0,
                  "{}: qk_rope_head_dim must be even and >= 2, found {}", where,
                  c.qk_rope_head_dim);
  KILN_CHECK_USER(c.index_head_dim >= c.qk_rope_head_dim,
                  "{}: index_head_dim ({}) must be >= qk_rope_head_dim ({}): the indexer rotates "
                  "its first qk_rope_head_dim channels",
                  where, c.index_head_dim, c.qk_rope_head_dim);
  KILN_CHECK_USER(c.num_key_value_heads == c.num_attention_heads,
                  "{}: num_key_value_heads ({}) must equal num_attention_heads ({}): MLA expands "
                  "one latent to every head",
                  where, c.num_key_value_heads, c.num_attention_heads);
  KILN_CHECK_USER(c.rope_type == "default",
                  "{}: rope_type '{}' is not supported by glm_moe_dsa yet; supported: default",
                  where, c.rope_type);
  KILN_CHECK_USER(c.hidden_act == "silu", "{}: hidden_act '{}' is not supported; expected silu",
                  where, c.hidden_act);
  KILN_CHECK_USER(c.attention_dropout == 0.0,
                  "{}: attention_dropout {} is not supported (every GLM-5 release uses 0)", where,
                  c.attention_dropout);
  KILN_CHECK_USER(!c.tie_word_embeddings,
                  "{}: tie_word_embeddings = true is not supported for glm_moe_dsa (GLM-5 unties "
                  "them)",
                  where);

  // Per-layer lists: explicit, else derived as HF does.
  read.list("mlp_layer_types", c.mlp_layer_types, {"dense", "sparse"});
  if (c.mlp_layer_types.empty()) {
    const int64_t dense = std::min(c.first_k_dense_replace, c.num_hidden_layers);
    c.mlp_layer_types.assign(dense, "dense");
    c.mlp_layer_types.resize(c.num_hidden_layers, "sparse");
  }
  read.list("indexer_types", c.indexer_types, {"full", "shared"});
  if (c.indexer_types.empty()) c.indexer_types = derive_indexer_types(read, c.num_hidden_layers);
  for (const auto* list : {&c.mlp_layer_types, &c.indexer_types}) {
    KILN_CHECK_USER(static_cast<int64_t>(list->size()) == c.num_hidden_layers,
                    "{}: '{}' has {} entries for num_hidden_layers = {}", where,
                    list == &c.mlp_layer_types ? "mlp_layer_types" : "indexer_types", list->size(),
                    c.num_hidden_layers);
  }
  bool any_moe = false, any_dense = false;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    (c.is_moe_layer(i) ? any_moe : any_dense) = true;
  if (any_moe) {
    positive("n_routed_experts", c.n_routed_experts);
    positive("moe_intermediate_size", c.moe_intermediate_size);
    positive("n_group", c.n_group);
    positive("topk_group", c.topk_group);
    KILN_CHECK_USER(c.num_experts_per_tok >= 1 && c.num_experts_per_tok <= c.n_routed_experts,
                    "{}: num_experts_per_tok {} must be in [1, n_routed_experts = {}]", where,
                    c.num_experts_per_tok, c.n_routed_experts);
    KILN_CHECK_USER(c.n_routed_experts % c.n_group == 0 && c.topk_group <= c.n_group,
                    "{}: n_routed_experts ({}) must be divisible by n_group ({}) and topk_group "
                    "({}) <= n_group",
                    where, c.n_routed_experts, c.n_group, c.topk_group);
  }
  if (any_dense) positive("intermediate_size", c.intermediate_size);
  return c;
}

} // namespace kiln::models::glm_moe_dsa
