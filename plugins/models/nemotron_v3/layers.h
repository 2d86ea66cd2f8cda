// nemotron_v3 blocks. Every layer is one block: h = norm(x); x = x + mixer(h), the mixer being a
// Mamba2 mixer, GQA attention without rope, a relu2 MLP, or the MoE (sigmoid top-k router with
// correction bias, relu2 routed experts, optionally in a latent space, plus a relu2 shared expert).
// MTP sublayers are the same blocks, with the depth's fusion before the first and a final norm
// after the last.
#pragma once

#include "config.h"

#include "kiln/nn/attention.h"
#include "kiln/nn/kv_cache.h"
#include "kiln/nn/linear.h"
#include "kiln/nn/mamba2.h"
#include "kiln/nn/moe.h"
#include "kiln/nn/norm.h"

#include <optional>

namespace kiln::models::nemotron_v3 {

/// HF NemotronHMLP: down(relu(up(x))^2), no gate (dense layers and the shared expert).
struct Relu2Mlp {
  nn::Linear up_proj, down_proj;

  Relu2Mlp() = default;
  Relu2Mlp(int64_t hidden, int64_t intermediate, bool bias, const at::TensorOptions& options);
  at::Tensor operator()(const at::Tensor& x) const;
  void init(double std);
  void collect(nn::NamedTensors& out, const std::string& prefix) const;
};

/// HF NemotronHMoE.
struct MoeBlock {
  nn::TopkRouter gate;
  nn::Experts experts;                       ///< relu2; width moe_latent_size or hidden
  std::optional<nn::Linear> fc1_latent_proj; ///< hidden -> latent (moe_latent_size set)
  std::optional<nn::Linear> fc2_latent_proj; ///< latent -> hidden
  Relu2Mlp shared_experts;                   ///< width moe_shared_expert_intermediate_size

  MoeBlock(const Config& config, const at::TensorOptions& options);
  /// x [..., H] -> [..., H]; `load`, when given, receives the tokens per expert (int64 [E]).
  at::Tensor operator()(const at::Tensor& x, at::Tensor* load) const;
  void init(double std);
};

struct Block {
  BlockType type;
  nn::RmsNorm norm;
  std::optional<nn::Mamba2Mixer> mamba;
  std::optional<nn::GqaAttention> attention;
  std::optional<Relu2Mlp> mlp;
  std::optional<MoeBlock> moe;

  Block(const Config& config, BlockType type, const at::TensorOptions& options);
  /// x [B, S, H] or THD [T, H]; `load` as in MoeBlock (left alone by other block types).
  at::Tensor operator()(const at::Tensor& x, const nn::SequenceLayout& layout,
                        at::Tensor* load) const;
  /// The same block through a generation cache (x laid out as `step`): an attention block uses
  /// `kv`, a Mamba block `mamba` (see cache.h); the other blocks keep nothing.
  at::Tensor operator()(const at::Tensor& x, const nn::CacheStep& step, nn::KvCache& kv,
                        nn::Mamba2State& mamba) const;
  void init(const Config& config);
  /// Parameters under HF names: `prefix` + "norm.weight", + "mixer.*" (stacked experts as
  /// mixer.experts.up_proj / down_proj, HF's runtime names).
  void collect(nn::NamedTensors& out, const std::string& prefix) const;
};

/// One MTP sublayer (NeMo's NemotronV3MTPSublayer): the first of a depth fuses the shifted
/// embeddings with the incoming hidden states, h = eh_proj(cat[enorm(e), hnorm(h)]); the last
/// applies final_layernorm after its block.
struct MtpSublayer {
  Block block;
  std::optional<nn::RmsNorm> enorm, hnorm, final_layernorm;
  std::optional<nn::Linear> eh_proj; ///< [H, 2H]

  MtpSublayer(const Config& config, BlockType type, bool fusion, bool final_norm,
              const at::TensorOptions& options);
  /// `embeds` is used (and required) by a fusing sublayer.
  at::Tensor operator()(const at::Tensor& h, const at::Tensor& embeds,
                        const nn::SequenceLayout& layout, at::Tensor* load) const;
  void init(const Config& config);
  void collect(nn::NamedTensors& out, const std::string& prefix) const;
};

} // namespace kiln::models::nemotron_v3
