#include "train/optimizer.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

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
  at::Tensor total;
  for (const Slot& slot : slots_) {
    const at::Tensor& grad = slot.param.grad();
    if (!grad.defined()) continue;
    const at::Tensor sq = grad.to(at::kFloat).pow(2).sum().to(at::kCPU);
    total = total.defined() ? total + sq : sq;
  }
  return total.defined() ? std::sqrt(total.item<double>()) : 0.0;
}

void AdamW::step(double lr, double grad_scale) {
  c10::NoGradGuard no_grad;
  ++steps_;
  // One fused call per (decay, device) group; state steps are per tensor, all equal.
  for (const bool decay : {true, false}) {
    std::map<std::string, std::vector<const Slot*>> groups; // by device
    for (const Slot& slot : slots_) {
      if (slot.decay == decay && slot.param.grad().defined()) {
        groups[slot.master.device().str()].push_back(&slot);
      }
    }
    for (const auto& [device, members] : groups) {
      std::vector<at::Tensor> masters, grads, avgs, sqs, steps;
      for (const Slot* slot : members) {
        at::Tensor grad = slot->param.grad().to(at::kFloat);
        if (grad_scale != 1.0) grad = grad * grad_scale;
        masters.push_back(slot->master);
        grads.push_back(grad);
        avgs.push_back(slot->exp_avg);
        sqs.push_back(slot->exp_avg_sq);
        // The step the bias correction uses (1 for the first update), as torch's AdamW passes it.
        steps.push_back(
            at::full({}, static_cast<double>(steps_),
                     at::TensorOptions().dtype(at::kFloat).device(slot->master.device())));
      }
      at::_fused_adamw_(masters, grads, avgs, sqs, /*max_exp_avg_sqs=*/{}, steps, lr,
                        options_.beta1, options_.beta2, decay ? options_.weight_decay : 0.0,
                        options_.eps, /*amsgrad=*/false, /*maximize=*/false, std::nullopt,
                        std::nullopt);
    }
  }
  for (Slot& slot : slots_) {
    if (!slot.master.is_same(slot.param) && slot.param.grad().defined()) {
      slot.param.copy_(slot.master);
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
