// Linear layer, HF layout: weight [out, in], optional bias [out]; y = x @ W^T + b.
#pragma once

#include "kiln/nn/module.h"

namespace kiln::nn {

struct KILN_SDK_API Linear {
  at::Tensor weight; ///< [out, in]
  at::Tensor bias;   ///< [out] or undefined

  Linear() = default;
  Linear(int64_t in, int64_t out, bool bias, const at::TensorOptions& options);

  at::Tensor operator()(const at::Tensor& x) const; // [..., in] -> [..., out]
  void init(double std);
  void collect(NamedTensors& out, const std::string& prefix) const;
};

/// Token embedding table [V, H].
struct KILN_SDK_API Embedding {
  at::Tensor weight;

  Embedding() = default;
  Embedding(int64_t vocab, int64_t hidden, const at::TensorOptions& options);

  at::Tensor operator()(const at::Tensor& ids) const; // int64 [...] -> [..., H]
};

} // namespace kiln::nn
