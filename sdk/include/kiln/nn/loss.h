// HF's causal-LM loss (ForCausalLMLoss): labels are the input ids shifted left by one, the last
// position of each sequence (or packed document) has none (-100), mean cross-entropy over fp32
// logits. One definition for the CLI, the trainer, the benchmarks and the tests.
#pragma once

#include "kiln/nn/module.h"

namespace kiln::nn {

constexpr int64_t kIgnoreIndex = -100;

/// ids int64 [B, S] -> labels [B, S]; or packed ids [T] with int32 cu_seqlens [N + 1] -> [T]
/// (shifted within each document). On ids' device.
KILN_SDK_API at::Tensor causal_lm_labels(const at::Tensor& ids, const at::Tensor& cu_seqlens = {});

/// Mean cross-entropy of logits [..., V] (upcast to fp32) against labels [...], ignoring -100.
KILN_SDK_API at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels);

} // namespace kiln::nn
