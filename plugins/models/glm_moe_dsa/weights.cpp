// glm_moe_dsa <-> HF checkpoint names. Experts are stacked in memory ([E, 2I, H] gate rows then up
// rows, [E, H, I]) and stored per expert in the hub layout. Kept as loaded and written back: the
// MTP layers (model.layers.{num_hidden_layers + j}.*) and indexer tensors found on "shared" layers
// (HF 5.17 builds no indexer there and ignores them).
#include "model.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/log.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include <set>

namespace kiln::models::glm_moe_dsa {
namespace {

std::string prefix_of(int64_t layer) {
  return fmt::format("model.layers.{}.", layer);
}

// "model.layers.<i>.<rest>" -> i, or -1.
int64_t layer_of(std::string_view name) {
  constexpr std::string_view kLayers = "model.layers.";
  if (!name.starts_with(kLayers)) return -1;
  name.remove_prefix(kLayers.size());
  const size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos) return -1;
  int64_t value = 0;
  for (const char ch : name.substr(0, dot)) {
    if (ch < '0' || ch > '9') return -1;
    value = value * 10 + (ch - '0');
  }
  return value;
}

std::string list_some(const std::vector<std::string>& names) {
  constexpr size_t kShown = 5;
  std::string out;
  for (size_t i = 0; i < names.size() && i < kShown; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > kShown) out += fmt::format(" and {} more", names.size() - kShown);
  return out;
}

} // namespace

std::vector<std::pair<std::string, at::Tensor>> Model::named_parameters() {
  nn::NamedTensors out;
  out.emplace_back("model.embed_tokens.weight", embed_tokens_.weight);
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const DecoderLayer& layer = layers_[i];
    const std::string p = prefix_of(i);
    out.emplace_back(p + "input_layernorm.weight", layer.input_layernorm.weight);
    layer.self_attn.collect(out, p + "self_attn.");
    out.emplace_back(p + "post_attention_layernorm.weight", layer.post_attention_layernorm.weight);
    if (layer.mlp) {
      layer.mlp->collect(out, p + "mlp.");
      continue;
    }
    layer.moe->gate.collect(out, p + "mlp.gate.");
    out.emplace_back(p + "mlp.experts.gate_up_proj", layer.moe->experts.w_up);
    out.emplace_back(p + "mlp.experts.down_proj", layer.moe->experts.w_down);
    if (layer.moe->has_shared) layer.moe->shared_experts.collect(out, p + "mlp.shared_experts.");
  }
  out.emplace_back("model.norm.weight", norm_.weight);
  lm_head_.collect(out, "lm_head.");
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> Model::state_dict() {
  return hub_layout([](const at::Tensor& p) { return p.detach(); }, /*with_extras=*/true);
}

std::vector<std::pair<std::string, at::Tensor>> Model::gradients() {
  return hub_layout([](const at::Tensor& p) { return p.grad(); }, /*with_extras=*/false);
}

nn::NamedTensors Model::hub_layout(const std::function<at::Tensor(const at::Tensor&)>& pick,
                                   bool with_extras) {
  nn::NamedTensors out;
  for (auto& [name, parameter] : named_parameters()) {
    if (name.ends_with("mlp.experts.down_proj")) continue; // written with gate_up_proj below
    const at::Tensor tensor = pick(parameter);
    const int64_t layer = layer_of(name);
    if (!name.ends_with("mlp.experts.gate_up_proj")) {
      if (tensor.defined()) out.emplace_back(name, tensor);
      if (with_extras && name.ends_with("mlp.gate.weight")) {
        layers_[layer].moe->gate.buffers(out, prefix_of(layer) + "mlp.gate.");
      }
      continue;
    }
    const nn::Experts& experts = layers_[layer].moe->experts;
    const at::Tensor down = pick(experts.w_down); // [E, H, I]
    const int64_t inter = experts.intermediate();
    const std::string p = prefix_of(layer) + "mlp.experts.";
    for (int64_t e = 0; e < experts.num_experts(); ++e) {
      if (tensor.defined()) { // [E, 2I, H]: gate rows, then up rows
        out.emplace_back(fmt::format("{}{}.gate_proj.weight", p, e),
                         tensor.select(0, e).narrow(0, 0, inter));
        out.emplace_back(fmt::format("{}{}.up_proj.weight", p, e),
                         tensor.select(0, e).narrow(0, inter, inter));
      }
      if (down.defined()) out.emplace_back(fmt::format("{}{}.down_proj.weight", p, e), down[e]);
    }
  }
  if (with_extras) {
    for (const auto& [name, tensor] : mtp_weights_) out.emplace_back(name, tensor);
  }
  return out;
}

void Model::load_weights(const sdk::WeightSource& source) {
  const auto targets = state_dict(); // views into the parameters, in hub names
  std::set<std::string> expected;
  for (const auto& [name, tensor] : targets) expected.insert(name);

  const int64_t layers = config_.num_hidden_layers;
  std::vector<std::string> missing, unexpected, mismatched, kept_indexer;
  std::map<std::string, sdk::TensorInfo> available;
  mtp_weights_.clear();
  for (auto& info : source.list()) {
    const int64_t layer = layer_of(info.name);
    const bool mtp = layer >= layers && layer < layers + config_.num_nextn_predict_layers;
    const bool shared_indexer = layer >= 0 && layer < layers && !config_.has_indexer(layer) &&
                                info.name.starts_with(prefix_of(layer) + "self_attn.indexer.");
    if (mtp || shared_indexer) {
      mtp_weights_[info.name] = source.load(info.name).clone();
      if (shared_indexer) kept_indexer.push_back(info.name);
    } else if (!expected.count(info.name)) {
      unexpected.push_back(info.name);
    }
    available.emplace(info.name, std::move(info));
  }
  for (const auto& [name, target] : targets) {
    if (mtp_weights_.count(name)) continue;
    auto it = available.find(name);
    if (it == available.end()) {
      missing.push_back(name);
    } else if (it->second.shape != target.sizes().vec()) {
      mismatched.push_back(fmt::format("{} (checkpoint {}, model {})", name,
                                       shape_str(it->second.shape), shape_str(target.sizes())));
    }
  }
  const std::string where = source.describe();
  KILN_CHECK_USER(mismatched.empty(), "{}: {} tensor(s) have the wrong shape for this config: {}",
                  where, mismatched.size(), list_some(mismatched));
  KILN_CHECK_USER(missing.empty(), "{}: {} tensor(s) missing for glm_moe_dsa: {}", where,
                  missing.size(), list_some(missing));
  KILN_CHECK_USER(unexpected.empty(),
                  "{}: {} unexpected tensor(s) for glm_moe_dsa with {} layers (+{} MTP): {}", where,
                  unexpected.size(), layers, config_.num_nextn_predict_layers,
                  list_some(unexpected));
  if (!kept_indexer.empty()) {
    log_warn(
        "{}: {} indexer tensor(s) on \"shared\" layers, which run no indexer (HF ignores "
        "them too); kept as loaded: {}",
        where, kept_indexer.size(), list_some(kept_indexer));
  }

  const c10::NoGradGuard no_grad;
  for (const auto& [name, target] : targets) {
    if (mtp_weights_.count(name)) continue;
    at::Tensor view = target; // copy_ writes into the parameter (and casts, as HF does)
    view.copy_(source.load(name));
  }
}

} // namespace kiln::models::glm_moe_dsa
