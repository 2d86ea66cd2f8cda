// Dense gated MLP (SwiGLU): down(silu(gate(x)) * up(x)), no biases (GLM dense layers and shared
// experts).
#pragma once

#include "kiln/nn/linear.h"

namespace kiln::nn {

struct KILN_SDK_API GatedMlp {
  Linear gate_proj, up_proj, down_proj;

  GatedMlp() = default;
  GatedMlp(int64_t hidden, int64_t intermediate, const at::TensorOptions& options);

  at::Tensor operator()(const at::Tensor& x) const;
  void init(double std);
  void collect(NamedTensors& out, const std::string& prefix) const;
};

} // namespace kiln::nn
