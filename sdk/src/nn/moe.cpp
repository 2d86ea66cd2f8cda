#include "kiln/nn/moe.h"

#include <ATen/ATen.h>

namespace kiln::nn {

TopkRouter::TopkRouter(const TopkRouterConfig& c, const at::TensorOptions& options)
    : config(c),
      weight(make_parameter({c.num_experts, c.hidden}, options)),
      e_score_correction_bias(at::zeros({c.num_experts}, options.dtype(at::kFloat))) {}

ops::MoeRouteResult TopkRouter::operator()(const at::Tensor& x) const {
  const at::Tensor logits = at::linear(x.to(at::kFloat), weight.to(at::kFloat)); // [N, E] fp32
  ops::MoeRouteArgs args{.logits = logits, .e_score_correction_bias = e_score_correction_bias};
  args.top_k = config.top_k;
  args.score_func = config.score_func;
  args.n_group = config.n_group;
  args.topk_group = config.topk_group;
  args.norm_topk_prob = config.norm_topk_prob;
  args.routed_scaling_factor = config.routed_scaling_factor;
  return ops::moe_route(args);
}

void TopkRouter::init(double std) {
  init_normal(weight, std);
  init_constant(e_score_correction_bias, 0.0);
}

void TopkRouter::collect(NamedTensors& out, const std::string& prefix) const {
  add_named(out, prefix, "weight", weight);
}

void TopkRouter::buffers(NamedTensors& out, const std::string& prefix) const {
  add_named(out, prefix, "e_score_correction_bias", e_score_correction_bias);
}

Experts::Experts(int64_t num_experts, int64_t hidden, int64_t intermediate,
                 ops::MoeActivation activation_, const at::TensorOptions& options)
    : w_up(make_parameter(
          {num_experts,
           activation_ == ops::MoeActivation::kSwiGlu ? 2 * intermediate : intermediate, hidden},
          options)),
      w_down(make_parameter({num_experts, hidden, intermediate}, options)),
      activation(activation_) {}

at::Tensor Experts::operator()(const at::Tensor& x, const ops::MoeRouteResult& route) const {
  return ops::moe_experts(x, w_up, w_down, route.indices, route.weights, activation);
}

void Experts::init(double std) {
  init_normal(w_up, std);
  init_normal(w_down, std);
}

} // namespace kiln::nn
