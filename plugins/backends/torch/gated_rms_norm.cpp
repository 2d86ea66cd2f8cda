// Reference `gated_rms_norm`: HF Zamba2RMSNormGated (norm_before_gate = False), as Nemotron-H's
// Mamba2 mixer uses it (models.md §4.3 step 8):
//   u = x * silu(gate)                  float32 (float64 inputs stay float64)
//   u_g *= rsqrt(mean(u_g^2) + eps)     per group of group_size channels, float32
//   y = weight * u.to(x.dtype)          cast first, then the weight (HF's order)
// Memory: a few float32 copies of x. Differentiable through autograd.
#include "kernels.h"

#include <ATen/ATen.h>

namespace kiln::backends::torch_ref {

at::Tensor gated_rms_norm(const ops::GatedRmsNormArgs& args) {
  const at::ScalarType compute =
      args.x.scalar_type() == at::kDouble ? at::kDouble : at::ScalarType::Float;
  at::Tensor u = args.x.to(compute);
  if (args.gate.defined()) u = u * at::silu(args.gate.to(compute));
  const int64_t d = u.size(-1);
  std::vector<int64_t> grouped(u.sizes().begin(), u.sizes().end() - 1);
  grouped.push_back(d / args.group_size);
  grouped.push_back(args.group_size);
  const at::Tensor g = u.reshape(grouped); // [..., D / group_size, group_size]
  const at::Tensor normed = g * at::rsqrt(g.pow(2).mean(-1, /*keepdim=*/true) + args.eps);
  return args.weight * normed.reshape(u.sizes()).to(args.x.scalar_type());
}

} // namespace kiln::backends::torch_ref
