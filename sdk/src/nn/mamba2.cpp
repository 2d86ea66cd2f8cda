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

namespace {

// Where a mixer pass starts from and what it keeps: the states it continues (undefined: zeros),
// and whether it returns the final ones.
struct MixerStates {
  at::Tensor conv, ssm;
  bool keep_final = false;
  at::Tensor final_conv, final_ssm; ///< out, when keep_final
};

// One pass of the mixer over x [B, S, hidden] or THD [T, hidden] (cu_seqlens defined). A BSHD pass
// of one token continuing a conv state runs the conv's kStep update.
at::Tensor mix(const Mamba2Mixer& m, const at::Tensor& x, const at::Tensor& cu_seqlens,
               MixerStates& states) {
  const Mamba2MixerConfig& c = m.config;
  const int64_t di = c.intermediate(), cd = c.conv_dim(), nh = c.num_heads;
  const int64_t gn = c.n_groups * c.state_size;
  const at::Tensor zxbcdt = m.in_proj(x); // [..., Di + Cd + H]
  const at::Tensor z = zxbcdt.narrow(-1, 0, di);
  const at::Tensor dt = zxbcdt.narrow(-1, di + cd, nh); // [..., H]

  ops::CausalConv1dArgs conv{.x = zxbcdt.narrow(-1, di, cd),
                             .weight = m.conv_weight.squeeze(1),
                             .bias = m.conv_bias,
                             .activation = ops::ConvActivation::kSilu};
  conv.cu_seqlens = cu_seqlens;
  conv.initial_state = states.conv;
  conv.return_final_state = states.keep_final;
  const bool one_step = !cu_seqlens.defined() && states.conv.defined() && x.size(1) == 1;
  if (one_step) { // decode: x [B, 1, Cd] as [B, Cd] against the window
    conv.mode = ops::CausalConv1dMode::kStep;
    conv.x = conv.x.squeeze(1);
  }
  ops::CausalConv1dResult conv_out = ops::causal_conv1d(conv);
  const at::Tensor xbc = one_step ? conv_out.out.unsqueeze(1) : conv_out.out; // SiLU applied
  states.final_conv = conv_out.final_state;

  ops::Mamba2ScanArgs scan{
      .x = xbc.narrow(-1, 0, di).unflatten(-1, {nh, c.head_dim}), // [.., H, P]
      .dt = dt,
      .A = -at::exp(m.A_log.to(at::kFloat)),                                 // [H]
      .B = xbc.narrow(-1, di, gn).unflatten(-1, {c.n_groups, c.state_size}), // [.., G, N]
      .C = xbc.narrow(-1, di + gn, gn).unflatten(-1, {c.n_groups, c.state_size}),
      .D = m.D,
      .dt_bias = m.dt_bias};
  scan.dt_min = c.dt_min;
  scan.dt_max = c.dt_max;
  scan.chunk_size = c.chunk_size;
  scan.cu_seqlens = cu_seqlens;
  scan.initial_states = states.ssm;
  scan.return_final_states = states.keep_final;
  ops::Mamba2ScanResult scanned = ops::mamba2_scan(scan);
  const at::Tensor y = scanned.y.flatten(-2); // [..., Di] float32
  states.final_ssm = scanned.final_states;

  // Gate, then the grouped norm in float32 (the bf16 weight promotes), then back to x's dtype.
  const at::Tensor normed = ops::gated_rms_norm(y, z, m.norm_weight, di / c.n_groups, c.norm_eps);
  return m.out_proj(normed.to(x.scalar_type()));
}

} // namespace

Mamba2State::Mamba2State(const Mamba2MixerConfig& c, int64_t batch,
                         const at::TensorOptions& options)
    : conv(at::zeros({batch, c.conv_dim(), c.conv_kernel - 1}, options)),
      ssm(at::zeros({batch, c.num_heads, c.head_dim, c.state_size}, options.dtype(at::kFloat))) {}

void Mamba2State::reset() {
  if (conv.defined()) conv.zero_();
  if (ssm.defined()) ssm.zero_();
}

int64_t Mamba2State::bytes() const {
  return (conv.defined() ? static_cast<int64_t>(conv.nbytes()) : 0) +
         (ssm.defined() ? static_cast<int64_t>(ssm.nbytes()) : 0);
}

at::Tensor Mamba2Mixer::operator()(const at::Tensor& x, const SequenceLayout& layout) const {
  MixerStates none;
  return mix(*this, x, layout.packed() ? layout.cu_seqlens : at::Tensor(), none);
}

at::Tensor Mamba2Mixer::cached(const at::Tensor& x, const CacheStep& step,
                               Mamba2State& state) const {
  MixerStates states{.keep_final = true};
  if (!step.packed) {
    // An empty row continues from zeros (its state is zeros unless a failed forward left some).
    for (int64_t b = 0; b < step.batch; ++b) {
      if (step.start[b] == 0) {
        state.conv[b].zero_();
        state.ssm[b].zero_();
      }
    }
    states.conv = state.conv;
    states.ssm = state.ssm;
  }
  const at::Tensor out = mix(*this, x, step.packed ? step.cu_seqlens : at::Tensor(), states);
  // Packed prefill: one final state per document, i.e. per row (the rows were empty).
  state.conv.copy_(states.final_conv);
  state.ssm.copy_(states.final_ssm);
  return out;
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
