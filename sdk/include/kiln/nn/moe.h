// Mixture-of-experts pieces shared by the families: the top-k router (sigmoid "noaux_tc" with a
// correction bias and group limits, HF's *TopkRouter) and the stacked routed experts.
#pragma once

#include "kiln/nn/module.h"
#include "kiln/sdk/ops/moe_experts.h"
#include "kiln/sdk/ops/moe_route.h"

namespace kiln::nn {

struct TopkRouterConfig {
  int64_t hidden = 0;
  int64_t num_experts = 0;
  int64_t top_k = 1;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  ops::MoeScoreFunc score_func = ops::MoeScoreFunc::kSigmoid;
};

struct KILN_SDK_API TopkRouter {
  TopkRouterConfig config;
  at::Tensor weight;                  ///< [E, H], the model dtype
  at::Tensor e_score_correction_bias; ///< fp32 [E], a buffer: no gradient (HF never trains it)

  TopkRouter() = default;
  TopkRouter(const TopkRouterConfig& config, const at::TensorOptions& options);

  /// x [N, H] -> experts and fp32 weights per token. Logits in fp32 as HF: x.float() @ W.float()^T.
  ops::MoeRouteResult operator()(const at::Tensor& x) const;
  void init(double std);
  /// Only the weight: the bias is a buffer (see buffers()).
  void collect(NamedTensors& out, const std::string& prefix) const;
  void buffers(NamedTensors& out, const std::string& prefix) const;
};

/// Routed experts stacked for grouped GEMMs. SwiGLU: w_up [E, 2I, H] (gate rows, then up rows);
/// relu2: w_up [E, I, H]. w_down [E, H, I].
struct KILN_SDK_API Experts {
  at::Tensor w_up;
  at::Tensor w_down;
  ops::MoeActivation activation = ops::MoeActivation::kSwiGlu;

  Experts() = default;
  Experts(int64_t num_experts, int64_t hidden, int64_t intermediate, ops::MoeActivation activation,
          const at::TensorOptions& options);

  int64_t num_experts() const { return w_down.size(0); }
  int64_t intermediate() const { return w_down.size(2); }

  /// x [N, H] with the router's choice -> [N, H] (weights applied after the down projection).
  at::Tensor operator()(const at::Tensor& x, const ops::MoeRouteResult& route) const;
  void init(double std);
};

} // namespace kiln::nn
