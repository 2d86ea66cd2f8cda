// The DSA lightning indexer of a "full" GLM-5 layer (HF GlmMoeDsaIndexer): its own projections
// of the layer input and of the compressed query, interleaved RoPE on the first qk_rope_head_dim
// channels, and the causal top-k through ops::indexer_topk. Plus the DeepSeek-V3.2 indexer
// training loss (KL to the main attention), the only way gradient reaches these weights.
#pragma once

#include "config.h"

#include "kiln/nn/linear.h"

#include <utility>

namespace kiln::models::glm_moe_dsa {

/// Tokens of a forward pass, flattened to [N] rows: documents (BSHD rows or packed THD
/// documents) bounded by int32 cu_seqlens on the model's device.
///
/// A cached forward (cache.h) adds where the keys live: every key is a flat cache row (row b,
/// position p at b * max_len + p), document b is cache row b, holding the keys [starts[b],
/// starts[b] + cu_seqlens[b+1] - cu_seqlens[b]) (its old tokens, then the new ones), and new token
/// n sits at key row query_rows[n]. Selections then index the cache's flat rows.
struct TokenLayout {
  at::Tensor cu_seqlens; ///< int32 [D + 1]
  int64_t max_len = 0;   ///< the longest document (the most keys a query sees)
  at::Tensor query_rows; ///< cached only: int32 [N], each new token's flat cache row
  at::Tensor starts;     ///< cached only: int32 [D + 1], b * max_len (cache row b's first key)
};

/// The indexer's per-token tensors (index_q, index_k, head_weights as ops::indexer_topk takes
/// them).
struct IndexerProjections {
  at::Tensor q;       ///< [N, H_I, D_I], RoPE applied
  at::Tensor k;       ///< [N, D_I], LayerNorm and RoPE applied
  at::Tensor weights; ///< float32 [N, H_I]: weights_proj(x) * H_I^-0.5 * D_I^-0.5
};

struct Indexer {
  nn::Linear wq_b;          ///< [H_I * D_I, q_lora_rank]
  nn::Linear wk;            ///< [D_I, hidden]
  at::Tensor k_norm_weight; ///< LayerNorm [D_I] (eps 1e-6)
  at::Tensor k_norm_bias;   ///< [D_I]
  nn::Linear weights_proj;  ///< [H_I, hidden]
  int64_t heads = 0, dim = 0, topk = 0;

  Indexer(const Config& config, const at::TensorOptions& options);

  /// x [N, hidden] (the attention input), q_resid [N, q_lora_rank], rope (cos, sin) [N, R/2].
  IndexerProjections project(const at::Tensor& x, const at::Tensor& q_resid,
                             const std::pair<at::Tensor, at::Tensor>& rope) const;
  /// int32 [N, 1, min(index_topk, longest document)]: each token's selected keys, -1 for unused
  /// slots. `keys` [Tk, D_I]: every key the queries may see, in the layout's key rows: p.k itself
  /// (rows of N), or a cache's index keys (flat cache rows). No gradient.
  at::Tensor select(const IndexerProjections& p, const at::Tensor& keys,
                    const TokenLayout& layout) const;
  void init(double std);
  void collect(nn::NamedTensors& out, const std::string& prefix) const;
};

/// The DeepSeek-V3.2 indexer loss of one layer: the mean over tokens that select at least one
/// key of KL(p || softmax(I)) over the selected keys S, where I[s] = sum_h w_h relu(q_h . k_s) is
/// the indexer's score (differentiable in `indexer`) and p the main attention's probabilities
/// over S summed over heads and L1-normalised (computed from q_absorbed and kv_latent without
/// gradient; softmax_scale as in ops::sparse_mla). float32 scalar. Chunked over tokens; each
/// chunk is recomputed in backward (nn::checkpoint).
at::Tensor indexer_kl_loss(const IndexerProjections& indexer, const at::Tensor& q_absorbed,
                           const at::Tensor& kv_latent, const at::Tensor& topk,
                           double softmax_scale);

} // namespace kiln::models::glm_moe_dsa
