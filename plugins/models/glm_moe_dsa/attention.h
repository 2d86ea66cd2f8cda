// GLM-5 multi-head latent attention (HF GlmMoeDsaAttention) in the absorbed sparse form:
// compressed query and key/value latents, interleaved RoPE on the rope slice, each head's key
// up-projection folded into its query and its value up-projection applied after attention, and
// ops::sparse_mla over the keys the layer's indexer (or, on "shared" layers, the last full
// layer's) selected. The same code runs a forward over whole sequences and a cached forward
// (generation), where the keys are the cache's rows.
#pragma once

#include "cache.h"
#include "config.h"
#include "indexer.h"

#include "kiln/nn/linear.h"
#include "kiln/nn/norm.h"

#include <optional>
#include <utility>

namespace kiln::models::glm_moe_dsa {

/// What one attention call returns besides its output.
struct AttentionResult {
  at::Tensor output;     ///< [N, hidden]
  at::Tensor topk;       ///< int32 [N, 1, K]: the selection this layer used
  at::Tensor indexer_kl; ///< float32 scalar, only when asked for and the layer has an indexer
};

/// The per-token tensors of the absorbed form (ops::sparse_mla's inputs).
struct MlaProjections {
  at::Tensor q_resid;    ///< [N, q_lora_rank]: q_a_layernorm(q_a_proj(x)), the indexer's input
  at::Tensor q_absorbed; ///< [N, H, latent + rope]: [q_nope W_kc | RoPE'd q_pe]
  at::Tensor kv_latent;  ///< [N, 1, latent + rope]: [kv_a_layernorm(compressed) | RoPE'd k_pe]
};

struct MlaAttention {
  nn::Linear q_a_proj;            ///< [q_lora_rank, hidden] (+ bias iff attention_bias)
  nn::RmsNorm q_a_layernorm;      ///< [q_lora_rank], eps 1e-6
  nn::Linear q_b_proj;            ///< [heads * (nope + rope), q_lora_rank]
  nn::Linear kv_a_proj_with_mqa;  ///< [kv_lora_rank + rope, hidden] (+ bias)
  nn::RmsNorm kv_a_layernorm;     ///< [kv_lora_rank], eps 1e-6
  nn::Linear kv_b_proj;           ///< [heads * (nope + v), kv_lora_rank]
  nn::Linear o_proj;              ///< [hidden, heads * v] (+ bias)
  std::optional<Indexer> indexer; ///< "full" layers only
  int64_t heads = 0, nope = 0, rope_dim = 0, v_dim = 0, latent = 0;
  double scaling = 0;

  MlaAttention(const Config& config, int64_t layer, const at::TensorOptions& options);

  /// x [N, hidden] (normed layer input), rope (cos, sin) float32 [N, rope_dim / 2].
  /// `shared_topk`: the running selection, used when the layer has no indexer. With
  /// `indexer_kl`, also the layer's indexer loss (full layers).
  AttentionResult operator()(const at::Tensor& x, const TokenLayout& layout,
                             const std::pair<at::Tensor, at::Tensor>& rope,
                             const at::Tensor& shared_topk, bool indexer_kl) const;
  /// The same attention in a cached forward: stores the new tokens' kv_latent (and, on a full
  /// layer, their index keys) in `cache` at step.slot, then selects and attends over the cache's
  /// rows. `layout` is the step's cached TokenLayout (indexer.h); the returned and the given
  /// selections index flat cache rows. Inference only (no gradient, no indexer loss).
  AttentionResult operator()(const at::Tensor& x, const TokenLayout& layout,
                             const std::pair<at::Tensor, at::Tensor>& rope,
                             const at::Tensor& shared_topk, const nn::CacheStep& step,
                             LayerCache& cache) const;
  /// Projections, norms, RoPE and absorption of x [N, hidden].
  MlaProjections project(const at::Tensor& x, const std::pair<at::Tensor, at::Tensor>& rope) const;
  /// o_proj(sparse_mla(q_absorbed, kv_latent, topk)): [N, hidden]; topk indexes kv_latent's rows.
  at::Tensor attend(const at::Tensor& q_absorbed, const at::Tensor& kv_latent,
                    const at::Tensor& topk) const;
  void init(double std);
  void collect(nn::NamedTensors& out, const std::string& prefix) const;
};

} // namespace kiln::models::glm_moe_dsa
