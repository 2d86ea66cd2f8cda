#include "kiln/nn/linear.h"

#include <ATen/ATen.h>

namespace kiln::nn {

Linear::Linear(int64_t in, int64_t out, bool with_bias, const at::TensorOptions& options)
    : weight(make_parameter({out, in}, options)) {
  if (with_bias) bias = make_parameter({out}, options);
}

at::Tensor Linear::operator()(const at::Tensor& x) const {
  return at::linear(x, weight, bias);
}

void Linear::init(double std) {
  init_normal(weight, std);
  if (bias.defined()) init_constant(bias, 0.0);
}

void Linear::collect(NamedTensors& out, const std::string& prefix) const {
  add_named(out, prefix, "weight", weight);
  add_named(out, prefix, "bias", bias);
}

Embedding::Embedding(int64_t vocab, int64_t hidden, const at::TensorOptions& options)
    : weight(make_parameter({vocab, hidden}, options)) {}

at::Tensor Embedding::operator()(const at::Tensor& ids) const {
  return at::embedding(weight, ids);
}

} // namespace kiln::nn
