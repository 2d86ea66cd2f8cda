// The kernels of the `example` backend (one today). Declarations only: ATen stays in the .cpp.
#pragma once

#include "kiln/sdk/ops/rms_norm.h"

namespace kiln_example {

/// `rms_norm` for contiguous float32 x and weight on the CPU, no autograd: one fused pass per row.
at::Tensor rms_norm_cpu(const kiln::ops::RmsNormArgs& args);

/// What rms_norm_cpu accepts: float32 x and weight, both contiguous, neither requiring a gradient
/// (this kernel has no backward; the torch reference takes those calls).
bool rms_norm_cpu_supports(const kiln::ops::RmsNormArgs& args);

} // namespace kiln_example
