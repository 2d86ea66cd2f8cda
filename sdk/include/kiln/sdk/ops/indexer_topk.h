// Op `indexer_topk`: the DeepSeek Sparse Attention "lightning indexer" of GLM-5 with its causal
// top-k selection, on packed (THD) sequences. The contract is that of NeMo AutoModel's
// `tilelang_indexer_topk` (shared/seeds/002); the torch reference reproduces HF's
// `GlmMoeDsaIndexer` selections.
//
//   score[q, t] = sum_h head_weights[q, h] * relu(index_q[q, h] . index_k[t])     (float32)
//   out[q, 0, :] = the `topk` keys t with the largest score[q, t] among the keys q may see,
//                  padded with -1 when q sees fewer than `topk` keys.
//
// Visibility: query row q sits at token position p_q = query_indices[q] (or q when
// query_indices is absent) of index_k's token layout. Document n occupies the key positions
// [start_n, start_n + len_n) with len_n = cu_seqlens[n+1] - cu_seqlens[n] and start_n =
// cu_seqlens_padded[n] when given (context parallelism pads every document to a CP multiple;
// positions past a document's real length are padding) or cu_seqlens[n] otherwise. A query at
// p_q in document n sees exactly the keys t with start_n <= t <= p_q: its own document up to
// itself. A query that lies in no document's real range (padding) sees nothing (a row of -1).
//
// head_weights must already fold in every scale: HF computes relu(q.k * D_I^-0.5) and weights
// weights_proj(x) * H_I^-0.5, so pass head_weights = weights_proj(x).float() * H_I^-0.5 * D_I^-0.5.
//
// Output: int32 [Tq, 1, topk] of positions in index_k's token layout, -1 for unused slots; the
// width is always `topk` (HF uses min(index_topk, T) columns; its extra picks are masked keys,
// which are -1 here). The order of the selected keys within a row is unspecified; valid entries of
// a row are distinct. Ties between equal scores (e.g. exact zeros after the ReLU) are broken in an
// implementation-defined way: the torch reference uses at::topk as HF does (models.md §1.8).
// Precision: q.k products accumulate in float32 from the input dtype (HF upcasts the bf16
// projections and multiplies in float32), ReLU, weighting and the sum over heads are float32.
// Not differentiable: the result is integer and the inputs are treated as constants (HF runs the
// indexer under no_grad).
// Backends may assume (checked here): index_q [Tq, H_I, D_I] and index_k [Tk, D_I] with one dtype
// (bfloat16, float16 or float32); head_weights float32 [Tq, H_I]; cu_seqlens int32 [N+1];
// cu_seqlens_padded, when given, int32 [N+1]; query_indices, when given, int32 [Tq]; without
// query_indices Tq == Tk; topk >= 1; all on one device. NOT checked on accelerators: cu_seqlens
// values (start at 0, non-decreasing, last <= Tk), padded starts and query positions within
// [0, Tk). Strides are arbitrary.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kiln::ops {

/// Arguments of `indexer_topk`; device and dtype of index_q decide dispatch.
struct IndexerTopkArgs {
  at::Tensor index_q;           ///< [Tq, H_I, D_I]; bfloat16 (float16, float32); RoPE applied
  at::Tensor index_k;           ///< [Tk, D_I]; index_q's dtype; k_norm and RoPE applied
  at::Tensor head_weights;      ///< [Tq, H_I]; float32; all scales folded in (see above)
  at::Tensor cu_seqlens;        ///< int32 [N+1]: real document lengths, compact offsets
  int64_t topk = 0;             ///< >= 1; columns of the output (GLM-5: index_topk = 2048)
  at::Tensor query_indices;     ///< optional int32 [Tq]: each query row's position in index_k
  at::Tensor cu_seqlens_padded; ///< optional int32 [N+1]: document starts in the padded layout
  c10::Device device() const { return index_q.device(); }
  c10::ScalarType dtype() const { return index_q.scalar_type(); }
};

/// Traits of op `indexer_topk`.
struct IndexerTopkOp {
  static constexpr const char* kName = "indexer_topk";
  using Args = IndexerTopkArgs;
  using Result = at::Tensor; ///< int32 [Tq, 1, topk]; -1 marks unused slots
};

/// Validates and dispatches `indexer_topk`. `query_indices` and `cu_seqlens_padded` may be
/// undefined.
KILN_SDK_API at::Tensor indexer_topk(const at::Tensor& index_q, const at::Tensor& index_k,
                                     const at::Tensor& head_weights, const at::Tensor& cu_seqlens,
                                     int64_t topk, const at::Tensor& query_indices = {},
                                     const at::Tensor& cu_seqlens_padded = {});

} // namespace kiln::ops
