// Op `sparse_mla`: GLM-5 (DeepSeek Sparse Attention) multi-head latent attention in the absorbed
// form, reading only the keys each query selected. The contract is that of NeMo AutoModel's
// `tilelang_sparse_attention` (shared/seeds/002).
//
// With L = kv_lora_rank = w_vc.size(2) and R = Dqk - L the RoPE width (GLM-5: 512 + 64 = 576):
//   for query t, head h, over the valid (>= 0) entries j of topk_indices[t, 0, :]:
//   s_j = (q_absorbed[t, h] . kv_latent[j, 0]) * softmax_scale          (all Dqk channels)
//   o[t, h] = sum_j softmax(s)_j * kv_latent[j, 0, :L]                   (latent values, [L])
//   out[t, h] = w_vc[h] @ o[t, h]                                        ([Dv])
// where q_absorbed = cat(q_nope @ W_kc, q_pe) and kv_latent = cat(kv_a_layernorm(latent), k_pe)
// (W_kc, w_vc: the per-head key and value slices of kv_b_proj.weight viewed [H, Dn + Dv, L]).
// This equals HF's dense MLA restricted to the selected keys (HF expands K/V with kv_b_proj and
// masks the unselected ones; the results differ only in rounding, models.md §3.7).
//
// The index set IS the mask: the op applies no causal mask of its own (indexer_topk only selects
// visible keys). `-1` entries are skipped; a row with no valid entry yields zeros (no NaN) and no
// gradient. softmax_scale is the MLA scale mscale^2 / sqrt(qk_head_dim) (GLM-5: 1/16), NOT
// 1/sqrt(Dqk).
//
// Precision: q.kv products accumulate in float32; softmax in float32; the probabilities may be
// rounded to the input dtype before the product with the values (flash-style), which accumulates
// in float32; o is rounded to the input dtype, then projected by w_vc with float32 accumulation
// and rounded to the input dtype (the TileLang path computes the latent output in bf16 and
// applies w_vc as a bf16 GEMM).
// Differentiable in q_absorbed, kv_latent and w_vc (not in topk_indices).
// Backends may assume (checked here): q_absorbed [T, H, Dqk], kv_latent [Tk, 1, Dqk], w_vc
// [H, Dv, L] with 1 <= L <= Dqk, all one dtype (bfloat16, float16, float32); topk_indices int32
// [T, 1, K] with K >= 1; softmax_scale > 0; one device. NOT checked on accelerators (caller
// guarantees): every entry is -1 or in [0, Tk), and the valid entries of a row are distinct.
// Strides are arbitrary.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

namespace kiln::ops {

/// Arguments of `sparse_mla`; device and dtype of q_absorbed decide dispatch.
struct SparseMlaArgs {
  at::Tensor q_absorbed;    ///< [T, H, L + R]; bfloat16 (float16, float32)
  at::Tensor kv_latent;     ///< [Tk, 1, L + R]; q_absorbed's dtype
  at::Tensor topk_indices;  ///< int32 [T, 1, K]; rows of kv_latent, -1 = unused slot
  at::Tensor w_vc;          ///< [H, Dv, L]; q_absorbed's dtype
  double softmax_scale = 0; ///< > 0
  c10::Device device() const { return q_absorbed.device(); }
  c10::ScalarType dtype() const { return q_absorbed.scalar_type(); }
};

/// Traits of op `sparse_mla`.
struct SparseMlaOp {
  static constexpr const char* kName = "sparse_mla";
  using Args = SparseMlaArgs;
  using Result = at::Tensor; ///< [T, H, Dv]; q_absorbed's dtype
};

/// Validates and dispatches `sparse_mla`.
KILN_SDK_API at::Tensor sparse_mla(const at::Tensor& q_absorbed, const at::Tensor& kv_latent,
                                   const at::Tensor& topk_indices, const at::Tensor& w_vc,
                                   double softmax_scale);

} // namespace kiln::ops
