#include "layers.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

namespace kiln::models::nemotron_v3 {

Relu2Mlp::Relu2Mlp(int64_t hidden, int64_t intermediate, bool bias,
                   const at::TensorOptions& options)
    : up_proj(hidden, intermediate, bias, options),
      down_proj(intermediate, hidden, bias, options) {}

at::Tensor Relu2Mlp::operator()(const at::Tensor& x) const {
  return down_proj(at::square(at::relu(up_proj(x))));
}

void Relu2Mlp::init(double std) {
  up_proj.init(std);
  down_proj.init(std);
}

void Relu2Mlp::collect(nn::NamedTensors& out, const std::string& prefix) const {
  up_proj.collect(out, prefix + "up_proj.");
  down_proj.collect(out, prefix + "down_proj.");
}

MoeBlock::MoeBlock(const Config& c, const at::TensorOptions& options)
    : gate(nn::TopkRouterConfig{.hidden = c.hidden_size,
                                .num_experts = c.n_routed_experts,
                                .top_k = c.num_experts_per_tok,
                                .n_group = c.n_group,
                                .topk_group = c.topk_group,
                                .norm_topk_prob = c.norm_topk_prob,
                                .routed_scaling_factor = c.routed_scaling_factor},
           options),
      experts(c.n_routed_experts, c.moe_latent_size > 0 ? c.moe_latent_size : c.hidden_size,
              c.moe_intermediate_size, ops::MoeActivation::kRelu2, options),
      shared_experts(c.hidden_size, c.moe_shared_expert_intermediate_size, c.mlp_bias, options) {
  if (c.moe_latent_size > 0) {
    fc1_latent_proj.emplace(c.hidden_size, c.moe_latent_size, c.mlp_bias, options);
    fc2_latent_proj.emplace(c.moe_latent_size, c.hidden_size, c.mlp_bias, options);
  }
}

at::Tensor MoeBlock::operator()(const at::Tensor& x, at::Tensor* load) const {
  const at::Tensor flat = x.reshape({-1, x.size(-1)}); // [N, H]
  const auto route = gate(flat);                       // top-k experts, fp32 weights
  if (load != nullptr) {
    c10::NoGradGuard no_grad;
    *load = at::bincount(route.indices.flatten(), {}, experts.num_experts());
  }
  at::Tensor h = fc1_latent_proj ? (*fc1_latent_proj)(flat) : flat; // [N, Lat]
  h = experts(h, route);
  if (fc2_latent_proj) h = (*fc2_latent_proj)(h); // [N, H]
  return h.view(x.sizes()) + shared_experts(x);
}

void MoeBlock::init(double std) {
  gate.init(std);
  experts.init(std);
  if (fc1_latent_proj) fc1_latent_proj->init(std);
  if (fc2_latent_proj) fc2_latent_proj->init(std);
  shared_experts.init(std);
}

Block::Block(const Config& c, BlockType type_, const at::TensorOptions& options)
    : type(type_), norm(c.hidden_size, c.layer_norm_epsilon, options) {
  switch (type) {
    case BlockType::kMamba:
      mamba.emplace(nn::Mamba2MixerConfig{.hidden = c.hidden_size,
                                          .num_heads = c.mamba_num_heads,
                                          .head_dim = c.mamba_head_dim,
                                          .state_size = c.ssm_state_size,
                                          .n_groups = c.n_groups,
                                          .conv_kernel = c.conv_kernel,
                                          .chunk_size = c.chunk_size,
                                          .conv_bias = c.use_conv_bias,
                                          .proj_bias = c.use_bias,
                                          .norm_eps = c.layer_norm_epsilon,
                                          .dt_min = c.time_step_min},
                    options);
      break;
    case BlockType::kAttention:
      attention.emplace(nn::GqaAttentionConfig{.hidden = c.hidden_size,
                                               .num_heads = c.num_attention_heads,
                                               .num_kv_heads = c.num_key_value_heads,
                                               .head_dim = c.head_dim},
                        options);
      break;
    case BlockType::kMlp:
      mlp.emplace(c.hidden_size, c.intermediate_size, c.mlp_bias, options);
      break;
    case BlockType::kMoe:
      moe.emplace(c, options);
      break;
  }
}

at::Tensor Block::operator()(const at::Tensor& x, const nn::SequenceLayout& layout,
                             at::Tensor* load) const {
  const at::Tensor h = norm(x);
  switch (type) {
    case BlockType::kMamba:
      return x + (*mamba)(h, layout);
    case BlockType::kAttention:
      return x + (*attention)(h, layout, /*rope=*/nullptr);
    case BlockType::kMlp:
      return x + (*mlp)(h);
    case BlockType::kMoe:
      return x + (*moe)(h, load);
  }
  return x;
}

at::Tensor Block::operator()(const at::Tensor& x, const nn::CacheStep& step, nn::KvCache& kv,
                             nn::Mamba2State& state) const {
  const at::Tensor h = norm(x);
  switch (type) {
    case BlockType::kMamba:
      return x + mamba->cached(h, step, state);
    case BlockType::kAttention:
      return x + nn::gqa_attention_cached(*attention, h, step, kv, /*rope=*/nullptr);
    case BlockType::kMlp:
      return x + (*mlp)(h);
    case BlockType::kMoe:
      return x + (*moe)(h, nullptr);
  }
  return x;
}

void Block::init(const Config& c) {
  const double std = c.initializer_range;
  if (mamba) {
    mamba->init(std, c.time_step_min, c.time_step_max, c.time_step_floor);
    if (c.rescale_prenorm_residual) {
      // HF: kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), / sqrt(layers).
      c10::NoGradGuard no_grad;
      const double bound = 1.0 / std::sqrt(static_cast<double>(mamba->out_proj.weight.size(1)));
      mamba->out_proj.weight.uniform_(-bound, bound).div_(std::sqrt(c.num_hidden_layers()));
    }
  }
  if (attention) attention->init(std);
  if (mlp) mlp->init(std);
  if (moe) moe->init(std);
}

void Block::collect(nn::NamedTensors& out, const std::string& prefix) const {
  nn::add_named(out, prefix, "norm.weight", norm.weight);
  const std::string m = prefix + "mixer.";
  if (mamba) mamba->collect(out, m);
  if (attention) attention->collect(out, m);
  if (mlp) mlp->collect(out, m);
  if (moe) {
    moe->gate.collect(out, m + "gate.");
    nn::add_named(out, m, "experts.up_proj", moe->experts.w_up);
    nn::add_named(out, m, "experts.down_proj", moe->experts.w_down);
    if (moe->fc1_latent_proj) moe->fc1_latent_proj->collect(out, m + "fc1_latent_proj.");
    if (moe->fc2_latent_proj) moe->fc2_latent_proj->collect(out, m + "fc2_latent_proj.");
    moe->shared_experts.collect(out, m + "shared_experts.");
  }
}

MtpSublayer::MtpSublayer(const Config& c, BlockType type, bool fusion, bool final_norm,
                         const at::TensorOptions& options)
    : block(c, type, options) {
  if (fusion) {
    enorm.emplace(c.hidden_size, c.layer_norm_epsilon, options);
    hnorm.emplace(c.hidden_size, c.layer_norm_epsilon, options);
    eh_proj.emplace(2 * c.hidden_size, c.hidden_size, /*bias=*/false, options);
  }
  if (final_norm) final_layernorm.emplace(c.hidden_size, c.layer_norm_epsilon, options);
}

at::Tensor MtpSublayer::operator()(const at::Tensor& h, const at::Tensor& embeds,
                                   const nn::SequenceLayout& layout, at::Tensor* load) const {
  at::Tensor x = h;
  if (eh_proj) x = (*eh_proj)(at::cat({(*enorm)(embeds), (*hnorm)(h)}, -1)); // [..., H]
  x = block(x, layout, load);
  return final_layernorm ? (*final_layernorm)(x) : x;
}

void MtpSublayer::init(const Config& c) {
  block.init(c);
  if (eh_proj) eh_proj->init(c.initializer_range);
}

void MtpSublayer::collect(nn::NamedTensors& out, const std::string& prefix) const {
  block.collect(out, prefix);
  if (enorm) nn::add_named(out, prefix, "enorm.weight", enorm->weight);
  if (hnorm) nn::add_named(out, prefix, "hnorm.weight", hnorm->weight);
  if (eh_proj) eh_proj->collect(out, prefix + "eh_proj.");
  if (final_layernorm)
    nn::add_named(out, prefix, "final_layernorm.weight", final_layernorm->weight);
}

} // namespace kiln::models::nemotron_v3
