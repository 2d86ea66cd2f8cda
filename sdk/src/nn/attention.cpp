#include "kiln/nn/attention.h"

#include "kiln/sdk/ops/attention.h"

#include <ATen/ATen.h>

#include <cmath>

namespace kiln::nn {

GqaAttention::GqaAttention(const GqaAttentionConfig& c, const at::TensorOptions& options)
    : config(c),
      q_proj(c.hidden, c.num_heads * c.head_dim, c.qkv_bias, options),
      k_proj(c.hidden, c.num_kv_heads * c.head_dim, c.qkv_bias, options),
      v_proj(c.hidden, c.num_kv_heads * c.head_dim, c.qkv_bias, options),
      o_proj(c.num_heads * c.head_dim, c.hidden, /*bias=*/false, options) {
  if (c.qk_norm) {
    q_norm = RmsNorm(c.head_dim, c.norm_eps, options);
    k_norm = RmsNorm(c.head_dim, c.norm_eps, options);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> GqaAttention::project(
    const at::Tensor& x, const std::pair<at::Tensor, at::Tensor>* rope,
    ops::RopeStyle style) const {
  // Token dims: [B, S] (BSHD) or [T] (THD).
  std::vector<int64_t> heads_shape(x.sizes().begin(), x.sizes().end() - 1);
  auto split_heads = [&](const at::Tensor& t, int64_t heads) {
    std::vector<int64_t> shape = heads_shape;
    shape.push_back(heads);
    shape.push_back(config.head_dim);
    return t.view(shape);
  };
  at::Tensor q = split_heads(q_proj(x), config.num_heads);    // [..., Hq, D]
  at::Tensor k = split_heads(k_proj(x), config.num_kv_heads); // [..., Hkv, D]
  at::Tensor v = split_heads(v_proj(x), config.num_kv_heads); // [..., Hkv, D]
  if (config.qk_norm) {
    q = q_norm(q);
    k = k_norm(k);
  }
  if (rope != nullptr) {
    q = RotaryEmbedding::apply(q, *rope, style);
    k = RotaryEmbedding::apply(k, *rope, style);
  }
  return {q, k, v};
}

double GqaAttention::softmax_scale() const {
  return 1.0 / std::sqrt(static_cast<double>(config.head_dim));
}

at::Tensor GqaAttention::operator()(const at::Tensor& x, const SequenceLayout& layout,
                                    const std::pair<at::Tensor, at::Tensor>* rope,
                                    ops::RopeStyle style) const {
  auto [q, k, v] = project(x, rope, style);
  ops::AttentionArgs args{.q = q, .k = k, .v = v};
  args.softmax_scale = softmax_scale();
  if (layout.packed()) {
    args.cu_seqlens = layout.cu_seqlens;
    args.max_seqlen = layout.max_seqlen;
  }
  const at::Tensor o = ops::attention(args); // [..., Hq, D]
  return o_proj(o.flatten(-2));
}

void GqaAttention::init(double std) {
  q_proj.init(std);
  k_proj.init(std);
  v_proj.init(std);
  o_proj.init(std);
}

void GqaAttention::collect(NamedTensors& out, const std::string& prefix) const {
  q_proj.collect(out, prefix + "q_proj.");
  k_proj.collect(out, prefix + "k_proj.");
  v_proj.collect(out, prefix + "v_proj.");
  o_proj.collect(out, prefix + "o_proj.");
  if (config.qk_norm) {
    add_named(out, prefix, "q_norm.weight", q_norm.weight);
    add_named(out, prefix, "k_norm.weight", k_norm.weight);
  }
}

} // namespace kiln::nn
