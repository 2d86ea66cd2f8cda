#include "kiln/nn/mlp.h"

#include <ATen/ATen.h>

namespace kiln::nn {

GatedMlp::GatedMlp(int64_t hidden, int64_t intermediate, const at::TensorOptions& options)
    : gate_proj(hidden, intermediate, false, options),
      up_proj(hidden, intermediate, false, options),
      down_proj(intermediate, hidden, false, options) {}

at::Tensor GatedMlp::operator()(const at::Tensor& x) const {
  return down_proj(at::silu(gate_proj(x)) * up_proj(x));
}

void GatedMlp::init(double std) {
  gate_proj.init(std);
  up_proj.init(std);
  down_proj.init(std);
}

void GatedMlp::collect(NamedTensors& out, const std::string& prefix) const {
  gate_proj.collect(out, prefix + "gate_proj.");
  up_proj.collect(out, prefix + "up_proj.");
  down_proj.collect(out, prefix + "down_proj.");
}

} // namespace kiln::nn
