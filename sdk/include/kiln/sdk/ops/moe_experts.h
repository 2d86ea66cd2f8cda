// Op `moe_experts`: the routed experts of an MoE layer as one grouped computation (HF's fused
// `experts` module with the `grouped_mm` implementation, models.md §1.4).
//
//   for token n, slot s with expert e = indices[n, s] (slots with e = -1 are skipped):
//     kSwiGlu (GLM):      [g | u] = x[n] @ w_up[e]^T  (w_up [E, 2I, H]: gate rows, then up rows)
//                         h = silu(g) * u
//     kRelu2  (Nemotron): h = relu(x[n] @ w_up[e]^T)^2  (w_up [E, I, H])
//     y[n, s] = h @ w_down[e]^T                                           [H] (w_down [E, H, I])
//   out[n] = sum_s weights[n, s] * y[n, s]
//
// The routing weight multiplies AFTER the down projection (HF; NeMo's default multiplies before).
// Weights are HF's fused runtime layout: the hub stores one tensor per expert and HF stacks them
// at load time (gate_up_proj [E, 2I, H] = stack(cat(gate_e, up_e)); Nemotron up_proj [E, I, H]).
// Index -1 marks an empty slot (e.g. an expert owned by another expert-parallel rank); it
// contributes nothing. The shared expert is not part of this op.
//
// Precision (HF grouped_mm): the two GEMMs run in x's dtype with float32 accumulation and their
// outputs are rounded to x's dtype; the activation runs in x's dtype; y (x's dtype) times the
// float32 weight is float32; the sum over the k slots is float32 (models.md §1.4); out is rounded
// to x's dtype once, at the end.
// Differentiable in x, w_up, w_down and weights (not indices).
// Backends may assume (checked here): x [N, H] floating; w_up [E, 2I, H] (kSwiGlu) or [E, I, H]
// (kRelu2) and w_down [E, H, I] in x's dtype; indices int64 [N, k] and weights [N, k] floating
// (float32 as HF, or x's dtype); one device. NOT checked on accelerators (caller guarantees):
// every index is -1 or in [0, E). Strides are arbitrary.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

namespace kiln::ops {

/// The expert MLP form.
enum class MoeActivation {
  kSwiGlu = 0, ///< silu(gate) * up, gate and up stacked in w_up (GLM-4.5, GLM-5)
  kRelu2 = 1,  ///< relu(up)^2, no gate (Nemotron-H)
};

/// Arguments of `moe_experts`; device and dtype of x decide dispatch.
struct MoeExpertsArgs {
  at::Tensor x;       ///< [N, H]; float32, bfloat16 or float16
  at::Tensor w_up;    ///< [E, 2I, H] (kSwiGlu) or [E, I, H] (kRelu2); x's dtype
  at::Tensor w_down;  ///< [E, H, I]; x's dtype
  at::Tensor indices; ///< int64 [N, k]: expert of each slot, -1 = empty slot
  at::Tensor weights; ///< [N, k]: routing weights; float32 (HF) or x's dtype
  MoeActivation activation = MoeActivation::kSwiGlu;
  c10::Device device() const { return x.device(); }
  c10::ScalarType dtype() const { return x.scalar_type(); }
};

/// Traits of op `moe_experts`.
struct MoeExpertsOp {
  static constexpr const char* kName = "moe_experts";
  using Args = MoeExpertsArgs;
  using Result = at::Tensor; ///< [N, H]; x's dtype
};

/// Validates and dispatches `moe_experts`.
KILN_SDK_API at::Tensor moe_experts(const at::Tensor& x, const at::Tensor& w_up,
                                    const at::Tensor& w_down, const at::Tensor& indices,
                                    const at::Tensor& weights, MoeActivation activation);

} // namespace kiln::ops
