// AdamW with fp32 master weights and state: the parameters may be bf16 (the model's compute
// dtype); their fp32 copies and the moments live here, the update is op `adamw` (one dispatched
// call per parameter: ATen's fused AdamW in the torch reference, one pass over a bf16 parameter,
// its gradient, master and moments in the cuda backend).
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
  /// The most elements of a float32 temporary the update may allocate (op adamw's
  /// piece_elements: the torch reference copies a non-fp32 gradient to fp32 in pieces of this
  /// size; a stacked expert weight of GLM-5 width has 1.6 B elements per 64 experts, 6.4 GB as one
  /// fp32 copy). The result depends on it only through float32 rounding.
  int64_t piece_elements = int64_t{1} << 26;
};

class AdamW {
 public:
  /// `params` are the model's live parameters (leaf tensors with requires_grad), by name.
  AdamW(nn::NamedTensors params, AdamWOptions options);

  /// The global L2 norm (fp32) of the gradients as they are (before clipping). Parameters without
  /// a gradient count as zero.
  double grad_norm() const;

  /// One update with learning rate `lr`: gradients (fp32) multiplied by `grad_scale` (clipping),
  /// then AdamW on the fp32 masters, which are rounded back into the parameters.
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
