// The Mamba2 mixer (HF Nemotron-H NemotronHMamba2Mixer, models.md §4.3): in_proj, depthwise causal
// conv + SiLU, the selective state-space scan, gated grouped RMSNorm, out_proj, through
// ops::causal_conv1d, ops::mamba2_scan and ops::gated_rms_norm; and the same mixer through a
// generation cache (Mamba2State, Mamba2Mixer::cached).
#pragma once

#include "kiln/nn/attention.h" // SequenceLayout
#include "kiln/nn/kv_cache.h"  // CacheStep
#include "kiln/nn/linear.h"

#include <limits>

namespace kiln::nn {

struct Mamba2MixerConfig {
  int64_t hidden = 0;
  int64_t num_heads = 0;   ///< mamba_num_heads
  int64_t head_dim = 0;    ///< mamba_head_dim (P)
  int64_t state_size = 0;  ///< ssm_state_size (N)
  int64_t n_groups = 1;    ///< B/C groups (G); heads map to groups in contiguous blocks
  int64_t conv_kernel = 4; ///< K
  int64_t chunk_size = 128;
  bool conv_bias = true;  ///< use_conv_bias
  bool proj_bias = false; ///< use_bias: in_proj and out_proj biases
  double norm_eps = 1e-5;
  /// Clamp of dt' = softplus(dt + dt_bias). HF's prefill path: [time_step_min, inf).
  double dt_min = 0.0;
  double dt_max = std::numeric_limits<double>::infinity();

  int64_t intermediate() const { return num_heads * head_dim; }                   ///< Di
  int64_t conv_dim() const { return intermediate() + 2 * n_groups * state_size; } ///< Cd
};

/// What one Mamba2 mixer keeps between cached forwards, per cache row (not per token): the conv
/// window, the K-1 most recent pre-conv xBC inputs (oldest first, ops::causal_conv1d's state
/// layout; HF keeps the last K, whose last K-1 are these), and the SSM state after the row's last
/// token. A new cache is zeros, the state of an empty row.
struct KILN_SDK_API Mamba2State {
  at::Tensor conv; ///< [batch, Cd, K-1], the model dtype
  at::Tensor ssm;  ///< float32 [batch, H, P, N], whatever the model dtype (as HF)

  Mamba2State() = default;
  /// Zero states for `batch` rows; `options` gives the device and the conv state's dtype.
  Mamba2State(const Mamba2MixerConfig& config, int64_t batch, const at::TensorOptions& options);
  /// Zeroes both states (every row empty again).
  void reset();
  int64_t bytes() const;
};

/// Parameters in HF's shapes and dtypes (the model dtype; HF rounds A_log, D and dt_bias to it
/// when loading a bf16 model): in_proj [Di + Cd + H, hidden] (rows: z, then xBC = [x, B, C], then
/// dt), conv_weight [Cd, 1, K], conv_bias [Cd], dt_bias, A_log, D [H], norm_weight [Di], out_proj
/// [hidden, Di].
struct KILN_SDK_API Mamba2Mixer {
  Mamba2MixerConfig config;
  Linear in_proj, out_proj;
  at::Tensor conv_weight, conv_bias;
  at::Tensor dt_bias, A_log, D;
  at::Tensor norm_weight;

  Mamba2Mixer() = default;
  Mamba2Mixer(const Mamba2MixerConfig& config, const at::TensorOptions& options);

  /// x [B, S, hidden] or THD [T, hidden] (layout.cu_seqlens): the conv and the scan start every
  /// sequence (document) from zero state. The scan runs in float32; the result has x's dtype.
  at::Tensor operator()(const at::Tensor& x, const SequenceLayout& layout) const;
  /// The mixer through a generation cache (inference: call it under no-grad), the same math as
  /// operator() on each row's whole sequence. Packed prefill (step.packed): x THD [T, hidden],
  /// document b of step.cu_seqlens into empty row b; every row's states are overwritten with its
  /// document's final ones. Append: x [B, S, hidden] continues every row from its stored states
  /// (zeros for an empty row), then stores the states after the new tokens; S = 1 runs the conv's
  /// kStep update and a one-token scan. dt' is clamped to config.dt_min in every case, as in
  /// operator() (HF's one-token decode skips that clamp, see nemotron_v3's README).
  at::Tensor cached(const at::Tensor& x, const CacheStep& step, Mamba2State& state) const;
  /// HF's _init_weights: normal(0, std) projections and conv weight, zero biases, unit norm,
  /// A_log = log(1..H), D = 1, dt_bias = softplus^-1(dt) with dt log-uniform in
  /// [time_step_min, time_step_max] floored at time_step_floor.
  void init(double std, double time_step_min, double time_step_max, double time_step_floor);
  /// HF names under `prefix` (e.g. "backbone.layers.0.mixer."): in_proj.*, conv1d.*, dt_bias,
  /// A_log, D, norm.weight, out_proj.*.
  void collect(NamedTensors& out, const std::string& prefix) const;
};

} // namespace kiln::nn
