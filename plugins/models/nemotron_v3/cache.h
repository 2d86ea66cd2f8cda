// The nemotron_v3 generation cache, per layer by block type: an attention layer keeps its keys and
// values ([batch * max_len, num_key_value_heads, head_dim] each, kiln/nn/kv_cache.h layout; no
// rope), a Mamba layer its conv window ([batch, conv_dim, conv_kernel - 1], model dtype) and SSM
// state (float32 [batch, mamba_num_heads, mamba_head_dim, ssm_state_size], as HF's
// mamba_ssm_cache_dtype), MLP and MoE layers nothing. MTP layers are not used in generation.
#pragma once

#include "layers.h"

#include "kiln/nn/kv_cache.h"
#include "kiln/nn/mamba2.h"

#include <vector>

namespace kiln::models::nemotron_v3 {

class Cache final : public sdk::InferenceCache {
 public:
  /// Empty rows for the decoder `blocks` (their mixers give the shapes).
  Cache(const std::vector<Block>& blocks, int64_t batch_size, int64_t max_len,
        const at::TensorOptions& options);
  /// Empties the rows and zeroes the Mamba states (the state of an empty row).
  void reset() override;
  int64_t bytes() const override;

  /// Per decoder layer; only the member of the layer's kind is allocated.
  struct Layer {
    nn::KvCache kv;        ///< attention layers
    nn::Mamba2State mamba; ///< Mamba layers
  };
  std::vector<Layer> layers;
};

} // namespace kiln::models::nemotron_v3
