#include "kiln/nn/loss.h"

#include <ATen/ATen.h>

namespace kiln::nn {

at::Tensor causal_lm_labels(const at::Tensor& ids, const at::Tensor& cu_seqlens) {
  if (cu_seqlens.defined()) { // [T]: shift within each document
    at::Tensor labels = at::roll(ids, -1, 0).clone();
    const at::Tensor ends = cu_seqlens.slice(0, 1).to(ids.device(), at::kLong) - 1;
    return labels.index_fill_(0, ends, kIgnoreIndex);
  }
  return at::cat({ids.slice(1, 1), at::full({ids.size(0), 1}, kIgnoreIndex, ids.options())}, 1);
}

at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels) {
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat),
                                labels.reshape({-1}).to(logits.device()), /*weight=*/{},
                                at::Reduction::Mean, kIgnoreIndex);
}

} // namespace kiln::nn
