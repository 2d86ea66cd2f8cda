#include "kiln/nn/module.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

namespace kiln::nn {

at::Tensor make_parameter(at::IntArrayRef shape, const at::TensorOptions& options) {
  return at::empty(shape, options).requires_grad_(true);
}

void init_normal(at::Tensor& tensor, double std) {
  c10::NoGradGuard no_grad;
  tensor.normal_(0.0, std);
}

void init_constant(at::Tensor& tensor, double value) {
  c10::NoGradGuard no_grad;
  tensor.fill_(value);
}

} // namespace kiln::nn
