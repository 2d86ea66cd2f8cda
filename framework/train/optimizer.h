// AdamW with fp32 master weights and state: the parameters may be bf16 (the model's compute
// dtype); their fp32 copies, the moments and the update live here. Fused (one ATen kernel per
// parameter group) on CPU and CUDA.
#pragma once

#include "kiln/nn/module.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kiln::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1; ///< decoupled; 1-D parameters (biases, norm weights) get none
  /// A parameter that is not fp32 is updated in pieces of at most this many elements, so that
  /// only one piece's fp32 gradient exists at a time (a stacked expert weight of GLM-5 width has
  /// 1.6 B elements per 64 experts: 6.4 GB as one fp32 copy). The result does not depend on it.
  int64_t piece_elements = int64_t{1} << 26;
};

class AdamW {
 public:
  /// `params` are the model's live parameters (leaf tensors with requires_grad), by name.
  AdamW(nn::NamedTensors params, AdamWOptions options);

  /// The global L2 norm (fp32) of the gradients as they are (before clipping). Parameters without
  /// a gradient count as zero.
  double grad_norm() const;

  /// One update with learning rate `lr`: gradients (fp32) scaled by `grad_scale` (clipping), then
  /// AdamW on the fp32 masters, which are copied back into the parameters.
  void step(double lr, double grad_scale = 1.0);
  void zero_grad();
  int64_t steps() const { return steps_; }

  /// Everything step() needs to continue exactly: "exp_avg/<name>", "exp_avg_sq/<name>", and
  /// "master/<name>" when the parameter is not fp32. CPU tensors.
  nn::NamedTensors state() const;
  /// Restores state() output; every tensor must be present with the right shape. Throws
  /// kiln::Error (user) naming what is missing or wrong (FROM names the source in messages).
  void load_state(const std::map<std::string, at::Tensor>& tensors, int64_t steps,
                  const std::string& from);

 private:
  struct Slot {
    std::string name;
    at::Tensor param;  // the model's tensor
    at::Tensor master; // fp32; the param itself when it is fp32
    at::Tensor exp_avg;
    at::Tensor exp_avg_sq;
    bool decay = true;
  };
  std::vector<Slot> slots_;
  AdamWOptions options_;
  int64_t steps_ = 0;
};

} // namespace kiln::train
