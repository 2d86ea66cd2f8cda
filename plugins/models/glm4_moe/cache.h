// The glm4_moe generation cache: per decoder layer, keys (after qk-norm and RoPE) and values,
// [batch * max_len, num_key_value_heads, head_dim] each (kiln/nn/kv_cache.h layout).
#pragma once

#include "config.h"

#include "kiln/nn/kv_cache.h"

#include <vector>

namespace kiln::models::glm4_moe {

class Cache final : public sdk::InferenceCache {
 public:
  Cache(const Config& config, int64_t batch_size, int64_t max_len,
        const at::TensorOptions& options);
  int64_t bytes() const override;

  std::vector<nn::KvCache> layers; ///< one per decoder layer
};

} // namespace kiln::models::glm4_moe
