#include "kernels.h"

#include <ATen/ATen.h>

namespace kiln::backends::torch_ref {

at::Tensor rms_norm(const ops::RmsNormArgs& args) {
  const at::Tensor x32 = args.x.to(at::kFloat);
  const at::Tensor inv_rms = at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + args.eps);
  return args.weight * (x32 * inv_rms).to(args.x.scalar_type()); // cast first, then weight (HF)
}

} // namespace kiln::backends::torch_ref
