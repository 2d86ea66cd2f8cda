// The nemotron_v3 causal LM (HF NemotronHForCausalLM, plus NeMo AutoModel's MTP): embeddings, the
// hybrid blocks, norm_f, the LM head (logits upcast to float32 as HF), and the MTP depths.
#pragma once

#include "cache.h"
#include "config.h"
#include "layers.h"

#include "kiln/nn/linear.h"
#include "kiln/nn/norm.h"
#include "kiln/sdk/cache.h"
#include "kiln/sdk/model.h"

#include <functional>
#include <map>
#include <vector>

namespace kiln::models::nemotron_v3 {

class Model final : public sdk::Model, public sdk::CachedDecoding {
 public:
  Model(Config config, const sdk::ModelOptions& options);

  std::string family() const override { return "nemotron_v3"; }
  sdk::ForwardOutput forward(const sdk::ForwardInput& input) override;
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() override;
  void load_weights(const sdk::WeightSource& source) override;
  std::vector<std::pair<std::string, at::Tensor>> state_dict() override;
  std::vector<std::pair<std::string, at::Tensor>> gradients() override;
  nlohmann::json config_json() const override;
  at::Tensor lm_head_weight() override { return lm_head_.weight; }

  /// K/V of the attention layers, conv windows and float32 SSM states of the Mamba layers
  /// (cache.h). The MTP layers take no part in generation (HF's generate does not use them).
  std::unique_ptr<sdk::InferenceCache> make_cache(int64_t batch_size, int64_t max_len) override;
  sdk::ForwardOutput forward_cached(const sdk::ForwardInput& input,
                                    sdk::InferenceCache& cache) override;

  /// HF's _init_weights (see Block::init), seeded.
  void init_random(uint64_t seed);

 private:
  /// Runs `block` on h, under nn::checkpoint when activation checkpointing is on; a MoE block's
  /// tokens per expert go to expert_load[layer].
  at::Tensor run_block(
      const std::function<at::Tensor(const at::Tensor&, const at::Tensor&, at::Tensor*)>& block,
      const at::Tensor& h, const at::Tensor& embeds, bool is_moe, int64_t layer,
      sdk::ForwardOutput& out) const;
  /// norm_f, then the LM head (logits_to_keep, compute_logits) on the last block's output.
  at::Tensor finish(const at::Tensor& h, const sdk::ForwardInput& input,
                    sdk::ForwardOutput& out) const;
  /// NeMo's MTP loss, already multiplied by mtp_loss_scale (see README.md).
  at::Tensor mtp_loss(const at::Tensor& ids, const at::Tensor& hidden, const at::Tensor& labels,
                      const nn::SequenceLayout& layout, sdk::ForwardOutput& out) const;
  /// The hub layout of `pick(parameter)` for every parameter (state_dict: the detached tensor;
  /// gradients: its grad); the routers' correction-bias buffers only when `with_buffers`.
  nn::NamedTensors hub_layout(const std::function<at::Tensor(const at::Tensor&)>& pick,
                              bool with_buffers);

  Config config_;
  sdk::ModelOptions options_;
  at::TensorOptions tensor_options_;
  nn::Embedding embeddings_;
  std::vector<Block> layers_;
  nn::RmsNorm norm_f_;
  nn::Linear lm_head_;
  std::vector<MtpSublayer> mtp_; ///< num_nextn_predict_layers x len(mtp_layers_block_type)
};

} // namespace kiln::models::nemotron_v3
