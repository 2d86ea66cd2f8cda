// Op `gated_rms_norm`: the gated, grouped RMSNorm of the Mamba2 mixer (HF `Zamba2RMSNormGated`
// as used by Nemotron-H, i.e. mamba_ssm's `norm_before_gate=False`): the gate is applied FIRST,
// then each group of `group_size` channels is RMS-normalised on its own.
//
//   u = x_f32 * silu(gate_f32)                       (u = x_f32 when gate is absent)
//   u_g = u_g * rsqrt(mean(u_g^2) + eps)             for each group g of group_size channels
//   y = u.to(x.dtype) * weight
//
// Precision (HF order): the gate product and the statistics are float32; the normalised value is
// cast to x's dtype BEFORE the weight multiply, which runs in the promoted dtype of x and weight.
// In Nemotron-H prefill x is the float32 scan output (so y is float32); in decode it is bf16.
// Differentiable in x, gate and weight.
// Backends may assume: x is [..., D] floating; gate, when given, has x's exact shape and a floating
// dtype; weight is [D] floating; group_size >= 1 divides D; eps >= 0; one device. Strides are
// arbitrary.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kiln::ops {

/// Arguments of `gated_rms_norm`; device and dtype of x decide dispatch.
struct GatedRmsNormArgs {
  at::Tensor x;           ///< [..., D]; float32, bfloat16 or float16
  at::Tensor gate;        ///< optional (undefined = no gating); x's shape; float32/bfloat16/float16
  at::Tensor weight;      ///< [D]; float32, bfloat16 or float16
  int64_t group_size = 0; ///< channels per group; D/G for Nemotron-H (G = n_groups), D = ungrouped
  double eps = 1e-5;
  c10::Device device() const { return x.device(); }
  c10::ScalarType dtype() const { return x.scalar_type(); }
};

/// Traits of op `gated_rms_norm`.
struct GatedRmsNormOp {
  static constexpr const char* kName = "gated_rms_norm";
  using Args = GatedRmsNormArgs;
  using Result = at::Tensor; ///< [..., D], x's dtype promoted with weight's (as HF)
};

/// Validates and dispatches `gated_rms_norm`. `gate` may be undefined.
KILN_SDK_API at::Tensor gated_rms_norm(const at::Tensor& x, const at::Tensor& gate,
                                       const at::Tensor& weight, int64_t group_size, double eps);

} // namespace kiln::ops
