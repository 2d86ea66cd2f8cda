// Activation checkpointing: run a block without keeping its activations and recompute them in
// backward. What torch.utils.checkpoint (reentrant form) does, for kiln's blocks.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace kiln::nn {

/// A block as checkpoint() sees it: tensors in, tensors out. It must be deterministic (same
/// outputs when re-run on the same inputs) and read its parameters from its captures.
using CheckpointFn = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

/// Runs `fn(inputs)` with gradient recording off; the outputs carry one autograd node. Backward
/// re-runs `fn` with recording on, on detached copies of the inputs, and back-propagates the
/// incoming gradients through that recomputed graph: parameters captured by `fn` get their .grad
/// accumulated exactly as without checkpointing, and the inputs' gradients flow on. Outputs that
/// are not floating point (indices) are returned without gradient. Undefined inputs are allowed.
/// When gradient recording is off at the call (inference) this is just `fn(inputs)`.
KILN_SDK_API std::vector<at::Tensor> checkpoint(const CheckpointFn& fn,
                                                const std::vector<at::Tensor>& inputs);

/// The one-tensor form: `y = fn(x)`.
KILN_SDK_API at::Tensor checkpoint(const std::function<at::Tensor(const at::Tensor&)>& fn,
                                   const at::Tensor& x);

} // namespace kiln::nn
