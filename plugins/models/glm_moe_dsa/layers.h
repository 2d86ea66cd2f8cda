// glm_moe_dsa decoder layers: pre-norm MLA with DSA (attention.h) and either a dense SwiGLU MLP
// ("dense" in mlp_layer_types) or the MoE block (sigmoid top-k router with correction bias,
// routed experts, shared experts; as GLM-4.5's).
#pragma once

#include "attention.h"
#include "config.h"

#include "kiln/nn/mlp.h"
#include "kiln/nn/moe.h"
#include "kiln/nn/norm.h"

#include <optional>
#include <utility>

namespace kiln::models::glm_moe_dsa {

struct MoeBlock {
  nn::TopkRouter gate;
  nn::Experts experts;
  nn::GatedMlp shared_experts; ///< width moe_intermediate_size * n_shared_experts (0: none)
  bool has_shared = false;

  MoeBlock(const Config& config, const at::TensorOptions& options);
  /// x [N, hidden] -> ([N, hidden], int64 [E] tokens routed to each expert, no gradient).
  std::pair<at::Tensor, at::Tensor> operator()(const at::Tensor& x) const;
  void init(double std);
};

/// One layer's outputs.
struct LayerResult {
  at::Tensor hidden;      ///< [N, hidden]
  at::Tensor topk;        ///< int32 [N, 1, K]: the running IndexShare selection after this layer
  at::Tensor expert_load; ///< int64 [E] (MoE layers)
  at::Tensor indexer_kl;  ///< float32 scalar (full layers, when asked for)
};

struct DecoderLayer {
  nn::RmsNorm input_layernorm;
  MlaAttention self_attn;
  nn::RmsNorm post_attention_layernorm;
  std::optional<nn::GatedMlp> mlp; ///< dense layers
  std::optional<MoeBlock> moe;     ///< MoE layers

  DecoderLayer(const Config& config, int64_t index, const at::TensorOptions& options);
  /// x [N, hidden]; `topk`: the running selection before this layer (undefined before the first
  /// full layer).
  LayerResult operator()(const at::Tensor& x, const TokenLayout& layout,
                         const std::pair<at::Tensor, at::Tensor>& rope, const at::Tensor& topk,
                         bool indexer_kl) const;
  /// The same layer in a cached forward (MlaAttention's cached operator()); no indexer loss.
  LayerResult operator()(const at::Tensor& x, const TokenLayout& layout,
                         const std::pair<at::Tensor, at::Tensor>& rope, const at::Tensor& topk,
                         const nn::CacheStep& step, LayerCache& cache) const;
  void init(double std);

 private:
  /// The residual MLP or MoE half on h (the input plus the attention output); sets `out`'s
  /// hidden and expert_load.
  void feed_forward(const at::Tensor& h, LayerResult& out) const;
};

} // namespace kiln::models::glm_moe_dsa
