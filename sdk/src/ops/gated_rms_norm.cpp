// The SDK side of `gated_rms_norm`: checks that hold for every backend, then dispatch.
#include "kiln/sdk/ops/gated_rms_norm.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

namespace kiln::ops {

at::Tensor gated_rms_norm(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& weight,
                          int64_t group_size, double eps) {
  const detail::ArgChecker check(GatedRmsNormOp::kName, "x", x);
  check.required("weight", weight);
  check.require(x.dim() >= 1, "'x' must be [..., D] (>= 1 dim); found {}", shape_str(x.sizes()));
  check.dtype_in("x", x, detail::kFloatTypes);
  const int64_t d = x.size(-1);
  if (check.optional("gate", gate)) {
    check.dtype_in("gate", gate, detail::kFloatTypes);
    check.shape("gate", gate, x.sizes(), "x's shape");
  }
  check.dtype_in("weight", weight, detail::kFloatTypes);
  check.shape("weight", weight, {d}, "[D] (D from x)");
  check.require(group_size >= 1 && d % group_size == 0,
                "'group_size' must be >= 1 and divide D = {}; found {}", d, group_size);
  check.require(eps >= 0, "'eps' must be >= 0; found {}", eps);
  return sdk::dispatch<GatedRmsNormOp>(GatedRmsNormArgs{x, gate, weight, group_size, eps});
}

} // namespace kiln::ops
