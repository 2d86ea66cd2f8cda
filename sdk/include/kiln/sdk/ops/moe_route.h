// Op `moe_route`: the MoE router after its GEMM: scores, optional bias-corrected and
// group-limited top-k choice, and the routing weights (HF "noaux_tc" TopkRouter, models.md §1.3,
// identical in glm4_moe, glm_moe_dsa and nemotron_h).
//
//   s = sigmoid(logits_f32)   or   softmax(logits_f32, -1)                      [N, E] float32
//   c = s + e_score_correction_bias          (selection scores only; c = s without a bias)
//   if n_group > 1: group score = sum of the top-2 c in each of the n_group groups of E/n_group
//                   experts; keep the topk_group best groups, c = -inf in the others
//   indices = topk(c, top_k).indices                                            [N, k] int64
//   w = s.gather(indices)                    (weights from the UNBIASED scores)
//   if norm_topk_prob: w = w / (sum(w, -1) + 1e-20)   (also for top_k = 1)
//   weights = w * routed_scaling_factor                                         [N, k] float32
//
// The router GEMM stays in model code: HF computes logits = x.float() @ weight.float().T in
// float32 (pass those logits); NeMo's bf16 router passes bf16 logits, which are upcast here.
// The order of the k slots is unspecified (HF uses topk(sorted=False)); consumers must not depend
// on it. Ties are broken in an implementation-defined way; the torch reference uses at::topk like
// HF (models.md §1.8). The group step follows HF/DeepSeek-V3 (top-2 sum) for both score functions.
// Precision: everything in float32; weights are returned in float32 (HF keeps them fp32).
// Differentiable in logits through weights (the gradient reaches the router weight through the
// gathered scores and the normalisation, as in HF); indices and the bias get no gradient.
// Backends may assume (checked here): logits [N, E] floating; bias, when given, float32 [E];
// 1 <= top_k <= E; n_group >= 1 divides E; 1 <= topk_group <= n_group; with n_group > 1,
// E / n_group >= 2 and top_k <= topk_group * E / n_group; one device.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kiln::ops {

/// How router logits become expert scores.
enum class MoeScoreFunc { kSigmoid = 0, kSoftmax = 1 };

/// Arguments of `moe_route`; device and dtype of logits decide dispatch.
struct MoeRouteArgs {
  at::Tensor logits;                  ///< [N, E] router logits; float32 (HF), bfloat16 or float16
  at::Tensor e_score_correction_bias; ///< optional float32 [E]: added for selection only
  int64_t top_k = 1;                  ///< num_experts_per_tok
  MoeScoreFunc score_func = MoeScoreFunc::kSigmoid;
  int64_t n_group = 1;    ///< expert groups (1 = no group limit)
  int64_t topk_group = 1; ///< groups kept per token
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  c10::Device device() const { return logits.device(); }
  c10::ScalarType dtype() const { return logits.scalar_type(); }
};

/// The routing decision: k experts per token and their weights.
struct MoeRouteResult {
  at::Tensor indices; ///< int64 [N, k]: chosen experts, distinct within a row
  at::Tensor weights; ///< float32 [N, k]: routing weights of those experts
};

/// Traits of op `moe_route`.
struct MoeRouteOp {
  static constexpr const char* kName = "moe_route";
  using Args = MoeRouteArgs;
  using Result = MoeRouteResult;
};

/// Validates and dispatches `moe_route`.
KILN_SDK_API MoeRouteResult moe_route(const MoeRouteArgs& args);

} // namespace kiln::ops
