// Op `linear_cross_entropy`: the LM head projection fused with the token cross-entropy, computed
// in chunks of tokens so that the [T, V] logits never exist at once (a [T, V] float32 buffer
// would be 2.4 GB for T = 4096, V = 151552).
//
//   logits[t] = hidden[t] @ weight^T                                   [V]
//   loss_t = logsumexp(logits[t]) - logits[t, labels[t]]   (0 where labels[t] == ignore_index)
//   kSum:  loss = sum_t loss_t
//   kMean: loss = sum_t loss_t / (number of t with labels[t] != ignore_index), 0 when none
//
// Labels are already aligned with hidden (HF's shift by one and its right-padding with -100 are
// the caller's job). kMean over no valid token returns 0, not NaN (torch's cross_entropy gives
// NaN): a packed batch of only prompt tokens must not poison a training step. For gradient
// accumulation or data parallelism use kSum and divide by the global token count (HF's
// `num_items_in_batch`).
// Precision (HF order): logits are a GEMM in hidden's dtype with float32 accumulation rounded to
// hidden's dtype (HF's lm_head output, then .float()); logsumexp and the loss are float32. A
// fused kernel that skips the rounding of the logits is within the op tolerance.
// Differentiable in hidden and weight through `loss`; `per_token` is for logging and carries no
// gradient (backends may return it detached). Never differentiable in labels.
// Backends may assume (checked here): hidden [T, H] floating; weight [V, H] in hidden's dtype;
// labels int64 [T]; chunk_size >= 0; one device. Label values other than ignore_index are in
// [0, V) (caller guarantees; not checked on accelerators). Strides are arbitrary.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kiln::ops {

/// How per-token losses are combined.
enum class LossReduction { kMean = 0, kSum = 1 };

/// Arguments of `linear_cross_entropy`; device and dtype of hidden decide dispatch.
struct LinearCrossEntropyArgs {
  at::Tensor hidden; ///< [T, H]; float32, bfloat16 or float16 (final-norm output)
  at::Tensor weight; ///< [V, H] (lm_head.weight); hidden's dtype
  at::Tensor labels; ///< int64 [T]
  int64_t ignore_index = -100;
  LossReduction reduction = LossReduction::kMean;
  int64_t chunk_size = 0;        ///< tokens per chunk; 0 = the backend's choice
  bool return_per_token = false; ///< also return the per-token losses
  c10::Device device() const { return hidden.device(); }
  c10::ScalarType dtype() const { return hidden.scalar_type(); }
};

/// The reduced loss and, when requested, the per-token losses.
struct LinearCrossEntropyResult {
  at::Tensor loss;      ///< float32 scalar (0-dim)
  at::Tensor per_token; ///< float32 [T], 0 at ignored tokens; undefined unless requested
};

/// Traits of op `linear_cross_entropy`.
struct LinearCrossEntropyOp {
  static constexpr const char* kName = "linear_cross_entropy";
  using Args = LinearCrossEntropyArgs;
  using Result = LinearCrossEntropyResult;
};

/// Validates and dispatches `linear_cross_entropy`.
KILN_SDK_API LinearCrossEntropyResult linear_cross_entropy(const LinearCrossEntropyArgs& args);

} // namespace kiln::ops
