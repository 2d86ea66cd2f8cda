// The SDK side of `rope`: checks that hold for every backend, then dispatch.
#include "kiln/sdk/ops/rope.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

namespace kiln::ops {

at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                RopeStyle style) {
  const detail::ArgChecker check(RopeOp::kName, "x", x);
  check.required("cos", cos);
  check.required("sin", sin);
  check.require(x.dim() == 3 || x.dim() == 4,
                "'x' must be [T, H, D] (THD) or [B, S, H, D] (BSHD); found {}",
                shape_str(x.sizes()));
  check.dtype_in("x", x, detail::kFloatTypes);
  check.dtype_in("cos", cos, detail::kFloatTypes);
  check.rank("cos", cos, x.dim() - 1, x.dim() == 4 ? "[B, S, R/2]" : "[T, R/2]");
  for (int64_t d = 0; d < x.dim() - 2; ++d) {
    check.size("cos", cos, d, x.size(d),
               d == 0 && x.dim() == 4 ? "B (from x)"
               : x.dim() == 4         ? "S (from x)"
                                      : "T (from x)");
  }
  check.shape("sin", sin, cos.sizes(), "cos's shape");
  check.same_dtype("sin", sin, "cos", cos);
  const int64_t rotary = 2 * cos.size(-1);
  check.require(rotary >= 2 && rotary <= x.size(-1),
                "'cos' last dim R/2 = {} gives a rotary width R = {} outside [2, D = {}]",
                cos.size(-1), rotary, x.size(-1));
  return sdk::dispatch<RopeOp>(RopeArgs{x, cos, sin, style});
}

} // namespace kiln::ops
