#include "indexer.h"

#include "kiln/nn/checkpoint.h"
#include "kiln/nn/module.h"
#include "kiln/sdk/ops/indexer_topk.h"
#include "kiln/sdk/ops/rope.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace kiln::models::glm_moe_dsa {
namespace {

constexpr double kKNormEps = 1e-6;                   // HF: nn.LayerNorm(index_head_dim, eps=1e-6)
constexpr int64_t kKlChunkBudget = int64_t{1} << 28; // bytes of one KL chunk's temporaries

// KL(p || softmax(I)) summed over rows [c] of one chunk; see indexer_kl_loss.
at::Tensor chunk_kl(const at::Tensor& index_q, const at::Tensor& index_k, const at::Tensor& index_w,
                    const at::Tensor& q_main, const at::Tensor& kv_main, const at::Tensor& selected,
                    double scale) {
  const int64_t c = selected.size(0);
  const int64_t slots = selected.size(1);
  const at::Tensor valid = selected.ge(0); // [c, K]
  const at::Tensor safe = selected.clamp_min(0).to(at::kLong).flatten();
  const at::Tensor row_valid = valid.any(-1, /*keepdim=*/true); // [c, 1]
  // Only a row with something selected masks its unused slots; an empty row keeps finite
  // scores (p = 0 there, so it adds nothing and passes no NaN to backward).
  const at::Tensor masked = valid.logical_not() & row_valid; // [c, K]
  constexpr double kInf = std::numeric_limits<double>::infinity();

  at::Tensor p; // the target: main attention over the selected keys, summed over heads, L1-normed
  {
    const c10::NoGradGuard no_grad;
    const at::Tensor rows =
        kv_main.select(1, 0).index_select(0, safe).view({c, slots, -1}).to(at::kFloat);
    at::Tensor s = at::matmul(q_main.to(at::kFloat), rows.transpose(1, 2)).mul_(scale); // [c,H,K]
    s.masked_fill_(masked.unsqueeze(1), -kInf);
    p = at::softmax(s, -1).sum(1); // [c, K]
    p.masked_fill_(valid.logical_not(), 0.0);
    p.div_(p.sum(-1, /*keepdim=*/true).clamp_min(std::numeric_limits<float>::min()));
  }
  const at::Tensor keys = index_k.index_select(0, safe).view({c, slots, -1}).to(at::kFloat);
  const at::Tensor relu_qk = at::relu(at::matmul(index_q.to(at::kFloat), keys.transpose(1, 2)));
  const at::Tensor score = at::matmul(index_w.unsqueeze(1), relu_qk).squeeze(1); // [c, K]
  const at::Tensor log_q = at::log_softmax(score.masked_fill(masked, -kInf), -1);
  // p * (log p - log q), with 0 where p = 0 (unselected slots, empty rows).
  const at::Tensor terms = at::xlogy(p, p) - p * log_q.masked_fill(p.eq(0), 0.0);
  return terms.sum();
}

} // namespace

Indexer::Indexer(const Config& c, const at::TensorOptions& options)
    : wq_b(c.q_lora_rank, c.index_n_heads * c.index_head_dim, /*bias=*/false, options),
      wk(c.hidden_size, c.index_head_dim, /*bias=*/false, options),
      k_norm_weight(nn::make_parameter({c.index_head_dim}, options)),
      k_norm_bias(nn::make_parameter({c.index_head_dim}, options)),
      weights_proj(c.hidden_size, c.index_n_heads, /*bias=*/false, options),
      heads(c.index_n_heads),
      dim(c.index_head_dim),
      topk(c.index_topk) {
  nn::init_constant(k_norm_weight, 1.0);
  nn::init_constant(k_norm_bias, 0.0);
}

