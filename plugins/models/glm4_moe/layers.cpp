#include "layers.h"

#include <ATen/ATen.h>

namespace kiln::models::glm4_moe {

MoeBlock::MoeBlock(const Config& c, const at::TensorOptions& options)
    : gate(nn::TopkRouterConfig{.hidden = c.hidden_size,
                                .num_experts = c.n_routed_experts,
                                .top_k = c.num_experts_per_tok,
                                .n_group = c.n_group,
                                .topk_group = c.topk_group,
                                .norm_topk_prob = c.norm_topk_prob,
                                .routed_scaling_factor = c.routed_scaling_factor},
           options),
      experts(c.n_routed_experts, c.hidden_size, c.moe_intermediate_size,
              ops::MoeActivation::kSwiGlu, options),
      has_shared(c.n_shared_experts > 0) {
  if (has_shared) {
    shared_experts =
        nn::GatedMlp(c.hidden_size, c.moe_intermediate_size * c.n_shared_experts, options);
  }
}

at::Tensor MoeBlock::operator()(const at::Tensor& x, at::Tensor* load) const {
  const at::Tensor flat = x.reshape({-1, x.size(-1)}); // [N, H]
  const auto route = gate(flat);                       // top-k experts, fp32 weights
  if (load) {
    *load = at::bincount(route.indices.reshape({-1}).to(at::kLong), {}, experts.num_experts());
  }
  at::Tensor y = experts(flat, route).view(x.sizes()); // [..., H]
  if (has_shared) y = y + shared_experts(x);
  return y;
}

void MoeBlock::init(double std) {
  gate.init(std);
  experts.init(std);
  if (has_shared) shared_experts.init(std);
}

DecoderLayer::DecoderLayer(const Config& c, int64_t index, const at::TensorOptions& options)
    : input_layernorm(c.hidden_size, c.rms_norm_eps, options),
      self_attn(nn::GqaAttentionConfig{.hidden = c.hidden_size,
                                       .num_heads = c.num_attention_heads,
                                       .num_kv_heads = c.num_key_value_heads,
                                       .head_dim = c.head_dim,
                                       .qkv_bias = c.attention_bias,
                                       .qk_norm = c.use_qk_norm,
                                       .norm_eps = c.rms_norm_eps},
                options),
      post_attention_layernorm(c.hidden_size, c.rms_norm_eps, options) {
  if (c.is_moe_layer(index)) {
    moe.emplace(c, options);
  } else {
    mlp.emplace(c.hidden_size, c.intermediate_size, options);
  }
}

at::Tensor DecoderLayer::operator()(const at::Tensor& x, const nn::SequenceLayout& layout,
                                    const std::pair<at::Tensor, at::Tensor>& rope,
                                    at::Tensor* load) const {
  const at::Tensor h = x + self_attn(input_layernorm(x), layout, &rope, ops::RopeStyle::kHalf);
  return feed_forward(h, load);
}

at::Tensor DecoderLayer::operator()(const at::Tensor& x, const nn::CacheStep& step, nn::KvCache& kv,
                                    const std::pair<at::Tensor, at::Tensor>& rope) const {
  const at::Tensor h = x + nn::gqa_attention_cached(self_attn, input_layernorm(x), step, kv, &rope,
                                                    ops::RopeStyle::kHalf);
  return feed_forward(h, nullptr);
}

at::Tensor DecoderLayer::feed_forward(const at::Tensor& h, at::Tensor* load) const {
  const at::Tensor normed = post_attention_layernorm(h);
  return h + (moe ? (*moe)(normed, load) : (*mlp)(normed));
}

void DecoderLayer::init(double std) {
  self_attn.init(std);
  if (moe) moe->init(std);
  if (mlp) mlp->init(std);
}

} // namespace kiln::models::glm4_moe
