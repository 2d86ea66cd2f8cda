// Every op of the SDK: schemas (argument structs, traits) and the dispatching entry points that
// model code calls (kiln::ops::rms_norm(...), ...). Model code never calls a backend directly.
//
// Conventions shared by all ops (each op's header adds its own):
// - An op is an `XxxOp` traits struct (kName, Args, Result), an `XxxArgs` struct (tensors by
//   value plus scalars; device()/dtype() name the tensor that decides dispatch) and an entry
//   function kiln::ops::xxx(...) that validates the call and dispatches it.
// - Optional tensors are undefined at::Tensor values; a Result struct leaves the outputs that were
//   not requested undefined.
// - Layouts: BSHD [batch, seq, heads, dim] for padded batches; THD [tokens, heads, dim] for packed
//   sequences, described by `cu_seqlens`: int32 [N + 1], starting at 0, non-decreasing, ending at
//   the token count (offsets of the N sequences).
// - Entry functions check metadata only (defined, rank, sizes, dtypes, one device for all tensors)
//   and throw a one-line user kiln::Error "<op>: '<arg>' <expected>; found <actual>". They never
//   synchronize with an accelerator: index values (cu_seqlens, expert and top-k indices, labels)
//   are checked only when they already live on the CPU; elsewhere they are caller guarantees.
// - Backends may assume the checked properties, but not contiguity: they accept any strides
//   (calling .contiguous() where a kernel needs it). Ops are functional: they never write to their
//   inputs (`adamw`, the optimizer update, is the one in-place op), and outputs live on the
//   inputs' device.
// - "Differentiable" means the torch reference is differentiable through autograd and every other
//   backend must give the same gradients (within the op's tolerance) or decline the call in its
//   `supports` when a gradient is required.
#pragma once

#include "kiln/sdk/export.h"
#include "kiln/sdk/ops/adamw.h"
#include "kiln/sdk/ops/attention.h"
#include "kiln/sdk/ops/causal_conv1d.h"
#include "kiln/sdk/ops/gated_rms_norm.h"
#include "kiln/sdk/ops/indexer_topk.h"
#include "kiln/sdk/ops/linear_cross_entropy.h"
#include "kiln/sdk/ops/mamba2_scan.h"
#include "kiln/sdk/ops/moe_experts.h"
#include "kiln/sdk/ops/moe_route.h"
#include "kiln/sdk/ops/rms_norm.h"
#include "kiln/sdk/ops/rope.h"
#include "kiln/sdk/ops/sparse_mla.h"

#include <span>
#include <string_view>

namespace kiln::ops {

/// The permanent names of every op the SDK defines, in a fixed order (recipes' [backend.ops]
/// keys, kernel registrations and `kiln bench op --op` all use them).
KILN_SDK_API std::span<const std::string_view> op_names();

} // namespace kiln::ops
