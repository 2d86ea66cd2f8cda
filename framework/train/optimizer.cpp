#include "train/optimizer.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>

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
  // fp32 parameters: one fused call per (decay, device) group on the gradients as they are.
  // Others: one call per piece of at most piece_elements of a tensor (flattened), so only one
  // piece's fp32 copy of a gradient exists at a time. Clipping goes through the kernel's
  // grad_scale (it divides by it): no scaled copy of the gradients.
  const auto scale_on = [&](const c10::Device& device) -> std::optional<at::Tensor> {
    if (grad_scale == 1.0) return std::nullopt;
    return at::full({}, 1.0 / grad_scale, at::TensorOptions().dtype(at::kFloat).device(device));
  };
  const auto step_on = [&](const c10::Device& device) {
    // The step the bias correction uses (1 for the first update), as torch's AdamW passes it.
    return at::full({}, static_cast<double>(steps_),
                    at::TensorOptions().dtype(at::kFloat).device(device));
  };
  for (const bool decay : {true, false}) {
    const double weight_decay = decay ? options_.weight_decay : 0.0;
    std::map<std::string, std::vector<const Slot*>> groups; // fp32 parameters, by device
    for (const Slot& slot : slots_) {
      if (slot.decay != decay || !slot.param.grad().defined()) continue;
      if (slot.master.is_same(slot.param)) {
        groups[slot.master.device().str()].push_back(&slot);
        continue;
      }
      const c10::Device device = slot.master.device();
      const std::optional<at::Tensor> scale = scale_on(device);
      const at::Tensor step = step_on(device);
      const at::Tensor& grad = slot.param.grad();
      const bool flat = slot.param.is_contiguous() && grad.is_contiguous();
      const int64_t n = slot.master.numel();
      const int64_t piece = flat ? std::max<int64_t>(options_.piece_elements, 1) : n;
      for (int64_t begin = 0; begin < n; begin += piece) {
        const int64_t length = std::min(piece, n - begin);
        auto part = [&](const at::Tensor& t) {
          return flat ? t.view({-1}).narrow(0, begin, length) : t;
        };
        const at::Tensor master = part(slot.master);
        at::_fused_adamw_({master}, {part(grad).to(at::kFloat)}, {part(slot.exp_avg)},
                          {part(slot.exp_avg_sq)}, {}, {step}, lr, options_.beta1, options_.beta2,
                          weight_decay, options_.eps, /*amsgrad=*/false, /*maximize=*/false, scale,
                          std::nullopt);
        part(slot.param).copy_(master);
      }
    }
    for (const auto& [name, members] : groups) {
      const c10::Device device = members.front()->master.device();
      std::vector<at::Tensor> masters, grads, avgs, sqs, steps;
      for (const Slot* slot : members) {
        masters.push_back(slot->master);
        grads.push_back(slot->param.grad());
        avgs.push_back(slot->exp_avg);
        sqs.push_back(slot->exp_avg_sq);
        steps.push_back(step_on(device));
      }
      at::_fused_adamw_(masters, grads, avgs, sqs, /*max_exp_avg_sqs=*/{}, steps, lr,
                        options_.beta1, options_.beta2, weight_decay, options_.eps,
                        /*amsgrad=*/false, /*maximize=*/false, scale_on(device), std::nullopt);
    }
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
