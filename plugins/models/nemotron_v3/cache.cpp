#include "cache.h"

namespace kiln::models::nemotron_v3 {

Cache::Cache(const std::vector<Block>& blocks, int64_t batch_size, int64_t max_len,
             const at::TensorOptions& options)
    : sdk::InferenceCache(batch_size, max_len) {
  layers.resize(blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    const Block& block = blocks[i];
    if (block.attention) {
      const nn::GqaAttentionConfig& c = block.attention->config;
      layers[i].kv =
          nn::KvCache(batch_size, max_len, c.num_kv_heads, c.head_dim, c.head_dim, options);
    }
    if (block.mamba) layers[i].mamba = nn::Mamba2State(block.mamba->config, batch_size, options);
  }
}

void Cache::reset() {
  sdk::InferenceCache::reset();
  for (auto& layer : layers) layer.mamba.reset();
}

int64_t Cache::bytes() const {
  int64_t total = 0;
  for (const auto& layer : layers) total += layer.kv.bytes() + layer.mamba.bytes();
  return total;
}

} // namespace kiln::models::nemotron_v3
