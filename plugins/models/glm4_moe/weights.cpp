// glm4_moe <-> HF checkpoint names. Experts are stacked in memory ([E, 2I, H] gate-then-up,
// [E, H, I]) and stored per expert in the hub layout; MTP layers (model.layers.{L + j}) are kept
// as loaded.
#include "model.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include <set>

namespace kiln::models::glm4_moe {
namespace {

std::string layer_prefix(int64_t i) {
  return fmt::format("model.layers.{}.", i);
}

// The layer index of "model.layers.<i>.<rest>", or -1.
int64_t layer_index(std::string_view name) {
  constexpr std::string_view kPrefix = "model.layers.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return -1;
  name.remove_prefix(kPrefix.size());
  int64_t value = 0;
  size_t digits = 0;
  while (digits < name.size() && name[digits] >= '0' && name[digits] <= '9') {
    value = value * 10 + (name[digits] - '0');
    ++digits;
  }
  return digits > 0 && digits < name.size() && name[digits] == '.' ? value : -1;
}

std::string first_names(const std::vector<std::string>& names, size_t limit = 5) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < limit; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > limit) out += fmt::format(" and {} more", names.size() - limit);
  return out;
}

} // namespace

std::vector<std::pair<std::string, at::Tensor>> Model::named_parameters() {
  nn::NamedTensors out;
  out.emplace_back("model.embed_tokens.weight", embed_tokens_.weight);
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    const auto& layer = layers_[i];
    const std::string p = layer_prefix(i);
    out.emplace_back(p + "input_layernorm.weight", layer.input_layernorm.weight);
    layer.self_attn.collect(out, p + "self_attn.");
    out.emplace_back(p + "post_attention_layernorm.weight", layer.post_attention_layernorm.weight);
    if (layer.mlp) {
      layer.mlp->collect(out, p + "mlp.");
    } else {
      layer.moe->gate.collect(out, p + "mlp.gate.");
      out.emplace_back(p + "mlp.experts.gate_up_proj", layer.moe->experts.w_up);
      out.emplace_back(p + "mlp.experts.down_proj", layer.moe->experts.w_down);
      if (layer.moe->has_shared) layer.moe->shared_experts.collect(out, p + "mlp.shared_experts.");
    }
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
    const at::Tensor tensor = pick(parameter);
    if (!tensor.defined()) continue;
    const int64_t layer = layer_index(name);
    const bool stacked =
        name.ends_with("mlp.experts.gate_up_proj") || name.ends_with("mlp.experts.down_proj");
    if (!stacked) {
      out.emplace_back(name, tensor);
      if (with_extras && name.ends_with("mlp.gate.weight")) {
        layers_[layer].moe->gate.buffers(out, layer_prefix(layer) + "mlp.gate.");
      }
      continue;
    }
    if (name.ends_with("down_proj")) continue; // written together with gate_up_proj below
    const auto& experts = layers_[layer].moe->experts;
    const at::Tensor w_up = tensor; // [E, 2I, H]
    const at::Tensor w_down = pick(experts.w_down);
    const int64_t inter = experts.intermediate();
    const std::string p = layer_prefix(layer) + "mlp.experts.";
    for (int64_t e = 0; e < experts.num_experts(); ++e) {
      const at::Tensor up = w_up.select(0, e); // [2I, H]: gate rows, then up rows
      out.emplace_back(fmt::format("{}{}.gate_proj.weight", p, e), up.narrow(0, 0, inter));
      out.emplace_back(fmt::format("{}{}.up_proj.weight", p, e), up.narrow(0, inter, inter));
      if (w_down.defined()) {
        out.emplace_back(fmt::format("{}{}.down_proj.weight", p, e), w_down.select(0, e));
      }
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

  std::vector<std::string> missing, unexpected, mismatched;
  std::map<std::string, sdk::TensorInfo> available;
  for (auto& info : source.list()) {
    const int64_t layer = layer_index(info.name);
    const bool mtp = layer >= config_.num_hidden_layers &&
                     layer < config_.num_hidden_layers + config_.num_nextn_predict_layers;
    if (mtp) {
      mtp_weights_[info.name] = source.load(info.name).clone();
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
                  where, mismatched.size(), first_names(mismatched));
  KILN_CHECK_USER(missing.empty(), "{}: {} tensor(s) missing for glm4_moe: {}", where,
                  missing.size(), first_names(missing));
  KILN_CHECK_USER(unexpected.empty(),
                  "{}: {} unexpected tensor(s) for glm4_moe with {} layers (+{} MTP): {}", where,
                  unexpected.size(), config_.num_hidden_layers, config_.num_nextn_predict_layers,
                  first_names(unexpected));

  c10::NoGradGuard no_grad;
  for (const auto& [name, target] : targets) {
    if (mtp_weights_.count(name)) continue;
    at::Tensor t = target; // a view: copy_ writes into the parameter (and casts, as HF does)
    t.copy_(source.load(name));
  }
}

} // namespace kiln::models::glm4_moe
