// RMSNorm (HF order: normalise in fp32, cast back, then times the weight) through ops::rms_norm.
#pragma once

#include "kiln/nn/module.h"

namespace kiln::nn {

struct KILN_SDK_API RmsNorm {
  at::Tensor weight; ///< [D]
  double eps = 1e-6;

  RmsNorm() = default;
  RmsNorm(int64_t dim, double eps, const at::TensorOptions& options);

  at::Tensor operator()(const at::Tensor& x) const; // [..., D] -> [..., D]
};

} // namespace kiln::nn
