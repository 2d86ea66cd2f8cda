// `adamw` on the cuda backend: adamw.cu's one-pass update. The bias corrections and the products
// of scalars are formed here, in float32 as torch's fused kernel forms them.
//
// supports(): a compute capability 9.0 GPU (runs_on); a bf16 parameter with a float32 master, or
// a float32 parameter (its own master or with one); every tensor contiguous and 16-byte aligned
// (the kernel's vector loads). Others (float16 parameters, views with gaps) go to the reference.
#include "kernels.h"
#include "launch.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>
#include <cstdint>

namespace kiln::backends::cuda {

bool adamw_supports(const ops::AdamwArgs& a) {
  if (!a.param.is_cuda()) return false;
  const at::ScalarType dtype = a.param.scalar_type();
  const bool typed = (dtype == at::kBFloat16 && a.master.defined()) || dtype == at::kFloat;
  if (!typed || !runs_on(a.param.device())) return false;
  for (const at::Tensor* t : {&a.param, &a.grad, &a.master, &a.exp_avg, &a.exp_avg_sq}) {
    if (t->defined() && !(t->is_contiguous() && starts_16b(*t))) return false;
  }
  return true;
}

void adamw(const ops::AdamwArgs& a) {
  const c10::cuda::CUDAGuard guard(a.param.device());
  const auto step = static_cast<float>(a.step);
  AdamwParams p;
  p.param = a.param.data_ptr();
  p.grad = a.grad.data_ptr();
  p.master = (a.master.defined() ? a.master : a.param).data_ptr<float>();
  p.exp_avg = a.exp_avg.data_ptr<float>();
  p.exp_avg_sq = a.exp_avg_sq.data_ptr<float>();
  p.n = a.param.numel();
  p.bf16 = a.param.scalar_type() == at::kBFloat16;
  p.has_divisor = a.grad_scale != 1.0;
  p.grad_divisor = static_cast<float>(1.0 / a.grad_scale);
  p.lr_wd = static_cast<float>(a.lr) * static_cast<float>(a.weight_decay);
  p.beta1 = static_cast<float>(a.beta1);
  p.beta2 = static_cast<float>(a.beta2);
  p.eps = static_cast<float>(a.eps);
  p.step_size = static_cast<float>(a.lr) / (1.f - std::pow(p.beta1, step));
  p.bias_correction2_sqrt = std::sqrt(1.f - std::pow(p.beta2, step));
  check_launch(launch_adamw(p, c10::cuda::getCurrentCUDAStream()), "adamw");
}

} // namespace kiln::backends::cuda
