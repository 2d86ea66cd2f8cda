#include "kiln/nn/norm.h"

#include "kiln/sdk/ops/rms_norm.h"

#include <ATen/ATen.h>

namespace kiln::nn {

RmsNorm::RmsNorm(int64_t dim, double eps_, const at::TensorOptions& options)
    : weight(make_parameter({dim}, options)), eps(eps_) {
  init_constant(weight, 1.0);
}

at::Tensor RmsNorm::operator()(const at::Tensor& x) const {
  return ops::rms_norm(x, weight, eps);
}

} // namespace kiln::nn
