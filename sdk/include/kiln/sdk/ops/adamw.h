// Op `adamw`: one AdamW update of one parameter, in place. It is the one op that writes into its
// arguments, so it dispatches through sdk::dispatch_in_place: no policy runs its kernels to time
// them (that would apply the update more than once); a policy request takes the highest-priority
// kernel that supports the call.
//
// With w the float32 master (`master` when given, else `param` itself, then float32), and
// g = grad * grad_scale in float32 (grad_scale is the clipping coefficient):
//
//   w   = w * (1 - lr * weight_decay)                                  (decoupled decay)
//   m   = beta1 * m + (1 - beta1) * g
//   v   = beta2 * v + (1 - beta2) * g^2
//   w   = w - (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
//   param = w rounded to param's dtype                                 (when master is given)
//
// This is torch.optim.AdamW's update (its fused kernel's order of operations), `step` counting
// from 1. Parameters of another dtype than float32 need a master; float32 ones may have none.
// Precision: float32 throughout; a backend may differ from the reference by float32 rounding
// (the masters and moments to ~1e-6 relative after a step, bf16 parameters by one ulp at ties).
// Not differentiable (runs under no_grad).
// Backends may assume (checked here): param floating; grad of param's shape and dtype; exp_avg,
// exp_avg_sq and master (when given) float32 of param's shape; step >= 1; lr, eps, weight_decay
// >= 0; beta1, beta2 in [0, 1); grad_scale > 0 and finite; piece_elements >= 1; one device;
// the float32 state tensors distinct from each other and from grad. Strides are arbitrary.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kiln::ops {

/// Arguments of `adamw`; device and dtype of param decide dispatch.
struct AdamwArgs {
  at::Tensor param;      ///< the model's parameter; float32, bfloat16 or float16 (updated)
  at::Tensor grad;       ///< param's shape and dtype (read only)
  at::Tensor master;     ///< float32, param's shape (updated); undefined: param is the master
  at::Tensor exp_avg;    ///< float32, param's shape (updated)
  at::Tensor exp_avg_sq; ///< float32, param's shape (updated)
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t step = 1;        ///< this update's number, from 1 (bias correction)
  double grad_scale = 1.0; ///< the gradient is multiplied by it (clipping)
  /// The most elements of a float32 temporary a backend may allocate (the torch reference
  /// updates a non-float32 parameter in pieces of this size, so that only one piece's float32
  /// gradient exists at a time). The result depends on it only through float32 rounding.
  int64_t piece_elements = int64_t{1} << 26;
  c10::Device device() const { return param.device(); }
  c10::ScalarType dtype() const { return param.scalar_type(); }
};

/// Traits of op `adamw`.
struct AdamwOp {
  static constexpr const char* kName = "adamw";
  using Args = AdamwArgs;
  using Result = void;
};

/// Validates and dispatches `adamw` (sdk::dispatch_in_place).
KILN_SDK_API void adamw(const AdamwArgs& args);

} // namespace kiln::ops
