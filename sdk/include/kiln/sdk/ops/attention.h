// Op `attention`: causal scaled-dot-product attention with grouped-query heads (GQA), in a padded
// batch layout (BSHD) or a packed variable-length layout (THD).
//
//   for each sequence, query i (of Sq) at position Sk - Sq + i, head h, kv head j = h / (Hq / Hkv):
//   s[i, t] = (q[i, h] . k[t, j]) * softmax_scale          for t <= Sk - Sq + i (causal)
//   out[i, h] = sum_t softmax_t(s[i, :])[t] * v[t, j]
//
// The causal diagonal is aligned bottom-right: the Sq queries are the LAST Sq positions of the Sk
// keys (Sq == Sk in training and prefill; Sq < Sk when decoding against a KV cache). Heads map to
// kv heads in contiguous blocks, as HF's repeat_kv. No padding mask, no sliding window, no
// dropout: ragged batches use THD.
//
// Layouts:
//   BSHD: q [B, Sq, Hq, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv], Sk >= Sq -> out [B, Sq, Hq, Dv]
//   THD:  q [Tq, Hq, D], k [Tk, Hkv, D], v [Tk, Hkv, Dv] with `cu_seqlens` (int32 [N+1], query
//         offsets) and optional `cu_seqlens_k` (int32 [N+1], key offsets; undefined = cu_seqlens,
//         i.e. Tq == Tk, the packed-training case) -> out [Tq, Hq, Dv]. Tokens of different
//         sequences never attend to each other; sequence n has Sq_n = cu_seqlens[n+1] -
//         cu_seqlens[n] queries and Sk_n >= Sq_n keys. `max_seqlen` must bound the longest Sq_n
//         and `max_seqlen_k` the longest Sk_n (required with cu_seqlens_k; without it 0 means
//         max_seqlen): kernels size their grids with them.
//
// Precision (HF's sdpa / eager numerics): q.k products accumulate in float32; the softmax is
// computed in float32 (eager: softmax(dtype=float32).to(bf16) @ V; flash/sdpa kernels do the
// same on-chip); the probabilities may be rounded to the input dtype before the product with V,
// which accumulates in float32; out is rounded to q's dtype once.
// Differentiable in q, k and v.
// Backends may assume (checked here): q, k, v have the layout's rank and one floating dtype
// (float32, bfloat16, float16); B, Hkv and D agree; Hq % Hkv == 0; BSHD Sk >= Sq; THD cu_seqlens
// are int32 [N+1] with equal N, max_seqlen >= 1 (max_seqlen_k >= max_seqlen when cu_seqlens_k is
// given); all on one device. NOT checked on accelerators
// (it would need a sync), so callers guarantee: cu_seqlens start at 0, are non-decreasing, end at
// Tq (Tk), Sk_n >= Sq_n, and max_seqlen bounds every sequence. Strides are arbitrary.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kiln::ops {

/// Arguments of `attention`; device and dtype of q decide dispatch.
struct AttentionArgs {
  at::Tensor q;             ///< BSHD [B, Sq, Hq, D] or THD [Tq, Hq, D]; float32/bfloat16/float16
  at::Tensor k;             ///< BSHD [B, Sk, Hkv, D] or THD [Tk, Hkv, D]; q's dtype
  at::Tensor v;             ///< BSHD [B, Sk, Hkv, Dv] or THD [Tk, Hkv, Dv]; q's dtype
  at::Tensor cu_seqlens;    ///< THD only (required there, absent in BSHD): int32 [N+1]
  at::Tensor cu_seqlens_k;  ///< THD only, optional: int32 [N+1]; undefined = cu_seqlens
  int64_t max_seqlen = 0;   ///< THD only: >= the longest query sequence
  int64_t max_seqlen_k = 0; ///< THD only: >= the longest key sequence; 0 = max_seqlen
  double softmax_scale = 0; ///< > 0; usually head_dim^-0.5 (GLM-5: mscale^2 * qk_head_dim^-0.5)
  bool varlen() const { return cu_seqlens.defined(); }
  /// THD: the key offsets (cu_seqlens_k, or cu_seqlens when absent) and their bound.
  const at::Tensor& key_cu_seqlens() const {
    return cu_seqlens_k.defined() ? cu_seqlens_k : cu_seqlens;
  }
  int64_t key_max_seqlen() const { return max_seqlen_k > 0 ? max_seqlen_k : max_seqlen; }
  c10::Device device() const { return q.device(); }
  c10::ScalarType dtype() const { return q.scalar_type(); }
};

/// Traits of op `attention`.
struct AttentionOp {
  static constexpr const char* kName = "attention";
  using Args = AttentionArgs;
  using Result = at::Tensor; ///< BSHD [B, Sq, Hq, Dv] or THD [Tq, Hq, Dv]; q's dtype
};

/// Validates and dispatches `attention` (layout chosen by whether cu_seqlens is defined).
KILN_SDK_API at::Tensor attention(const AttentionArgs& args);

/// BSHD causal GQA attention: q [B, Sq, Hq, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv].
KILN_SDK_API at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  double softmax_scale);

} // namespace kiln::ops
