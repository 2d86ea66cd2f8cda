// Op `rope`: rotary position embedding applied to the first R = 2 * cos.size(-1) channels of each
// head; channels R.. pass through unchanged (partial rotary).
//
// Two pairings of the rotated channels:
//   kHalf        (HF rotate_half, GLM-4.5): channel i pairs with i + R/2, i < R/2
//   kInterleaved (GLM-5 MLA / DSA indexer): channel 2i pairs with 2i + 1; the result is written
//                back interleaved (standard GPT-J layout). HF's GLM-5 code writes it de-interleaved
//                (all first members, then all second members); q and k get the same permutation,
//                so dot products are identical, but a caller that must reproduce HF's raw tensors
//                (e.g. the expanded K cache) permutes the R channels itself.
// For a pair (a, b) with angle index i: a' = a*cos_i - b*sin_i, b' = b*cos_i + a*sin_i.
//
// Precision: as in HF, cos and sin are cast to x's dtype before the multiply, so bf16 inputs
// rotate in bf16 arithmetic (HF computes the tables in float32 and casts them to bf16 first).
// Differentiable in x (cos and sin are constants).
// Backends may assume: x is [B, S, H, D] or [T, H, D] floating; cos and sin have one shape, x's
// shape without H and with last dim R/2, 2 <= R <= D, floating; one device. Strides are arbitrary.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

namespace kiln::ops {

/// Which channels of the rotary slice form a rotated pair.
enum class RopeStyle { kHalf = 0, kInterleaved = 1 };

/// Arguments of `rope`; device and dtype of x decide dispatch.
struct RopeArgs {
  at::Tensor x;   ///< [B, S, H, D] (BSHD) or [T, H, D] (THD); float32/bfloat16/float16
  at::Tensor cos; ///< [B, S, R/2] or [T, R/2] (x's shape without H, last dim R/2); floating
  at::Tensor sin; ///< same shape and dtype as cos
  RopeStyle style = RopeStyle::kHalf;
  c10::Device device() const { return x.device(); }
  c10::ScalarType dtype() const { return x.scalar_type(); }
};

/// Traits of op `rope`.
struct RopeOp {
  static constexpr const char* kName = "rope";
  using Args = RopeArgs;
  using Result = at::Tensor; ///< x's shape and dtype
};

/// Validates and dispatches `rope`. Requires 2 <= R <= D.
KILN_SDK_API at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                             RopeStyle style);

} // namespace kiln::ops
