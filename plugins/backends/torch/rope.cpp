#include "kernels.h"

#include <ATen/ATen.h>

namespace kiln::backends::torch_ref {

at::Tensor rope(const ops::RopeArgs& args) {
  const at::Tensor& x = args.x;           // [B, S, H, D] or [T, H, D]
  const int64_t half = args.cos.size(-1); // R / 2
  const int64_t rotary = 2 * half;
  const at::Tensor cos = args.cos.unsqueeze(-2).to(x.scalar_type()); // [..., 1, R/2]
  const at::Tensor sin = args.sin.unsqueeze(-2).to(x.scalar_type());
  const at::Tensor rot = x.narrow(-1, 0, rotary);
  at::Tensor a, b; // the two members of each rotated pair, [..., H, R/2]
  if (args.style == ops::RopeStyle::kHalf) {
    a = rot.narrow(-1, 0, half);
    b = rot.narrow(-1, half, half);
  } else {
    const at::Tensor pairs = rot.unflatten(-1, {half, 2});
    a = pairs.select(-1, 0);
    b = pairs.select(-1, 1);
  }
  const at::Tensor a_out = a * cos - b * sin;
  const at::Tensor b_out = b * cos + a * sin;
  at::Tensor out = args.style == ops::RopeStyle::kHalf ? at::cat({a_out, b_out}, -1)
                                                       : at::stack({a_out, b_out}, -1).flatten(-2);
  if (rotary < x.size(-1)) out = at::cat({out, x.narrow(-1, rotary, x.size(-1) - rotary)}, -1);
  return out;
}

} // namespace kiln::backends::torch_ref
