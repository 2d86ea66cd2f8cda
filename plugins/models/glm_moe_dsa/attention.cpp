#include "attention.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/ops/rope.h"
#include "kiln/sdk/ops/sparse_mla.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

namespace kiln::models::glm_moe_dsa {
namespace {

// HF builds both MLA norms without an eps argument: GlmMoeDsaRMSNorm's default, not rms_norm_eps.
constexpr double kMlaNormEps = 1e-6;

} // namespace

MlaAttention::MlaAttention(const Config& c, int64_t layer, const at::TensorOptions& options)
    : q_a_proj(c.hidden_size, c.q_lora_rank, c.attention_bias, options),
      q_a_layernorm(c.q_lora_rank, kMlaNormEps, options),
      q_b_proj(c.q_lora_rank, c.num_attention_heads * c.qk_head_dim(), /*bias=*/false, options),
      kv_a_proj_with_mqa(c.hidden_size, c.kv_lora_rank + c.qk_rope_head_dim, c.attention_bias,
                         options),
      kv_a_layernorm(c.kv_lora_rank, kMlaNormEps, options),
      kv_b_proj(c.kv_lora_rank, c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim),
                /*bias=*/false, options),
      o_proj(c.num_attention_heads * c.v_head_dim, c.hidden_size, c.attention_bias, options),
      heads(c.num_attention_heads),
      nope(c.qk_nope_head_dim),
      rope_dim(c.qk_rope_head_dim),
      v_dim(c.v_head_dim),
      latent(c.kv_lora_rank),
      scaling(1.0 / std::sqrt(static_cast<double>(c.qk_head_dim()))) {
  if (c.has_indexer(layer)) indexer.emplace(c, options);
}

MlaProjections MlaAttention::project(const at::Tensor& x,
                                     const std::pair<at::Tensor, at::Tensor>& rope) const {
  const int64_t n = x.size(0);
  const auto& [cos, sin] = rope;
  MlaProjections m;
  m.q_resid = q_a_layernorm(q_a_proj(x));                                     // [N, q_lora]
  const at::Tensor q = q_b_proj(m.q_resid).view({n, heads, nope + rope_dim}); // [N, H, nope + rope]
  const at::Tensor q_rot =
      ops::rope(q.narrow(2, nope, rope_dim), cos, sin, ops::RopeStyle::kInterleaved);
  const at::Tensor compressed = kv_a_proj_with_mqa(x);                        // [N, latent + rope]
  const at::Tensor kv_pass = kv_a_layernorm(compressed.narrow(1, 0, latent)); // [N, latent]
  const at::Tensor k_rot = ops::rope(compressed.narrow(1, latent, rope_dim).unsqueeze(1), cos, sin,
                                     ops::RopeStyle::kInterleaved); // [N, 1, rope]

  // Absorption: kv_b_proj.weight viewed [H, nope + v, latent] holds each head's key (W_kc) and
  // value (w_vc) up-projections; q_nope . (W_kc kv) = (W_kc^T q_nope) . kv.
  const at::Tensor w_kc = kv_b_proj.weight.view({heads, nope + v_dim, latent}).narrow(1, 0, nope);
  const at::Tensor q_nope = q.narrow(2, 0, nope).transpose(0, 1);       // [H, N, nope]
  const at::Tensor q_latent = at::matmul(q_nope, w_kc).transpose(0, 1); // [N, H, latent]
  m.q_absorbed = at::cat({q_latent, q_rot}, -1);                        // [N, H, latent + rope]
  m.kv_latent = at::cat({kv_pass.unsqueeze(1), k_rot}, -1);             // [N, 1, latent + rope]
  return m;
}

at::Tensor MlaAttention::attend(const at::Tensor& q_absorbed, const at::Tensor& kv_latent,
                                const at::Tensor& topk) const {
  const at::Tensor w_vc =
      kv_b_proj.weight.view({heads, nope + v_dim, latent}).narrow(1, nope, v_dim); // [H, v, latent]
  const at::Tensor o = ops::sparse_mla(q_absorbed, kv_latent, topk, w_vc, scaling);
  return o_proj(o.flatten(1)); // [N, H * v] -> [N, hidden]
}

namespace {

// The selection a "shared" layer reuses.
const at::Tensor& shared_selection(const at::Tensor& shared_topk) {
  KILN_CHECK_USER(shared_topk.defined(),
                  "glm_moe_dsa: a \"shared\" indexer layer needs the top-k of an earlier "
                  "\"full\" layer; make layer 0 \"full\" in indexer_types, or pass the previous "
                  "pipeline stage's selection as ForwardInput.extra[\"topk_indices\"]");
  return shared_topk;
}

} // namespace

AttentionResult MlaAttention::operator()(const at::Tensor& x, const TokenLayout& layout,
                                         const std::pair<at::Tensor, at::Tensor>& rope,
                                         const at::Tensor& shared_topk, bool indexer_kl) const {
  const MlaProjections m = project(x, rope);
  AttentionResult result;
  std::optional<IndexerProjections> projections;
  if (indexer) {
    // HF runs the indexer under no_grad: the LM loss never reaches it. Its own loss does, and
    // reads detached inputs so that it trains only the indexer.
    const bool with_grad = indexer_kl && c10::GradMode::is_enabled();
    const c10::AutoGradMode grad_mode(with_grad);
    projections = indexer->project(x.detach(), m.q_resid.detach(), rope);
    result.topk = indexer->select(*projections, projections->k, layout);
  } else {
    result.topk = shared_selection(shared_topk);
  }
  result.output = attend(m.q_absorbed, m.kv_latent, result.topk);
  if (indexer_kl && projections) {
    result.indexer_kl =
        indexer_kl_loss(*projections, m.q_absorbed, m.kv_latent, result.topk, scaling);
  }
  return result;
}

AttentionResult MlaAttention::operator()(const at::Tensor& x, const TokenLayout& layout,
                                         const std::pair<at::Tensor, at::Tensor>& rope,
                                         const at::Tensor& shared_topk, const nn::CacheStep& step,
                                         LayerCache& cache) const {
  const MlaProjections m = project(x, rope);
  cache.latent.store(step, m.kv_latent);
  AttentionResult result;
  if (indexer) {
    const IndexerProjections projections = indexer->project(x, m.q_resid, rope);
    cache.index_keys.store(step, projections.k);
    result.topk = indexer->select(projections, cache.index_keys.data, layout);
  } else {
    result.topk = shared_selection(shared_topk);
  }
  result.output = attend(m.q_absorbed, cache.latent.data, result.topk);
  return result;
}

void MlaAttention::init(double std) {
  q_a_proj.init(std);
  q_b_proj.init(std);
  kv_a_proj_with_mqa.init(std);
  kv_b_proj.init(std);
  o_proj.init(std);
  if (indexer) indexer->init(std);
}

void MlaAttention::collect(nn::NamedTensors& out, const std::string& prefix) const {
  q_a_proj.collect(out, prefix + "q_a_proj.");
  nn::add_named(out, prefix, "q_a_layernorm.weight", q_a_layernorm.weight);
  q_b_proj.collect(out, prefix + "q_b_proj.");
  kv_a_proj_with_mqa.collect(out, prefix + "kv_a_proj_with_mqa.");
  nn::add_named(out, prefix, "kv_a_layernorm.weight", kv_a_layernorm.weight);
  kv_b_proj.collect(out, prefix + "kv_b_proj.");
  o_proj.collect(out, prefix + "o_proj.");
  if (indexer) indexer->collect(out, prefix + "indexer.");
}

} // namespace kiln::models::glm_moe_dsa
