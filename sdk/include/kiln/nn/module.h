// Parameters of kiln's building blocks: plain at::Tensor members (leaf tensors with
// requires_grad) that a block lists under its names. No module framework: a block is a struct
// with its tensors, a forward function, and `collect` that names them.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <string>
#include <utility>
#include <vector>

namespace kiln::nn {

/// Tensors under their names, in a stable order.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

/// A trainable parameter: uninitialised storage of `shape`, requires_grad set.
KILN_SDK_API at::Tensor make_parameter(at::IntArrayRef shape, const at::TensorOptions& options);

/// HF's `_init_weights` for what kiln builds: normal(0, std) for linear, embedding, router and
/// expert weights; zeros for biases; ones for norm weights. Runs without recording gradients.
KILN_SDK_API void init_normal(at::Tensor& tensor, double std);
KILN_SDK_API void init_constant(at::Tensor& tensor, double value);

/// Appends (prefix + name, tensor) when the tensor is defined.
inline void add_named(NamedTensors& out, const std::string& prefix, const char* name,
                      const at::Tensor& tensor) {
  if (tensor.defined()) out.emplace_back(prefix + name, tensor);
}

} // namespace kiln::nn
