// The SDK side of every op: argument checks that hold for all backends, then dispatch. Backends
// may rely on these checks having passed.
#include "kiln/sdk/ops.h"

#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/core/Tensor.h>

namespace kiln::ops {

std::span<const std::string_view> op_names() {
  static constexpr std::string_view kNames[] = {
      "rms_norm",    "gated_rms_norm", "rope",          "attention",      "indexer_topk",
      "sparse_mla",  "moe_route",      "moe_experts",   "causal_conv1d",  "mamba2_scan",
      "linear_cross_entropy"};
  return kNames;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  KILN_CHECK_USER(x.defined() && weight.defined(), "rms_norm: x and weight must be defined");
  KILN_CHECK_USER(x.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x.size(-1),
                  "rms_norm: weight must be [D] with D = x.size(-1) = {}; found weight {}",
                  x.dim() >= 1 ? x.size(-1) : 0, shape_str(weight.sizes()));
  KILN_CHECK_USER(x.is_floating_point(), "rms_norm: x must be floating point, found {}",
                  dtype_name(x.scalar_type()));
  KILN_CHECK_USER(eps >= 0, "rms_norm: eps must be >= 0, found {}", eps);
  return sdk::dispatch<RmsNormOp>(RmsNormArgs{x, weight, eps});
}

at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                RopeStyle style) {
  KILN_CHECK_USER(x.defined() && cos.defined() && sin.defined(),
                  "rope: x, cos and sin must be defined");
  KILN_CHECK_USER(x.dim() == 3 || x.dim() == 4, "rope: x must be [T, H, D] or [B, S, H, D], found {}",
                  shape_str(x.sizes()));
  KILN_CHECK_USER(shape_str(cos.sizes()) == shape_str(sin.sizes()), "rope: cos {} and sin {} must have one shape",
                  shape_str(cos.sizes()), shape_str(sin.sizes()));
  KILN_CHECK_USER(cos.dim() == x.dim() - 1, "rope: cos must be x's shape without H: expected {} dims, found {}",
                  x.dim() - 1, shape_str(cos.sizes()));
  for (int64_t d = 0; d < x.dim() - 2; ++d) {
    KILN_CHECK_USER(cos.size(d) == x.size(d), "rope: cos {} does not match x {} in dim {}",
                    shape_str(cos.sizes()), shape_str(x.sizes()), d);
  }
  const int64_t rotary = 2 * cos.size(-1);
  KILN_CHECK_USER(rotary > 0 && rotary <= x.size(-1),
                  "rope: the rotary width 2 * cos.size(-1) = {} must be in [2, head_dim = {}]",
                  rotary, x.size(-1));
  return sdk::dispatch<RopeOp>(RopeArgs{x, cos, sin, style});
}

} // namespace kiln::ops
