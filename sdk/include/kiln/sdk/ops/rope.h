// Op `rope`: rotary position embedding applied to the first R = 2 * cos.size(-1) channels of each
// head; channels R.. pass through unchanged (partial rotary).
//
// Two pairings of the rotated channels:
//   kHalf        (HF rotate_half, GLM-4.5): channel i pairs with i + R/2, i < R/2
//   kInterleaved (GLM-5 MLA / DSA indexer): channel 2i pairs with 2i + 1
// For a pair (a, b) with angle index i: a' = a*cos_i - b*sin_i, b' = b*cos_i + a*sin_i.
// As in HF, cos and sin are cast to x's dtype before the multiply, so bf16 inputs rotate in bf16.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

namespace kiln::ops {

enum class RopeStyle { kHalf = 0, kInterleaved = 1 };

struct RopeArgs {
  at::Tensor x;    ///< [B, S, H, D] (BSHD) or [T, H, D] (THD); float32/bfloat16/float16
  at::Tensor cos;  ///< [B, S, R/2] or [T, R/2] (x's shape without H, last dim R/2); float32
  at::Tensor sin;  ///< same shape as cos
  RopeStyle style = RopeStyle::kHalf;
  c10::Device device() const { return x.device(); }
  c10::ScalarType dtype() const { return x.scalar_type(); }
};

struct RopeOp {
  static constexpr const char* kName = "rope";
  using Args = RopeArgs;
  using Result = at::Tensor;  ///< x's shape and dtype
};

/// Differentiable in x. Requires R <= D and R even.
KILN_SDK_API at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                             RopeStyle style);

} // namespace kiln::ops
