// Reference `moe_experts`: HF's `grouped_mm` experts forward (transformers integrations/moe.py,
// models.md §1.4), in two interchangeable strategies with the same rounding steps:
//   1. the N*k (token, slot) pairs are flattened and sorted by expert (a stable argsort); empty
//      slots (index -1) sort first and are dropped, so they cost nothing;
//   2. x rows are gathered in that order (index_select) and each expert's rows go through
//      [g | u] = x_e @ w_up[e]^T, h = silu(g) * u (or relu(u)^2), y = h @ w_down[e]^T; each GEMM
//      runs in x's dtype with float32 accumulation and rounds its output to x's dtype, and the
//      activation runs in x's dtype, as HF;
//        grouped: at::_grouped_mm over all experts at once (offsets = cumulative counts), used on
//                 CUDA for bfloat16 when every GEMM operand is 16-byte aligned (H and I multiples
//                 of 8), as HF's default experts kernel (torch's sm90+ grouped GEMM; torch falls
//                 back to its own per-group loop on older GPUs);
//        looped:  one at::matmul per expert that received rows (CPU, float32, float16, unaligned;
//                 at::_grouped_mm has no CPU backward);
//   3. y (x's dtype) * weight (float32; weights given in x's dtype are upcast, exactly) is
//      float32, scattered back to slot order ([N*k, H], zeros at empty slots), viewed [N, k, H]
//      and summed over the k slots in float32, then rounded to x's dtype once.
// The host needs the per-expert counts (one sync per call), which also sizes the valid rows.
// Differentiable in x, w_up, w_down and weights through autograd (index_select, matmul /
// _grouped_mm, silu, index_copy, sum).
#include "kernels.h"

#include <ATen/ATen.h>

#include <vector>

namespace kiln::backends::torch_ref {
namespace {

// The (token, slot) pairs of valid slots, sorted by expert.
struct Routing {
  at::Tensor slots;            // int64 [S]: flat slot index n * k + s, in expert order
  at::Tensor x_rows;           // [S, H]: x[slots / k]
  at::Tensor weights;          // float32 [S]
  std::vector<int64_t> counts; // [E]: rows per expert
};

Routing sort_by_expert(const ops::MoeExpertsArgs& args) {
  const int64_t num_experts = args.w_up.size(0);
  const int64_t k = args.indices.size(1);
  const at::Tensor flat = args.indices.reshape({-1});                    // [N*k]
  const at::Tensor order = at::argsort(flat, /*stable=*/true);           // -1 first
  const at::Tensor counts = at::bincount(flat + 1, {}, num_experts + 1); // [E + 1], slot 0 = empty
  const at::Tensor host = counts.to(at::kCPU).contiguous();
  const int64_t* c = host.data_ptr<int64_t>();
  Routing r;
  r.counts.assign(c + 1, c + 1 + num_experts);
  const int64_t empty = c[0];
  r.slots = order.narrow(0, empty, order.size(0) - empty);
  r.x_rows = args.x.index_select(0, at::floor_divide(r.slots, k));
  r.weights = args.weights.reshape({-1}).index_select(0, r.slots).to(at::kFloat);
  return r;
}

at::Tensor activate(const at::Tensor& up, ops::MoeActivation activation) {
  if (activation == ops::MoeActivation::kSwiGlu) {
    const auto halves = up.chunk(2, -1); // gate rows first, then up rows
    return at::silu(halves[0]) * halves[1];
  }
  return at::square(at::relu(up));
}

// Step 3: weight, return to slot order, sum the k slots in float32, round once.
at::Tensor combine(const ops::MoeExpertsArgs& args, const Routing& r, const at::Tensor& y) {
  const int64_t n = args.x.size(0);
  const int64_t k = args.indices.size(1);
  const int64_t h = args.x.size(1);
  const at::Tensor weighted = y * r.weights.unsqueeze(-1); // [S, H] float32
  const at::Tensor per_slot =
      at::zeros({n * k, h}, weighted.options()).index_copy(0, r.slots, weighted);
  return per_slot.view({n, k, h}).sum(1).to(args.x.scalar_type());
}

bool aligned16(const at::Tensor& t) {
  const int64_t elems = 16 / t.element_size();
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.stride(d) != 1 && t.stride(d) % elems != 0) return false;
  }
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

} // namespace

namespace detail {

bool moe_experts_can_group(const ops::MoeExpertsArgs& args) {
  if (!args.x.is_cuda() || args.x.scalar_type() != at::kBFloat16) return false;
  const int64_t h = args.x.size(1);
  const int64_t i = args.w_down.size(2);
  // Every operand of both GEMMs (x rows, h rows, and the expert matrices) has rows of H or I
  // (or 2I) elements: 16 bytes is 8 bfloat16 elements.
  return h % 8 == 0 && i % 8 == 0 && aligned16(args.w_up) && aligned16(args.w_down);
}

at::Tensor moe_experts_grouped(const ops::MoeExpertsArgs& args) {
  const Routing r = sort_by_expert(args);
  if (r.slots.numel() == 0) return combine(args, r, r.x_rows);
  const at::Tensor offsets =
      at::tensor(r.counts, at::kLong).cumsum(0).to(at::kInt).to(args.x.device());
  // x rows gathered by index_select are contiguous; w^T is a column-major view, which
  // _grouped_mm takes as is.
  const at::Tensor up = at::_grouped_mm(r.x_rows, args.w_up.transpose(-2, -1), offsets);
  const at::Tensor act = activate(up, args.activation).contiguous();
  const at::Tensor y = at::_grouped_mm(act, args.w_down.transpose(-2, -1), offsets);
  return combine(args, r, y);
}

at::Tensor moe_experts_looped(const ops::MoeExpertsArgs& args) {
  const Routing r = sort_by_expert(args);
  std::vector<at::Tensor> parts;
  int64_t start = 0;
  for (size_t e = 0; e < r.counts.size(); ++e) {
    const int64_t rows = r.counts[e];
    if (rows == 0) continue;
    const auto ei = static_cast<int64_t>(e);
    const at::Tensor xe = r.x_rows.narrow(0, start, rows);
    const at::Tensor act = activate(at::matmul(xe, args.w_up[ei].t()), args.activation);
    parts.push_back(at::matmul(act, args.w_down[ei].t())); // [rows, H]
    start += rows;
  }
  // No valid slot: x_rows is an empty [0, H], which keeps the output attached to x's graph.
  return combine(args, r, parts.empty() ? r.x_rows : at::cat(parts));
}

} // namespace detail

at::Tensor moe_experts(const ops::MoeExpertsArgs& args) {
  return detail::moe_experts_can_group(args) ? detail::moe_experts_grouped(args)
                                             : detail::moe_experts_looped(args);
}

} // namespace kiln::backends::torch_ref
