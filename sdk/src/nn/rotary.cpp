#include "kiln/nn/rotary.h"

#include "kiln/sdk/error.h"

#include <ATen/ATen.h>

namespace kiln::nn {

RotaryEmbedding::RotaryEmbedding(int64_t rotary_dim_, double theta, ops::RopeStyle style_,
                                 c10::Device device)
    : rotary_dim(rotary_dim_), style(style_) {
  KILN_CHECK_USER(rotary_dim > 0 && rotary_dim % 2 == 0,
                  "rotary embedding: rotary_dim must be even and positive, found {}", rotary_dim);
  // HF: 1 / base ** (arange(0, dim, 2, int64).float() / dim), in fp32.
  const at::Tensor exponent =
      at::arange(0, rotary_dim, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat) /
      static_cast<float>(rotary_dim);
  inv_freq = (1.0 / at::pow(at::scalar_tensor(theta, at::kFloat), exponent)).to(device);
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::operator()(const at::Tensor& positions) const {
  const at::Tensor angles = positions.to(at::kFloat).unsqueeze(-1) * inv_freq; // [..., R/2]
  at::Tensor cos = angles.cos();
  at::Tensor sin = angles.sin();
  if (attention_scaling != 1.0) {
    cos = cos * attention_scaling;
    sin = sin * attention_scaling;
  }
  return {cos, sin};
}

at::Tensor RotaryEmbedding::apply(const at::Tensor& x,
                                  const std::pair<at::Tensor, at::Tensor>& cos_sin,
                                  ops::RopeStyle style) {
  return ops::rope(x, cos_sin.first, cos_sin.second, style);
}

at::Tensor positions_from_cu_seqlens(const at::Tensor& cu_seqlens, int64_t total) {
  // position[t] = t - start(document of t)
  const at::Tensor cu = cu_seqlens.to(at::kLong);
  const at::Tensor tokens = at::arange(total, cu.options());
  const at::Tensor doc = at::searchsorted(cu.slice(0, 1), tokens, /*out_int32=*/false,
                                          /*right=*/true); // [T]
  return tokens - cu.index_select(0, doc);
}

} // namespace kiln::nn
