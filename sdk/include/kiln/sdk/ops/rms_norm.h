// Op `rms_norm`: root-mean-square normalisation over the last dimension (HF RMSNorm order).
//
//   y = (x_f32 * rsqrt(mean(x_f32^2, -1) + eps)).to(x.dtype) * weight
//
// Precision: the statistics are computed in float32 whatever x's dtype; the normalised value is
// cast back to x's dtype BEFORE the weight multiply (that order is HF's and changes bf16
// rounding), and the multiply runs in the promoted dtype of x and weight.
// Differentiable in x and weight.
// Backends may assume: x has >= 1 dim and a floating dtype, weight is [D] floating, eps >= 0, and
// both are on one device. Strides are arbitrary.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

namespace kiln::ops {

/// Arguments of `rms_norm`; device and dtype of x decide dispatch.
struct RmsNormArgs {
  at::Tensor x;      ///< [..., D]; float32, bfloat16 or float16
  at::Tensor weight; ///< [D]; float32, bfloat16 or float16 (HF: x's dtype)
  double eps = 1e-6;
  c10::Device device() const { return x.device(); }
  c10::ScalarType dtype() const { return x.scalar_type(); }
};

/// Traits of op `rms_norm`.
struct RmsNormOp {
  static constexpr const char* kName = "rms_norm";
  using Args = RmsNormArgs;
  using Result = at::Tensor; ///< [..., D], x's dtype promoted with weight's (as HF)
};

/// Validates and dispatches `rms_norm`. Throws kiln::Error naming the argument on a bad call.
KILN_SDK_API at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

} // namespace kiln::ops
