// The SDK side of `rms_norm`: checks that hold for every backend, then dispatch.
#include "kiln/sdk/ops/rms_norm.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

namespace kiln::ops {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const detail::ArgChecker check(RmsNormOp::kName, "x", x);
  check.required("weight", weight);
  check.require(x.dim() >= 1, "'x' must be [..., D] (>= 1 dim); found {}", shape_str(x.sizes()));
  check.dtype_in("x", x, detail::kFloatTypes);
  check.dtype_in("weight", weight, detail::kFloatTypes);
  check.shape("weight", weight, {x.size(-1)}, "[D] (D from x)");
  check.require(eps >= 0, "'eps' must be >= 0; found {}", eps);
  return sdk::dispatch<RmsNormOp>(RmsNormArgs{x, weight, eps});
}

} // namespace kiln::ops
