// Rotary position embedding tables: cos/sin of pos * inv_freq in fp32, as HF computes them, for
// ops::rope. Supports partial rotary (rotary_dim < head_dim) and both channel pairings.
#pragma once

#include "kiln/nn/module.h"
#include "kiln/sdk/ops/rope.h"

#include <utility>

namespace kiln::nn {

struct KILN_SDK_API RotaryEmbedding {
  at::Tensor inv_freq; ///< fp32 [R/2]: 1 / theta^(2j/R), not a parameter
  int64_t rotary_dim = 0;
  double attention_scaling = 1.0;
  ops::RopeStyle style = ops::RopeStyle::kHalf;

  RotaryEmbedding() = default;
  /// rope_type "default": inv_freq[j] = theta^(-2j / rotary_dim).
  RotaryEmbedding(int64_t rotary_dim, double theta, ops::RopeStyle style, c10::Device device);

  /// positions int64 [B, S] or [T] -> (cos, sin) fp32 [B, S, R/2] or [T, R/2].
  std::pair<at::Tensor, at::Tensor> operator()(const at::Tensor& positions) const;
  /// Applies the rotation to x [B, S, H, D] or [T, H, D].
  static at::Tensor apply(const at::Tensor& x, const std::pair<at::Tensor, at::Tensor>& cos_sin,
                          ops::RopeStyle style);
};

/// Positions for packed documents: 0.. restarting at every cu_seqlens boundary. int64 [T].
KILN_SDK_API at::Tensor positions_from_cu_seqlens(const at::Tensor& cu_seqlens, int64_t total);

} // namespace kiln::nn
