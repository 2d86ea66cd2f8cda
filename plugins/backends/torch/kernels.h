// The torch reference backend: every op in plain ATen, on CPU and CUDA, differentiable through
// autograd. It defines what every other backend is tested against. Each op's .cpp states its
// numerics (which HF rounding steps it reproduces) and its memory bound.
#pragma once

#include "kiln/sdk/ops.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kiln::backends::torch_ref {

at::Tensor rms_norm(const ops::RmsNormArgs& args);
void adamw(const ops::AdamwArgs& args);
at::Tensor rope(const ops::RopeArgs& args);
at::Tensor attention(const ops::AttentionArgs& args);
ops::MoeRouteResult moe_route(const ops::MoeRouteArgs& args);
at::Tensor moe_experts(const ops::MoeExpertsArgs& args);
ops::LinearCrossEntropyResult linear_cross_entropy(const ops::LinearCrossEntropyArgs& args);
at::Tensor indexer_topk(const ops::IndexerTopkArgs& args);
at::Tensor sparse_mla(const ops::SparseMlaArgs& args);
at::Tensor gated_rms_norm(const ops::GatedRmsNormArgs& args);
ops::CausalConv1dResult causal_conv1d(const ops::CausalConv1dArgs& args);
ops::Mamba2ScanResult mamba2_scan(const ops::Mamba2ScanArgs& args);

/// Internals that tests drive directly.
namespace detail {

/// `attention` with `query_chunk` queries per chunk (0 = the memory budget's choice), so that
/// tests can cross chunk boundaries with tiny shapes.
at::Tensor attention_chunked(const ops::AttentionArgs& args, int64_t query_chunk);

/// Whether `moe_experts` takes the at::_grouped_mm strategy for these arguments (CUDA, bfloat16,
/// 16-byte-aligned operands); otherwise it loops over experts.
bool moe_experts_can_group(const ops::MoeExpertsArgs& args);
/// The two strategies of `moe_experts`, same rounding steps.
at::Tensor moe_experts_grouped(const ops::MoeExpertsArgs& args);
at::Tensor moe_experts_looped(const ops::MoeExpertsArgs& args);

/// `indexer_topk` with at most `query_chunk` query rows per chunk (0 = the memory budget's
/// choice).
at::Tensor indexer_topk_chunked(const ops::IndexerTopkArgs& args, int64_t query_chunk);

/// `sparse_mla` with `query_chunk` queries per chunk in forward and backward (0 = the memory
/// budget's choice), so that tests can cross chunk boundaries with tiny shapes.
at::Tensor sparse_mla_chunked(const ops::SparseMlaArgs& args, int64_t query_chunk);
/// `mamba2_scan` with `chunks_per_block` chunks per block (0 = the memory budget's choice), so
/// that tests can cross block boundaries with tiny shapes.
ops::Mamba2ScanResult mamba2_scan_blocked(const ops::Mamba2ScanArgs& args,
                                          int64_t chunks_per_block);
/// `mamba2_scan` of one token per row (BSHD, L = 1): the recurrence step itself.
ops::Mamba2ScanResult mamba2_scan_step(const ops::Mamba2ScanArgs& args);

} // namespace detail

} // namespace kiln::backends::torch_ref
