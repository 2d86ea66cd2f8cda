// `moe_experts` on the cuda backend: the reference's grouped strategy (plugins/backends/torch/
// moe_experts.cpp: slots sorted by expert, x's rows gathered, at::_grouped_mm for both GEMMs, the
// activation in x's dtype) with its two data-movement steps as kernels of moe_combine.cu behind
// autograd Functions:
//   GatherRows: x_rows = x[slot / k] in expert order (index_select); backward sums each token's
//               rows of the gradient through the slot -> row map in float32 (the reference's
//               index_select backward is an atomic bf16 index_add);
//   Combine:    out[n] = sum_s weights[n, s] y[row of (n, s)] in float32, rounded once, straight
//               from y's sorted rows (the reference builds a float32 [N k, H] copy, a zeroed
//               buffer, an index_copy and a sum); backward d_y = weights * d_out per row and
//               d_weights = d_out . y.
// Rounding as the reference's (models.md §1.4): GEMM outputs and the activation in bf16, y times
// the float32 weight summed over the slots in float32, out rounded once; the gradient of the
// weights float32 (returned in the weights' dtype).
//
// supports(): a compute capability 9.0 GPU (runs_on), bfloat16 x, float32 or bf16 weights, H and
// I multiples of 8 and 16-byte aligned expert matrices (at::_grouped_mm's conditions, as the
// reference's grouped path), at most INT32_MAX tokens and slots.
#include "kernels.h"
#include "launch.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <limits>
#include <vector>

namespace kiln::backends::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// out [tokens, H] = per token, the sum of `rows`' rows that pos names (times weights, if given).
at::Tensor combine_rows(const at::Tensor& rows, const at::Tensor& pos, const at::Tensor& weights,
                        int64_t tokens, int64_t k) {
  const at::Tensor r = rows_16b(rows);
  at::Tensor out = at::empty({tokens, r.size(1)}, r.options());
  MoeCombineParams p;
  p.rows = r.data_ptr();
  p.pos = pos.data_ptr<int32_t>();
  p.weights = weights.defined() ? weights.data_ptr<float>() : nullptr;
  p.out = out.data_ptr();
  p.tokens = tokens;
  p.rows_ld = r.stride(0);
  p.k = static_cast<int>(k);
  p.hidden = static_cast<int>(r.size(1));
  check_launch(launch_moe_combine(p, c10::cuda::getCurrentCUDAStream()), "moe_experts combine");
  return out;
}

