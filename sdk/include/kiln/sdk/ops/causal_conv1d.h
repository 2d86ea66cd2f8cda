// Op `causal_conv1d`: the depthwise causal convolution over time of the Mamba2 mixer (HF
// Nemotron-H `conv1d` on xBC: nn.Conv1d(groups=C, padding=K-1) cut to the first L outputs),
// followed by an optional SiLU.
//
//   out[t, c] = act( bias[c] + sum_{j=0..K-1} weight[c, j] * in[t - K + 1 + j, c] )
//
// where in[t'] for t' before the sequence start comes from `initial_state` (zeros when absent).
//
// Layout: token-major, channels last, like every other kiln op: x [B, L, C] (BSHD-like) or
// [T, C] packed with `cu_seqlens` (THD). HF applies nn.Conv1d to xBC.transpose(1, 2), i.e. the
// same [B, L, C] tensor seen channels-first: the math is identical and no copy is needed. In THD
// mode no output mixes inputs of two sequences: each sequence starts from its own initial state
// (or zeros), exactly as if it were run alone.
//
// Conv state: [B, C, K-1] (THD: [N, C, K-1]), the K-1 most recent inputs before the first token,
// oldest first (channels-first like the causal_conv1d package; HF's cache keeps the last K
// inputs, [B, C, K], whose last K-1 columns are this state). `final_state` has the same layout
// and holds the last K-1 inputs of each sequence, continuing from initial_state (or zeros) when a
// sequence is shorter than K-1.
//
// Two modes of the one op:
//   kSequence (prefill/training): x [B, L, C] or [T, C] (+ cu_seqlens); initial_state optional;
//                                 final_state returned when return_final_state.
//   kStep (decode, `causal_conv1d_update`): x [B, C] is ONE new token per sequence; initial_state
//                                 [B, C, K-1] is required and final_state (the updated state) is
//                                 always returned. Same math as kSequence with L = 1.
// The op never writes its inputs: the caller stores final_state in its cache.
//
// Precision: weight and bias are cast to x's dtype (HF holds them in the model dtype); products
// accumulate in float32 and are rounded to x's dtype; SiLU then runs in x's dtype (HF rounds the
// conv output before the activation; a fused kernel that applies SiLU before its single rounding
// is within the op tolerance). out and final_state have x's dtype.
// Differentiable in x, weight, bias and initial_state through out; final_state carries no
// gradient (it only feeds a cache). kStep is for inference.
// Backends may assume (checked here): the mode's ranks; x floating; weight [C, K] with K >= 2 and
// bias [C], both floating; cu_seqlens only with THD x; initial_state [B|N, C, K-1] in x's dtype;
// one device. NOT checked on accelerators: cu_seqlens values (start at 0, non-decreasing, end at
// T). Strides are arbitrary.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

namespace kiln::ops {

/// The activation applied to the convolution output.
enum class ConvActivation { kNone = 0, kSilu = 1 };

/// Whole sequences, or one decode step against a conv state.
enum class CausalConv1dMode {
  kSequence = 0, ///< whole sequences (prefill, training)
  kStep = 1,     ///< one new token per sequence against a conv state (decode)
};

/// Arguments of `causal_conv1d`; device and dtype of x decide dispatch.
struct CausalConv1dArgs {
  at::Tensor x;      ///< kSequence: [B, L, C] or THD [T, C]; kStep: [B, C]; float32/bf16/fp16
  at::Tensor weight; ///< [C, K] (HF conv1d.weight [C, 1, K] squeezed); floating
  at::Tensor bias;   ///< optional [C]; floating
  ConvActivation activation = ConvActivation::kSilu;
  CausalConv1dMode mode = CausalConv1dMode::kSequence;
  at::Tensor cu_seqlens;           ///< kSequence THD only: int32 [N+1]
  at::Tensor initial_state;        ///< optional [B|N, C, K-1], x's dtype; required in kStep
  bool return_final_state = false; ///< kSequence: also return final_state (kStep: always)
  c10::Device device() const { return x.device(); }
  c10::ScalarType dtype() const { return x.scalar_type(); }
};

/// The convolution output and, when requested, the conv state after the last token.
struct CausalConv1dResult {
  at::Tensor out;         ///< x's shape and dtype
  at::Tensor final_state; ///< [B|N, C, K-1], x's dtype; undefined unless requested (or kStep)
};

/// Traits of op `causal_conv1d`.
struct CausalConv1dOp {
  static constexpr const char* kName = "causal_conv1d";
  using Args = CausalConv1dArgs;
  using Result = CausalConv1dResult;
};

/// Validates and dispatches `causal_conv1d` in either mode.
KILN_SDK_API CausalConv1dResult causal_conv1d(const CausalConv1dArgs& args);

/// The decode step (mode kStep): x [B, C] one token per sequence, conv_state [B, C, K-1].
/// Returns {out [B, C], final_state = the updated [B, C, K-1] state}.
KILN_SDK_API CausalConv1dResult causal_conv1d_update(const at::Tensor& x,
                                                     const at::Tensor& conv_state,
                                                     const at::Tensor& weight,
                                                     const at::Tensor& bias,
                                                     ConvActivation activation);

} // namespace kiln::ops
