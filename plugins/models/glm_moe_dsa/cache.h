// The glm_moe_dsa generation cache (kiln/nn/kv_cache.h layout, flat rows [batch * max_len, ...]):
// per decoder layer the MLA latent `kv_latent` = [kv_a_layernorm(compressed KV) | RoPE'd k_pe],
// [.., 1, kv_lora_rank + qk_rope_head_dim] (576 values per token at GLM-5 widths; HF keeps the
// expanded per-head K and V instead, models.md §3.7), exactly what ops::sparse_mla reads; and per
// "full" indexer layer the indexer keys after k_norm and RoPE, [.., index_head_dim], what
// ops::indexer_topk reads. "shared" layers reuse a full layer's selection and keep no keys.
#pragma once

#include "config.h"

#include "kiln/nn/kv_cache.h"

#include <vector>

namespace kiln::models::glm_moe_dsa {

/// What one decoder layer keeps.
struct LayerCache {
  nn::TokenCache latent;     ///< [batch * max_len, 1, kv_lora_rank + qk_rope_head_dim]
  nn::TokenCache index_keys; ///< [batch * max_len, index_head_dim]; "full" layers only
  int64_t bytes() const { return latent.bytes() + index_keys.bytes(); }
};

class Cache final : public sdk::InferenceCache {
 public:
  /// Throws kiln::Error when batch_size * max_len does not fit int32 (the ops' index type).
  Cache(const Config& config, int64_t batch_size, int64_t max_len,
        const at::TensorOptions& options);
  int64_t bytes() const override;

  std::vector<LayerCache> layers; ///< one per decoder layer
};

} // namespace kiln::models::glm_moe_dsa
