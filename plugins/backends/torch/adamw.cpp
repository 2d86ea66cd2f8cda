#include "kernels.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <optional>

namespace kiln::backends::torch_ref {

// ATen's fused AdamW (torch.optim.AdamW(fused=True)'s kernel, CPU and CUDA). It updates its
// `grads` in place when given a grad scale, and needs them in the master's dtype, so it gets a
// float32 copy of the gradient unless the gradient can be used as it is (float32 parameter that
// is its own master, no scaling); the copy is made piece by piece (args.piece_elements elements
// of the flattened tensors) so that only one piece's copy exists at a time. Non-contiguous
// tensors are updated through whole contiguous copies.
void adamw(const ops::AdamwArgs& a) {
  const c10::NoGradGuard no_grad;
  const c10::Device device = a.param.device();
  const auto scalar = [&](double v) {
    return at::full({}, v, at::TensorOptions().dtype(at::kFloat).device(device));
  };
  // The kernel divides the gradients by its grad_scale.
  const std::optional<at::Tensor> scale =
      a.grad_scale == 1.0 ? std::nullopt : std::optional<at::Tensor>(scalar(1.0 / a.grad_scale));
  const at::Tensor step = scalar(static_cast<double>(a.step));
  const at::Tensor& master = a.master.defined() ? a.master : a.param;
  const auto update = [&](const at::Tensor& w, const at::Tensor& g, const at::Tensor& m,
                          const at::Tensor& v) {
    at::_fused_adamw_({w}, {g}, {m}, {v}, /*max_exp_avg_sqs=*/{}, {step}, a.lr, a.beta1, a.beta2,
                      a.weight_decay, a.eps, /*amsgrad=*/false, /*maximize=*/false, scale,
                      /*found_inf=*/std::nullopt);
  };
  const bool contiguous = a.param.is_contiguous() && a.grad.is_contiguous() &&
                          master.is_contiguous() && a.exp_avg.is_contiguous() &&
                          a.exp_avg_sq.is_contiguous();
  if (!contiguous) {
    // The fused kernel walks its tensors' memory in order: run it on contiguous copies and
    // write them back (views update their base).
    const at::Tensor w = master.contiguous(), m = a.exp_avg.contiguous(),
                     v = a.exp_avg_sq.contiguous();
    update(w, a.grad.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous(), m, v);
    for (const auto& [to, from] : {std::pair{master, w}, {a.exp_avg, m}, {a.exp_avg_sq, v}}) {
      if (!to.is_same(from)) to.copy_(from);
    }
    if (a.master.defined()) a.param.copy_(w);
    return;
  }
  if (!a.master.defined() && !scale) {
    update(master, a.grad, a.exp_avg, a.exp_avg_sq);
    return;
  }
  const int64_t n = a.param.numel();
  for (int64_t begin = 0; begin < n; begin += a.piece_elements) {
    const int64_t length = std::min(a.piece_elements, n - begin);
    const auto part = [&](const at::Tensor& t) { return t.view({-1}).narrow(0, begin, length); };
    const at::Tensor w = part(master);
    update(w, part(a.grad).to(at::kFloat, /*non_blocking=*/false, /*copy=*/true), part(a.exp_avg),
           part(a.exp_avg_sq));
    if (a.master.defined()) part(a.param).copy_(w);
  }
}

} // namespace kiln::backends::torch_ref
