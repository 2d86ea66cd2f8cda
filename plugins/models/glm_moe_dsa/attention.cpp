#include "attention.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/ops/rope.h"
#include "kiln/sdk/ops/sparse_mla.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

namespace kiln::models::glm_moe_dsa {
namespace {

// HF builds both MLA norms without an eps argument: GlmMoeDsaRMSNorm's default, not rms_norm_eps.
constexpr double kMlaNormEps = 1e-6;

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The absorbed query [N, H, latent + rope] = [q_nope W_kc | RoPE(q_pe)] from q [N, H, nope + rope]
// and W_kc [H, nope, latent], both parts written into one buffer (the latent part by a batched
// GEMM whose output is that buffer's strided view), and in backward both parts of dq likewise:
// the RoPE part's gradient is the inverse rotation, RoPE with -sin. Autograd through matmul, rope
// and cat would copy the query and its gradient several times over (a transposed GEMM output,
// the cat, the cat's and the narrows' backward).
class AbsorbQuery : public torch::autograd::Function<AbsorbQuery> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& w_kc,
                            const at::Tensor& cos, const at::Tensor& sin, int64_t nope) {
    const int64_t rope = q.size(2) - nope, latent = w_kc.size(2);
    at::Tensor out = at::empty({q.size(0), q.size(1), latent + rope}, q.options());
    at::Tensor out_latent = out.narrow(2, 0, latent).transpose(0, 1); // [H, N, latent] view
    at::bmm_out(out_latent, q.narrow(2, 0, nope).transpose(0, 1), w_kc);
    out.narrow(2, latent, rope)
        .copy_(ops::rope(q.narrow(2, nope, rope), cos, sin, ops::RopeStyle::kInterleaved));
    ctx->save_for_backward({q, w_kc, cos, sin});
    ctx->saved_data["nope"] = nope;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &w_kc = saved[1];
    const int64_t nope = ctx->saved_data["nope"].toInt();
    const int64_t rope = q.size(2) - nope, latent = w_kc.size(2);
    const at::Tensor& d_out = grads[0];
    const at::Tensor d_latent = d_out.narrow(2, 0, latent).transpose(0, 1); // [H, N, latent]
    at::Tensor d_q = at::empty_like(q, at::MemoryFormat::Contiguous);
    at::Tensor d_nope = d_q.narrow(2, 0, nope).transpose(0, 1); // [H, N, nope] view
    at::bmm_out(d_nope, d_latent, w_kc.transpose(1, 2));
    d_q.narrow(2, nope, rope)
        .copy_(ops::rope(d_out.narrow(2, latent, rope), saved[2], -saved[3],
                         ops::RopeStyle::kInterleaved));
    const at::Tensor d_w_kc = at::bmm(q.narrow(2, 0, nope).permute({1, 2, 0}), d_latent);
    return {d_q, d_w_kc, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

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
  const at::Tensor compressed = kv_a_proj_with_mqa(x);                        // [N, latent + rope]
  const at::Tensor kv_pass = kv_a_layernorm(compressed.narrow(1, 0, latent)); // [N, latent]
  const at::Tensor k_rot = ops::rope(compressed.narrow(1, latent, rope_dim).unsqueeze(1), cos, sin,
                                     ops::RopeStyle::kInterleaved); // [N, 1, rope]

  // Absorption: kv_b_proj.weight viewed [H, nope + v, latent] holds each head's key (W_kc) and
  // value (w_vc) up-projections; q_nope . (W_kc kv) = (W_kc^T q_nope) . kv.
  const at::Tensor w_kc = kv_b_proj.weight.view({heads, nope + v_dim, latent}).narrow(1, 0, nope);
  m.q_absorbed = AbsorbQuery::apply(q, w_kc, cos, sin, nope); // [N, H, latent + rope]
  m.kv_latent = at::cat({kv_pass.unsqueeze(1), k_rot}, -1);   // [N, 1, latent + rope]
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
