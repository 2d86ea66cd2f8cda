#include "cache.h"

#include "kiln/sdk/error.h"

#include <limits>

namespace kiln::models::glm_moe_dsa {
namespace {

int64_t checked_batch(int64_t batch_size, int64_t max_len) {
  KILN_CHECK_USER(batch_size >= 1 && max_len >= 1 &&
                      batch_size <= std::numeric_limits<int32_t>::max() / max_len,
                  "glm_moe_dsa: a cache of {} rows of {} tokens is not supported: the sparse "
                  "attention ops index cached tokens with int32, so batch_size * max_len must be "
                  "between 1 and {}",
                  batch_size, max_len, std::numeric_limits<int32_t>::max());
  return batch_size;
}

} // namespace

Cache::Cache(const Config& c, int64_t batch_size, int64_t max_len, const at::TensorOptions& options)
    : sdk::InferenceCache(checked_batch(batch_size, max_len), max_len) {
  layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    LayerCache& layer = layers[static_cast<size_t>(i)];
    layer.latent =
        nn::TokenCache(batch_size, max_len, {1, c.kv_lora_rank + c.qk_rope_head_dim}, options);
    if (c.has_indexer(i)) {
      layer.index_keys = nn::TokenCache(batch_size, max_len, {c.index_head_dim}, options);
    }
  }
}

int64_t Cache::bytes() const {
  int64_t total = 0;
  for (const auto& layer : layers) total += layer.bytes();
  return total;
}

} // namespace kiln::models::glm_moe_dsa
