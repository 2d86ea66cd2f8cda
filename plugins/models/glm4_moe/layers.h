// glm4_moe decoder layers: pre-norm attention (GQA, optional qk-norm, partial half-split rope) and
// either a dense SwiGLU MLP (layers < first_k_dense_replace) or the MoE block (sigmoid top-k router
// with correction bias, routed experts, shared experts).
#pragma once

#include "config.h"

#include "kiln/nn/attention.h"
#include "kiln/nn/kv_cache.h"
#include "kiln/nn/mlp.h"
#include "kiln/nn/moe.h"
#include "kiln/nn/norm.h"

#include <optional>

namespace kiln::models::glm4_moe {

struct MoeBlock {
  nn::TopkRouter gate;
  nn::Experts experts;
  nn::GatedMlp shared_experts; ///< width moe_intermediate_size * n_shared_experts (0: none)
  bool has_shared = false;

  MoeBlock(const Config& config, const at::TensorOptions& options);
  /// [..., H] -> [..., H]; `load`, when given, receives the tokens routed to each expert
  /// (int64 [E]).
  at::Tensor operator()(const at::Tensor& x, at::Tensor* load = nullptr) const;
  void init(double std);
};

struct DecoderLayer {
  nn::RmsNorm input_layernorm;
  nn::GqaAttention self_attn;
  nn::RmsNorm post_attention_layernorm;
  std::optional<nn::GatedMlp> mlp; ///< dense layers
  std::optional<MoeBlock> moe;     ///< MoE layers

  DecoderLayer(const Config& config, int64_t index, const at::TensorOptions& options);
  at::Tensor operator()(const at::Tensor& x, const nn::SequenceLayout& layout,
                        const std::pair<at::Tensor, at::Tensor>& rope,
                        at::Tensor* load = nullptr) const;
  /// The same layer through a KV cache (generation).
  at::Tensor operator()(const at::Tensor& x, const nn::CacheStep& step, nn::KvCache& kv,
                        const std::pair<at::Tensor, at::Tensor>& rope) const;
  void init(double std);

 private:
  at::Tensor feed_forward(const at::Tensor& h, at::Tensor* load) const;
};

} // namespace kiln::models::glm4_moe
