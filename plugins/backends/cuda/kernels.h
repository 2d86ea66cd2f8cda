// The cuda backend: hand-written Hopper (sm_90a) kernels behind kiln's op contracts. Each op's
// .cpp holds the ATen side (argument checks beyond the schema's, layout fix-ups, autograd, the
// cuBLAS parts); the .cu files hold the kernels and say in their header comment what they reach.
#pragma once

#include "kiln/sdk/ops.h"

#include <ATen/core/Tensor.h>

namespace kiln::backends::cuda {

bool sparse_mla_supports(const ops::SparseMlaArgs& args);
at::Tensor sparse_mla(const ops::SparseMlaArgs& args);

bool indexer_topk_supports(const ops::IndexerTopkArgs& args);
at::Tensor indexer_topk(const ops::IndexerTopkArgs& args);

bool linear_cross_entropy_supports(const ops::LinearCrossEntropyArgs& args);
ops::LinearCrossEntropyResult linear_cross_entropy(const ops::LinearCrossEntropyArgs& args);

bool moe_experts_supports(const ops::MoeExpertsArgs& args);
at::Tensor moe_experts(const ops::MoeExpertsArgs& args);

bool rms_norm_supports(const ops::RmsNormArgs& args);
at::Tensor rms_norm(const ops::RmsNormArgs& args);

bool adamw_supports(const ops::AdamwArgs& args);
void adamw(const ops::AdamwArgs& args);

/// True when `device` (a CUDA device) can run this plugin's kernels: their sm_90a code loads on
/// compute capability 9.0 only (H100, H200, GH200). When it cannot, says why as a dispatch note
/// (sdk::note_selection), so a forced `cuda` that falls back names the GPU it found.
bool runs_on(const c10::Device& device);

/// Whether `t`'s first element sits on a 16-byte boundary (the kernels' vector loads).
bool starts_16b(const at::Tensor& t);

/// `t` itself when its last dimension is contiguous, every other stride a multiple of 8 elements
/// and its start 16-byte aligned (rows the kernels can copy 16 bytes at a time); else a contiguous
/// copy in a fresh (aligned) allocation, even where `t` is contiguous but starts unaligned.
at::Tensor rows_16b(const at::Tensor& t);

/// Throws kiln::Error naming `what` when `status` is not cudaSuccess.
void check_launch(int status, const char* what);

} // namespace kiln::backends::cuda
