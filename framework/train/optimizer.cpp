#include "train/optimizer.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"
#include "kiln/sdk/ops/adamw.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace kiln::train {

AdamW::AdamW(nn::NamedTensors params, AdamWOptions options) : options_(options) {
  c10::NoGradGuard no_grad;
  for (auto& [name, param] : params) {
    Slot slot;
    slot.name = name;
    slot.param = param;
    slot.master = param.scalar_type() == at::kFloat ? param : param.detach().to(at::kFloat);
    slot.exp_avg = at::zeros_like(slot.master);
    slot.exp_avg_sq = at::zeros_like(slot.master);
    slot.decay = param.dim() >= 2;
    slots_.push_back(std::move(slot));
  }
}

double AdamW::grad_norm() const {
  c10::NoGradGuard no_grad;
  // Per-tensor fp32 norms in one kernel per device, one host sync for the total.
  std::map<std::string, std::vector<at::Tensor>> grads; // by device
  for (const Slot& slot : slots_) {
    const at::Tensor& grad = slot.param.grad();
    if (grad.defined()) grads[grad.device().str()].push_back(grad);
  }
  at::Tensor total = at::zeros({}, at::kDouble);
  for (const auto& [device, list] : grads) {
    const auto norms = at::_foreach_norm(list, 2, at::kFloat);
    total = total + at::stack(norms).to(at::kDouble).pow(2).sum().to(at::kCPU);
  }
  return std::sqrt(total.item<double>());
}

void AdamW::step(double lr, double grad_scale) {
  c10::NoGradGuard no_grad;
  ++steps_;
  // One kiln::ops::adamw call per parameter: the backends' kernels (the torch reference is ATen's
  // fused AdamW; a backend may update a bf16 parameter and its master in one pass).
  for (const Slot& slot : slots_) {
    const at::Tensor& grad = slot.param.grad();
    if (!grad.defined()) continue;
    ops::adamw({.param = slot.param,
                .grad = grad,
                .master = slot.master.is_same(slot.param) ? at::Tensor() : slot.master,
                .exp_avg = slot.exp_avg,
                .exp_avg_sq = slot.exp_avg_sq,
                .lr = lr,
                .beta1 = options_.beta1,
                .beta2 = options_.beta2,
                .eps = options_.eps,
                .weight_decay = slot.decay ? options_.weight_decay : 0.0,
                .step = steps_,
                .grad_scale = grad_scale,
                .piece_elements = std::max<int64_t>(options_.piece_elements, 1)});
  }
}

void AdamW::zero_grad() {
  for (Slot& slot : slots_) slot.param.mutable_grad() = at::Tensor();
}

nn::NamedTensors AdamW::state() const {
  nn::NamedTensors out;
  for (const Slot& slot : slots_) {
    out.emplace_back("exp_avg/" + slot.name, slot.exp_avg.to(at::kCPU));
    out.emplace_back("exp_avg_sq/" + slot.name, slot.exp_avg_sq.to(at::kCPU));
    if (!slot.master.is_same(slot.param)) {
      out.emplace_back("master/" + slot.name, slot.master.to(at::kCPU));
    }
  }
  return out;
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& tensors, int64_t steps,
                       const std::string& from) {
  c10::NoGradGuard no_grad;
  auto restore = [&](at::Tensor& into, const std::string& key) {
    const auto it = tensors.find(key);
    KILN_CHECK_USER(it != tensors.end(),
                    "{}: optimizer state '{}' is missing; the checkpoint does not belong to this "
                    "model (or was written by another optimizer)",
                    from, key);
    KILN_CHECK_USER(it->second.sizes() == into.sizes(),
                    "{}: optimizer state '{}' has shape {}, the model needs {}", from, key,
                    shape_str(it->second.sizes()), shape_str(into.sizes()));
    into.copy_(it->second);
  };
  for (Slot& slot : slots_) {
    restore(slot.exp_avg, "exp_avg/" + slot.name);
    restore(slot.exp_avg_sq, "exp_avg_sq/" + slot.name);
    if (!slot.master.is_same(slot.param)) {
      restore(slot.master, "master/" + slot.name);
      slot.param.copy_(slot.master);
    }
  }
  steps_ = steps;
}

} // namespace kiln::train
