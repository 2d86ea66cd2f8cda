// The torch reference backend: every op in plain ATen, on CPU and CUDA, differentiable through
// autograd. It defines what every other backend is tested against.
#pragma once

#include "kiln/sdk/ops.h"

#include <ATen/core/Tensor.h>

namespace kiln::backends::torch_ref {

at::Tensor rms_norm(const ops::RmsNormArgs& args);
at::Tensor rope(const ops::RopeArgs& args);

} // namespace kiln::backends::torch_ref