class GatherRows : public torch::autograd::Function<GatherRows> {
 public:
  // x [N, H]; slots int64 [S] (flat slot n k + s of each sorted row); pos int32 [N k].
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& slots,
                            const at::Tensor& pos, int64_t k) {
    ctx->save_for_backward({pos});
    ctx->saved_data["tokens"] = x.size(0);
    ctx->saved_data["k"] = k;
    return x.index_select(0, at::floor_divide(slots, k));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor pos = ctx->get_saved_variables()[0];
    const c10::cuda::CUDAGuard guard(pos.device());
    const at::Tensor d_x =
        combine_rows(grads[0].to(at::kBFloat16), pos, at::Tensor(),
                     ctx->saved_data["tokens"].toInt(), ctx->saved_data["k"].toInt());
    return {d_x, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class Combine : public torch::autograd::Function<Combine> {
 public:
  // y [S, H] bf16 in sorted order; weights [N, k] (float32 or bf16); slots, pos as GatherRows.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y, const at::Tensor& weights,
                            const at::Tensor& slots, const at::Tensor& pos) {
    const c10::cuda::CUDAGuard guard(y.device());
    const int64_t tokens = weights.size(0), k = weights.size(1);
    const at::Tensor w = weights.to(at::kFloat).contiguous().view({-1});
    const at::Tensor y_rows = rows_16b(y);
    ctx->save_for_backward({y_rows, w, slots});
    ctx->saved_data["k"] = k;
    ctx->saved_data["weights_dtype"] = weights.scalar_type();
    return combine_rows(y_rows, pos, w, tokens, k);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& y = saved[0];
    const at::Tensor& w = saved[1];
    const at::Tensor& slots = saved[2];
    const c10::cuda::CUDAGuard guard(y.device());
    const int64_t k = ctx->saved_data["k"].toInt();
    const at::Tensor d_out = rows_16b(grads[0].to(at::kBFloat16));
    at::Tensor d_y = at::empty(y.sizes(), y.options().memory_format(at::MemoryFormat::Contiguous));
    at::Tensor d_w = at::zeros({w.size(0)}, w.options());
    MoeCombineBwdParams p;
    p.d_out = d_out.data_ptr();
    p.d_out_ld = d_out.stride(0);
    p.y = y.data_ptr();
    p.slots = slots.data_ptr<int64_t>();
    p.weights = w.data_ptr<float>();
    p.d_y = d_y.data_ptr();
    p.d_weights = d_w.data_ptr<float>();
    p.rows = y.size(0);
    p.k = static_cast<int>(k);
    p.hidden = static_cast<int>(y.size(1));
    check_launch(launch_moe_combine_bwd(p, c10::cuda::getCurrentCUDAStream()),
                 "moe_experts combine backward");
    const auto dtype = ctx->saved_data["weights_dtype"].toScalarType();
    return {d_y, d_w.view({-1, k}).to(dtype), at::Tensor(), at::Tensor()};
  }
};

at::Tensor activate(const at::Tensor& up, ops::MoeActivation activation) {
  if (activation == ops::MoeActivation::kSwiGlu) {
    const auto halves = up.chunk(2, -1); // gate rows first, then up rows
    return at::silu(halves[0]) * halves[1];
  }
  return at::square(at::relu(up));
}

bool aligned16(const at::Tensor& t) {
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.stride(d) != 1 && t.stride(d) % 8 != 0) return false;
  }
  return starts_16b(t);
}

} // namespace

bool moe_experts_supports(const ops::MoeExpertsArgs& a) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  const at::ScalarType w = a.weights.scalar_type();
  return a.x.is_cuda() && a.x.scalar_type() == at::kBFloat16 &&
         (w == at::kFloat || w == at::kBFloat16) && runs_on(a.x.device()) && a.x.size(1) % 8 == 0 &&
         a.w_down.size(2) % 8 == 0 && aligned16(a.w_up) && aligned16(a.w_down) &&
         a.indices.numel() <= kMax;
}

at::Tensor moe_experts(const ops::MoeExpertsArgs& a) {
  const c10::cuda::CUDAGuard guard(a.x.device());
  const int64_t num_experts = a.w_up.size(0);
  const int64_t k = a.indices.size(1);
  // Slots sorted by expert (stable; -1 first, dropped), as the reference; the host needs the
  // per-expert counts (one sync).
  const at::Tensor flat = a.indices.reshape({-1});
  const at::Tensor order = at::argsort(flat, /*stable=*/true);
  const at::Tensor counts = at::bincount(flat + 1, {}, num_experts + 1);
  const at::Tensor host = counts.to(at::kCPU).contiguous();
  const int64_t* c = host.data_ptr<int64_t>();
  const int64_t empty = c[0];
  const at::Tensor slots = order.narrow(0, empty, order.size(0) - empty);
  at::Tensor pos = at::full({flat.size(0)}, -1, flat.options().dtype(at::kInt));
  if (slots.numel() > 0) {
    pos.index_put_({slots}, at::arange(slots.numel(), pos.options()));
  }
  const at::Tensor x_rows = GatherRows::apply(a.x, slots, pos, k);
  at::Tensor y = x_rows; // no valid slot: [0, H], still attached to x
  if (slots.numel() > 0) {
    const std::vector<int64_t> per_expert(c + 1, c + 1 + num_experts);
    const at::Tensor offsets =
        at::tensor(per_expert, at::kLong).cumsum(0).to(at::kInt).to(a.x.device());
    const at::Tensor up = at::_grouped_mm(x_rows, a.w_up.transpose(-2, -1), offsets);
    const at::Tensor act = activate(up, a.activation).contiguous();
    y = at::_grouped_mm(act, a.w_down.transpose(-2, -1), offsets);
  }
  return Combine::apply(y, a.weights, slots, pos);
}

} // namespace kiln::backends::cuda
