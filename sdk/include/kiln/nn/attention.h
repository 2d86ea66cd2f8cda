// Grouped-query self-attention with optional per-head q/k RMSNorm and rotary embedding, as in
// GLM-4.5 (and, without rotary, Nemotron-H): q/k/v projections, norm, rope, ops::attention, o_proj.
#pragma once

#include "kiln/nn/linear.h"
#include "kiln/nn/norm.h"
#include "kiln/nn/rotary.h"

#include <tuple>
#include <utility>

namespace kiln::nn {

/// How the tokens of a batch are laid out. BSHD: x is [B, S, H]. THD (packed documents): x is
/// [T, H] and cu_seqlens int32 [N + 1] bounds the documents; attention never crosses them.
struct SequenceLayout {
  at::Tensor cu_seqlens;
  int64_t max_seqlen = 0;
  bool packed() const { return cu_seqlens.defined(); }
};

struct GqaAttentionConfig {
  int64_t hidden = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  bool qkv_bias = false; ///< bias on q/k/v (GLM attention_bias); o_proj never has one
  bool qk_norm = false;  ///< per-head RMSNorm on q and k before rotary (GLM use_qk_norm)
  double norm_eps = 1e-5;
};

struct KILN_SDK_API GqaAttention {
  GqaAttentionConfig config;
  Linear q_proj, k_proj, v_proj, o_proj;
  RmsNorm q_norm, k_norm; ///< defined iff config.qk_norm

  GqaAttention() = default;
  GqaAttention(const GqaAttentionConfig& config, const at::TensorOptions& options);

  /// x [B, S, H] or [T, H]; rope: (cos, sin) tables from RotaryEmbedding, or nullptr for none.
  /// q [..., Hq, D], k and v [..., Hkv, D] after the norms and rotary: what attention consumes.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> project(
      const at::Tensor& x, const std::pair<at::Tensor, at::Tensor>* rope,
      ops::RopeStyle style = ops::RopeStyle::kHalf) const;
  /// 1 / sqrt(head_dim).
  double softmax_scale() const;
  at::Tensor operator()(const at::Tensor& x, const SequenceLayout& layout,
                        const std::pair<at::Tensor, at::Tensor>* rope,
                        ops::RopeStyle style = ops::RopeStyle::kHalf) const;
  void init(double std);
  void collect(NamedTensors& out, const std::string& prefix) const;
};

} // namespace kiln::nn
