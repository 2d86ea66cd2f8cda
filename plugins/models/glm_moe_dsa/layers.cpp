#include "layers.h"

#include <ATen/ATen.h>

namespace kiln::models::glm_moe_dsa {

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

std::pair<at::Tensor, at::Tensor> MoeBlock::operator()(const at::Tensor& x) const {
  const auto route = gate(x);       // top-k experts per token, fp32 weights
  at::Tensor y = experts(x, route); // [N, hidden]
  if (has_shared) y = y + shared_experts(x);
  const at::Tensor load =
      at::bincount(route.indices.flatten().to(at::kLong), /*weights=*/{}, experts.num_experts());
  return {y, load};
}

void MoeBlock::init(double std) {
  gate.init(std);
  experts.init(std);
  if (has_shared) shared_experts.init(std);
}

DecoderLayer::DecoderLayer(const Config& c, int64_t index, const at::TensorOptions& options)
    : input_layernorm(c.hidden_size, c.rms_norm_eps, options),
      self_attn(c, index, options),
      post_attention_layernorm(c.hidden_size, c.rms_norm_eps, options) {
  if (c.is_moe_layer(index)) {
    moe.emplace(c, options);
  } else {
    mlp.emplace(c.hidden_size, c.intermediate_size, options);
  }
}

LayerResult DecoderLayer::operator()(const at::Tensor& x, const TokenLayout& layout,
                                     const std::pair<at::Tensor, at::Tensor>& rope,
                                     const at::Tensor& topk, bool indexer_kl) const {
  AttentionResult attn = self_attn(input_layernorm(x), layout, rope, topk, indexer_kl);
  LayerResult out;
  feed_forward(x + attn.output, out);
  out.topk = attn.topk;
  out.indexer_kl = attn.indexer_kl;
  return out;
}

LayerResult DecoderLayer::operator()(const at::Tensor& x, const TokenLayout& layout,
                                     const std::pair<at::Tensor, at::Tensor>& rope,
                                     const at::Tensor& topk, const nn::CacheStep& step,
                                     LayerCache& cache) const {
  AttentionResult attn = self_attn(input_layernorm(x), layout, rope, topk, step, cache);
  LayerResult out;
  feed_forward(x + attn.output, out);
  out.topk = attn.topk;
  return out;
}

void DecoderLayer::feed_forward(const at::Tensor& h, LayerResult& out) const {
  const at::Tensor normed = post_attention_layernorm(h);
  if (moe) {
    auto [y, load] = (*moe)(normed);
    out.hidden = h + y;
    out.expert_load = load;
  } else {
    out.hidden = h + (*mlp)(normed);
  }
}

void DecoderLayer::init(double std) {
  self_attn.init(std);
  if (moe) moe->init(std);
  if (mlp) mlp->init(std);
}

} // namespace kiln::models::glm_moe_dsa