IndexerProjections Indexer::project(const at::Tensor& x, const at::Tensor& q_resid,
                                    const std::pair<at::Tensor, at::Tensor>& rope) const {
  const int64_t n = x.size(0);
  const auto& [cos, sin] = rope; // the rope slice is the first qk_rope_head_dim channels
  IndexerProjections p;
  p.q = wq_b(q_resid).view({n, heads, dim}); // [N, H_I, D_I]
  p.q = ops::rope(p.q, cos, sin, ops::RopeStyle::kInterleaved);
  at::Tensor k = at::layer_norm(wk(x), {dim}, k_norm_weight, k_norm_bias, kKNormEps); // [N, D_I]
  p.k = ops::rope(k.view({n, 1, dim}), cos, sin, ops::RopeStyle::kInterleaved).view({n, dim});
  // HF: weights_proj(x).float() * H_I^-0.5, and relu(q.k) * D_I^-0.5, folded in here.
  p.weights = weights_proj(x).to(at::kFloat) * std::pow(static_cast<double>(heads), -0.5);
  p.weights = p.weights * std::pow(static_cast<double>(dim), -0.5); // [N, H_I]
  return p;
}

at::Tensor Indexer::select(const IndexerProjections& p, const at::Tensor& keys,
                           const TokenLayout& layout) const {
  const int64_t width = std::max<int64_t>(1, std::min(topk, layout.max_len)); // HF: min(topk, T)
  return ops::indexer_topk(p.q.detach(), keys.detach(), p.weights.detach(), layout.cu_seqlens,
                           width, layout.query_rows, layout.starts);
}

void Indexer::init(double std) {
  wq_b.init(std);
  wk.init(std);
  weights_proj.init(std);
  nn::init_constant(k_norm_weight, 1.0);
  nn::init_constant(k_norm_bias, 0.0);
}

void Indexer::collect(nn::NamedTensors& out, const std::string& prefix) const {
  wq_b.collect(out, prefix + "wq_b.");
  wk.collect(out, prefix + "wk.");
  nn::add_named(out, prefix, "k_norm.weight", k_norm_weight);
  nn::add_named(out, prefix, "k_norm.bias", k_norm_bias);
  weights_proj.collect(out, prefix + "weights_proj.");
}

at::Tensor indexer_kl_loss(const IndexerProjections& indexer, const at::Tensor& q_absorbed,
                           const at::Tensor& kv_latent, const at::Tensor& topk,
                           double softmax_scale) {
  const int64_t n = topk.size(0);
  const int64_t slots = topk.size(2);
  const int64_t per_token = slots * (8 * (q_absorbed.size(2) + indexer.k.size(1)) +
                                     12 * (q_absorbed.size(1) + indexer.q.size(1)) + 16);
  const int64_t step = std::clamp<int64_t>(kKlChunkBudget / std::max<int64_t>(per_token, 1), 1,
                                           std::max<int64_t>(n, 1));
  const at::Tensor q_main = q_absorbed.detach();
  const at::Tensor kv_main = kv_latent.detach();
  at::Tensor total = at::zeros({}, q_absorbed.options().dtype(at::kFloat));
  for (int64_t t0 = 0; t0 < n; t0 += step) {
    const int64_t c = std::min(step, n - t0);
    const at::Tensor selected = topk.narrow(0, t0, c).select(1, 0);
    const at::Tensor q_chunk = q_main.narrow(0, t0, c);
    auto chunk = [=](const std::vector<at::Tensor>& in) {
      return std::vector<at::Tensor>{
          chunk_kl(in[0], in[1], in[2], q_chunk, kv_main, selected, softmax_scale)};
    };
    total = total + nn::checkpoint(chunk, {indexer.q.narrow(0, t0, c), indexer.k,
                                           indexer.weights.narrow(0, t0, c)})[0];
  }
  const at::Tensor rows = topk.select(1, 0).ge(0).any(-1).sum().to(at::kFloat);
  return total / rows.clamp_min(1.0);
}

} // namespace kiln::models::glm_moe_dsa
