// Building blocks for families' caches (kiln/sdk/cache.h): where one cached forward's tokens go
// (CacheStep), per-layer token caches stored as flat rows, and cached GQA attention.
//
// Every per-token cache tensor is laid out [batch * max_len, ...]: row b, position p lives at flat
// index b * max_len + p. A forward's new tokens are written with one index_copy_ at their flat
// `slot`s, whatever the input layout, and ops that take packed tokens plus per-document offsets
// (indexer_topk's cu_seqlens_padded, sparse_mla's row indices) read the cache in place.
#pragma once

#include "kiln/nn/attention.h"
#include "kiln/sdk/cache.h"

#include <utility>
#include <vector>

namespace kiln::nn {

/// Where the tokens of one cached forward go. Host fields never need a device sync.
struct KILN_SDK_API CacheStep {
  int64_t batch = 0;          ///< cache rows
  int64_t max_len = 0;        ///< tokens per row
  bool packed = false;        ///< input [T] with cu_seqlens (prefill of empty rows), else [B, S]
  std::vector<int64_t> start; ///< host: tokens each row held before this forward
  std::vector<int64_t> count; ///< host: tokens this forward appends to each row
  int64_t max_count = 0;      ///< the largest count
  int64_t max_end = 0;        ///< the largest start + count (keys any query may see)
  bool uniform = false;       ///< every row starts at the same length (BSHD only)
  at::Tensor slot;            ///< int64 [tokens]: flat cache index of each new token
  at::Tensor positions;       ///< int64 [B, S] or [T]: each new token's position in its row
  at::Tensor cu_seqlens;      ///< int32 [B+1]: offsets of each row's new tokens, flattened
  /// Ragged appends only (BSHD, rows of different lengths): every key a new token may see, as
  /// flat cache indices row after row (int64 [sum(start + count)]), and their int32 [B+1] offsets.
  at::Tensor key_slot, cu_keys;

  /// Validates `input` against `cache` (layout, batch, room left; position_ids must be absent)
  /// and builds the step on `device`. `who` prefixes error messages (the family name).
  static CacheStep plan(const sdk::InferenceCache& cache, const sdk::ForwardInput& input,
                        c10::Device device, const std::string& who);
  /// The number of new tokens (T, or B * S).
  int64_t tokens() const;
  /// Records this step's tokens in the cache's row lengths.
  void commit(sdk::InferenceCache& cache) const { cache.advance(count); }
};

/// Flat-row storage of a per-token tensor: [batch * max_len, ...shape].
struct KILN_SDK_API TokenCache {
  at::Tensor data;

  TokenCache() = default;
  TokenCache(int64_t batch, int64_t max_len, at::IntArrayRef shape,
             const at::TensorOptions& options);
  /// Writes the step's new tokens: values [tokens, ...shape] (any leading token layout that
  /// flattens to `step.tokens()` rows).
  void store(const CacheStep& step, const at::Tensor& values);
  /// [batch, len, ...shape]: the first `len` positions of every row (a view, no copy).
  at::Tensor rows(const CacheStep& step, int64_t len) const;
  int64_t bytes() const;
};

/// Keys and values of one attention layer.
struct KILN_SDK_API KvCache {
  TokenCache k, v;
  KvCache() = default;
  KvCache(int64_t batch, int64_t max_len, int64_t kv_heads, int64_t head_dim, int64_t v_head_dim,
          const at::TensorOptions& options);
  int64_t bytes() const { return k.bytes() + v.bytes(); }
};

/// Attention of a cached forward: stores k and v ([..., Hkv, D] in the input's token layout) in
/// `kv` and attends q ([..., Hq, D]) causally over each row's cached keys followed by the new
/// ones. Packed prefill attends within the new tokens only (rows are empty). Returns [..., Hq, Dv].
KILN_SDK_API at::Tensor cached_attention(const CacheStep& step, KvCache& kv, const at::Tensor& q,
                                         const at::Tensor& k, const at::Tensor& v,
                                         double softmax_scale);

/// GqaAttention through a KV cache: the same projections, norms and rotary as
/// GqaAttention::operator(), attention by cached_attention. x [B, S, H] or [T, H].
KILN_SDK_API at::Tensor gqa_attention_cached(const GqaAttention& attn, const at::Tensor& x,
                                             const CacheStep& step, KvCache& kv,
                                             const std::pair<at::Tensor, at::Tensor>* rope,
                                             ops::RopeStyle style = ops::RopeStyle::kHalf);

} // namespace kiln::nn
