#include "kiln/nn/mamba2.h"

#include "kiln/sdk/ops/causal_conv1d.h"
#include "kiln/sdk/ops/gated_rms_norm.h"
#include "kiln/sdk/ops/mamba2_scan.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

namespace kiln::nn {

Mamba2Mixer::Mamba2Mixer(const Mamba2MixerConfig& c, const at::TensorOptions& options)
    : config(c),
      in_proj(c.hidden, c.intermediate() + c.conv_dim() + c.num_heads, c.proj_bias, options),
      out_proj(c.intermediate(), c.hidden, c.proj_bias, options),
      conv_weight(make_parameter({c.conv_dim(), 1, c.conv_kernel}, options)),
      dt_bias(make_parameter({c.num_heads}, options)),
      A_log(make_parameter({c.num_heads}, options)),
      D(make_parameter({c.num_heads}, options)),
      norm_weight(make_parameter({c.intermediate()}, options)) {
  if (c.conv_bias) conv_bias = make_parameter({c.conv_dim()}, options);
}

at::Tensor Mamba2Mixer::operator()(const at::Tensor& x, const SequenceLayout& layout) const {
  const int64_t di = config.intermediate(), cd = config.conv_dim(), nh = config.num_heads;
  const int64_t gn = config.n_groups * config.state_size;
  const at::Tensor zxbcdt = in_proj(x); // [..., Di + Cd + H]
  const at::Tensor z = zxbcdt.narrow(-1, 0, di);
  const at::Tensor dt = zxbcdt.narrow(-1, di + cd, nh); // [..., H]

  ops::CausalConv1dArgs conv{.x = zxbcdt.narrow(-1, di, cd),
                             .weight = conv_weight.squeeze(1),
                             .bias = conv_bias,
                             .activation = ops::ConvActivation::kSilu};
  if (layout.packed()) conv.cu_seqlens = layout.cu_seqlens;
  const at::Tensor xbc = ops::causal_conv1d(conv).out; // [..., Cd], SiLU applied

  ops::Mamba2ScanArgs scan{
      .x = xbc.narrow(-1, 0, di).unflatten(-1, {nh, config.head_dim}), // [.., H, P]
      .dt = dt,
      .A = -at::exp(A_log.to(at::kFloat)),                                             // [H]
      .B = xbc.narrow(-1, di, gn).unflatten(-1, {config.n_groups, config.state_size}), // [.., G, N]
      .C = xbc.narrow(-1, di + gn, gn).unflatten(-1, {config.n_groups, config.state_size}),
      .D = D,
      .dt_bias = dt_bias};
  scan.dt_min = config.dt_min;
  scan.dt_max = config.dt_max;
  scan.chunk_size = config.chunk_size;
  if (layout.packed()) scan.cu_seqlens = layout.cu_seqlens;
  const at::Tensor y = ops::mamba2_scan(scan).y.flatten(-2); // [..., Di] float32

  // Gate, then the grouped norm in float32 (the bf16 weight promotes), then back to x's dtype.
  const at::Tensor normed =
      ops::gated_rms_norm(y, z, norm_weight, di / config.n_groups, config.norm_eps);
  return out_proj(normed.to(x.scalar_type()));
}

void Mamba2Mixer::init(double std, double time_step_min, double time_step_max,
                       double time_step_floor) {
  in_proj.init(std);
  out_proj.init(std);
  init_normal(conv_weight, std);
  if (conv_bias.defined()) init_constant(conv_bias, 0.0);
  init_constant(norm_weight, 1.0);
  init_constant(D, 1.0);
  c10::NoGradGuard no_grad;
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  A_log.copy_(at::log(at::arange(1, config.num_heads + 1, f32)));
  const double lo = std::log(time_step_min), hi = std::log(time_step_max);
  const at::Tensor dt =
      at::exp(at::rand({config.num_heads}, f32) * (hi - lo) + lo).clamp_min(time_step_floor);
  dt_bias.copy_(dt + at::log(-at::expm1(-dt))); // softplus^-1
}

void Mamba2Mixer::collect(NamedTensors& out, const std::string& prefix) const {
  in_proj.collect(out, prefix + "in_proj.");
  add_named(out, prefix, "conv1d.weight", conv_weight);
  add_named(out, prefix, "conv1d.bias", conv_bias);
  add_named(out, prefix, "dt_bias", dt_bias);
  add_named(out, prefix, "A_log", A_log);
  add_named(out, prefix, "D", D);
  add_named(out, prefix, "norm.weight", norm_weight);
  out_proj.collect(out, prefix + "out_proj.");
}

} // namespace kiln::nn
