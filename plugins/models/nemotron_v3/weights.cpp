// nemotron_v3 <-> HF checkpoint names: backbone.embeddings, backbone.layers.{i}.{norm,mixer.*},
// backbone.norm_f, lm_head, and the MTP sublayers at mtp.layers.{j}.* (NeMo's flat layout of the
// released Super checkpoint; HF 5.17 ignores them). Routed experts are stacked in memory
// (up_proj [E, I, Lat], down_proj [E, Lat, I], HF's runtime layout) and per expert in files.
#include "model.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/log.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include <set>

namespace kiln::models::nemotron_v3 {
namespace {

constexpr std::string_view kUp = "mixer.experts.up_proj";
constexpr std::string_view kDown = "mixer.experts.down_proj";
constexpr std::string_view kGate = "mixer.gate.weight";

std::string first_names(const std::vector<std::string>& names, size_t limit = 5) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < limit; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > limit) out += fmt::format(" and {} more", names.size() - limit);
  return out;
}

std::string main_prefix(int64_t i) {
  return fmt::format("backbone.layers.{}.", i);
}

std::string mtp_prefix(int64_t j) {
  return fmt::format("mtp.layers.{}.", j);
}

} // namespace

std::vector<std::pair<std::string, at::Tensor>> Model::named_parameters() {
  nn::NamedTensors out;
  out.emplace_back("backbone.embeddings.weight", embeddings_.weight);
  for (size_t i = 0; i < layers_.size(); ++i) layers_[i].collect(out, main_prefix(i));
  out.emplace_back("backbone.norm_f.weight", norm_f_.weight);
  lm_head_.collect(out, "lm_head.");
  for (size_t j = 0; j < mtp_.size(); ++j) mtp_[j].collect(out, mtp_prefix(j));
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> Model::state_dict() {
  return hub_layout([](const at::Tensor& p) { return p.detach(); }, /*with_buffers=*/true);
}

std::vector<std::pair<std::string, at::Tensor>> Model::gradients() {
  return hub_layout([](const at::Tensor& p) { return p.grad(); }, /*with_buffers=*/false);
}

nn::NamedTensors Model::hub_layout(const std::function<at::Tensor(const at::Tensor&)>& pick,
                                   bool with_buffers) {
  // The routers' correction biases, by the name of their router weight.
  std::map<std::string, at::Tensor> biases;
  if (with_buffers) {
    auto add = [&](const Block& b, const std::string& prefix) {
      if (b.moe) biases[prefix + std::string(kGate)] = b.moe->gate.e_score_correction_bias;
    };
    for (size_t i = 0; i < layers_.size(); ++i) add(layers_[i], main_prefix(i));
    for (size_t j = 0; j < mtp_.size(); ++j) add(mtp_[j].block, mtp_prefix(j));
  }
  const auto params = named_parameters();
  std::map<std::string, at::Tensor> by_name(params.begin(), params.end());
  nn::NamedTensors out;
  for (const auto& [name, parameter] : params) {
    if (name.ends_with(kDown)) continue; // written per expert with up_proj below
    if (name.ends_with(kUp)) {
      const std::string stem = name.substr(0, name.size() - std::string_view("up_proj").size());
      const at::Tensor up = pick(parameter);                        // [E, I, Lat]
      const at::Tensor down = pick(by_name.at(stem + "down_proj")); // [E, Lat, I]
      for (int64_t e = 0; e < parameter.size(0); ++e) {
        if (up.defined()) out.emplace_back(fmt::format("{}{}.up_proj.weight", stem, e), up[e]);
        if (down.defined()) {
          out.emplace_back(fmt::format("{}{}.down_proj.weight", stem, e), down[e]);
        }
      }
      continue;
    }
    const at::Tensor tensor = pick(parameter);
    if (tensor.defined()) out.emplace_back(name, tensor);
    if (auto it = biases.find(name); it != biases.end()) {
      out.emplace_back(name.substr(0, name.size() - std::string_view("weight").size()) +
                           "e_score_correction_bias",
                       it->second);
    }
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
    if (!expected.count(info.name)) unexpected.push_back(info.name);
    available.emplace(info.name, std::move(info));
  }
  int64_t mtp_expected = 0, mtp_missing = 0;
  for (const auto& [name, target] : targets) {
    const bool mtp = name.starts_with("mtp.");
    mtp_expected += mtp;
    auto it = available.find(name);
    if (it == available.end()) {
      if (mtp) {
        ++mtp_missing; // judged below: all or nothing
      } else {
        missing.push_back(name);
      }
    } else if (it->second.shape != target.sizes().vec()) {
      mismatched.push_back(fmt::format("{} (checkpoint {}, model {})", name,
                                       shape_str(it->second.shape), shape_str(target.sizes())));
    }
  }
  const std::string where = source.describe();
  // A checkpoint written by HF's save_pretrained has no mtp.* tensors (HF has no MTP modules):
  // all of them absent is allowed (the MTP layers keep their initialisation); some is an error.
  if (mtp_missing > 0 && mtp_missing < mtp_expected) {
    for (const auto& [name, target] : targets) {
      if (name.starts_with("mtp.") && !available.count(name)) missing.push_back(name);
    }
  }
  KILN_CHECK_USER(mismatched.empty(), "{}: {} tensor(s) have the wrong shape for this config: {}",
                  where, mismatched.size(), first_names(mismatched));
  KILN_CHECK_USER(missing.empty(), "{}: {} tensor(s) missing for nemotron_v3: {}", where,
                  missing.size(), first_names(missing));
  KILN_CHECK_USER(unexpected.empty(),
                  "{}: {} unexpected tensor(s) for nemotron_v3 with {} layers (+{} MTP sublayers): "
                  "{}",
                  where, unexpected.size(), config_.num_hidden_layers(),
                  config_.num_mtp_sublayers(), first_names(unexpected));
  if (mtp_expected > 0 && mtp_missing == mtp_expected) {
    log_warn(
        "{}: no mtp.* tensors (num_nextn_predict_layers = {}); the MTP layers keep their "
        "random initialisation",
        where, config_.num_nextn_predict_layers);
  }

  c10::NoGradGuard no_grad;
  for (const auto& [name, target] : targets) {
    if (!available.count(name)) continue; // absent MTP tensors (allowed above)
    at::Tensor t = target; // a view: copy_ writes into the parameter and casts, as HF does
    t.copy_(source.load(name));
  }
}

} // namespace kiln::models::nemotron_v3
