#include "cache.h"

namespace kiln::models::glm4_moe {

Cache::Cache(const Config& c, int64_t batch_size, int64_t max_len, const at::TensorOptions& options)
    : sdk::InferenceCache(batch_size, max_len) {
  layers.reserve(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.emplace_back(batch_size, max_len, c.num_key_value_heads, c.head_dim, c.head_dim,
                        options);
  }
}

int64_t Cache::bytes() const {
  int64_t total = 0;
  for (const auto& layer : layers) total += layer.bytes();
  return total;
}

} // namespace kiln::models::glm4_moe
