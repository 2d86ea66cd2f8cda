// `linear_cross_entropy` on the cuda backend: the reference's chunks of tokens (plugins/backends/
// torch/linear_cross_entropy.cpp) with its float32 elementwise passes replaced by the row kernels
// of cross_entropy.cu, and the gradients formed in the forward pass, so that the logits GEMM runs
// once instead of twice. Per chunk of tokens over the whole vocabulary (cuBLAS GEMMs: bf16
// operands, float32 accumulation, bf16 logits as HF's lm_head output):
//   logits = hidden_c weight^T; lse_kernel writes the per-token log-sum-exp and loss (one read);
//   when a gradient is wanted (autograd on, hidden or weight requiring it): grad_kernel turns the
//   logits into dlogits = (softmax - onehot) * scale in place (one read, one write; scale =
//   1 / the valid-token count for kMean, 1 for kSum, 0 at ignored tokens), then dhidden_c =
//   dlogits weight (bf16, its rows only) and dweight += dlogits^T hidden_c (the first chunk
//   writes it, the next ones add in cuBLAS's epilogue: float32 arithmetic, bf16 storage).
// Backward multiplies the stored gradients by d(loss) (one bf16 rounding, none when it is 1).
// That saves the reference's second logits GEMM (2 T V H FLOP: 42 ms of 185 at T 16384, V 154880,
// H 6144 on an H100) and costs memory between forward and backward: dweight ([V, H], 1.9 GB at
// GLM-5's head) and dhidden are held from the forward pass on, and a chunk holds 2^30 bf16 logits
// (2 GiB) where a forward without gradients holds 2^28 (the reference: 2^26 logits, ~8 bytes each
// with its float32 copies).
//
// Rounding: as the reference (logits bf16; lse and loss float32; dlogits float32 rounded to bf16
// once; GEMMs with float32 accumulation), except dweight: rounded to bf16 once per chunk of tokens
// (3 times at T 16384, V 154880) instead of once.
//
// supports(): a compute capability 9.0 GPU (runs_on; the row kernels would run on any GPU, but
// the backend's code is sm_90a), bfloat16, at most INT32_MAX tokens and vocabulary entries.
#include "kernels.h"
#include "launch.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace kiln::backends::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kLogitBudget = int64_t{1} << 28;     // bf16 logits per chunk, no gradients
constexpr int64_t kGradLogitBudget = int64_t{1} << 30; // ... with gradients (2 GiB)

// n rounded down to a multiple of `granule` where that leaves at least one, at most `limit`
// (aligned GEMM operands: cuBLAS runs unaligned leading dimensions on far slower kernels).
int64_t aligned(int64_t n, int64_t granule, int64_t limit) {
  if (n >= limit) return std::max<int64_t>(limit, 1);
  return n >= granule ? n - n % granule : std::max<int64_t>(n, 1);
}

// Tokens per chunk: the caller's chunk_size, else as many as `budget` logits hold.
int64_t chunk_tokens(int64_t tokens, int64_t vocab, int64_t requested, int64_t budget) {
  if (requested > 0) return requested;
  return aligned(budget / std::max<int64_t>(vocab, 1), 8, tokens);
}

CrossEntropyRowsParams rows_of(const at::Tensor& logits, const at::Tensor& labels, int64_t col0,
                               int64_t ignore_index) {
  CrossEntropyRowsParams p;
  p.logits = logits.data_ptr();
  p.labels = labels.data_ptr<int64_t>();
  p.ld = logits.stride(0);
  p.rows = logits.size(0);
  p.cols = static_cast<int>(logits.size(1));
  p.col0 = col0;
  p.ignore_index = ignore_index;
  return p;
}

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  // Returns {loss, per_token}; forms d(loss)/d(hidden), d(loss)/d(weight) where asked.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden,
                               const at::Tensor& weight, const at::Tensor& labels,
                               int64_t ignore_index, bool mean, int64_t chunk_size,
                               bool want_hidden, bool want_weight) {
    const c10::cuda::CUDAGuard guard(hidden.device());
    const int64_t tokens = hidden.size(0);
    const bool grads = want_hidden || want_weight;
    const int64_t step =
        chunk_tokens(tokens, weight.size(0), chunk_size, grads ? kGradLogitBudget : kLogitBudget);
    const at::Tensor labels_c = labels.contiguous();
    const auto f32 = hidden.options().dtype(at::kFloat);
    at::Tensor lse = at::empty({tokens}, f32);
    at::Tensor per_token = at::empty({tokens}, f32);
    const at::Tensor valid = labels_c != ignore_index;
    const at::Tensor count = valid.sum().to(at::kFloat);
    at::Tensor row_scale, d_hidden, d_weight; // [T] float32: d(loss)/d(loss_t)
    if (grads)
      row_scale = mean ? valid.to(at::kFloat) / count.clamp_min(1.0) : valid.to(at::kFloat);
    if (want_hidden) d_hidden = at::empty(hidden.sizes(), hidden.options());
    if (want_weight) d_weight = at::empty(weight.sizes(), weight.options());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    for (int64_t t0 = 0; t0 < tokens; t0 += step) {
      const int64_t c = std::min(step, tokens - t0);
      const at::Tensor h = hidden.narrow(0, t0, c);
      at::Tensor logits = at::mm(h, weight.t()); // [c, V] bf16
      CrossEntropyRowsParams p = rows_of(logits, labels_c.narrow(0, t0, c), 0, ignore_index);
      p.lse = lse.data_ptr<float>() + t0;
      p.loss = per_token.data_ptr<float>() + t0;
      check_launch(launch_cross_entropy_lse(p, stream), "linear_cross_entropy forward rows");
      if (!grads) continue;
      p.row_scale = row_scale.data_ptr<float>() + t0;
      check_launch(launch_cross_entropy_grad(p, stream), "linear_cross_entropy gradient rows");
      if (want_hidden) {
        at::Tensor rows = d_hidden.narrow(0, t0, c);
        at::mm_out(rows, logits, weight);
      }
      if (want_weight) {
        if (t0 == 0) {
          at::mm_out(d_weight, logits.t(), h);
        } else {
          d_weight.addmm_(logits.t(), h);
        }
      }
    }
    at::Tensor loss = per_token.sum();
    if (mean) loss = loss / count.clamp_min(1.0);
    if (want_hidden) ctx->saved_data["d_hidden"] = d_hidden;
    if (want_weight) ctx->saved_data["d_weight"] = d_weight;
    ctx->mark_non_differentiable({per_token});
    return {loss, per_token};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor& d_loss = grads[0]; // 0-dim
    auto scaled = [&](const char* key) {
      const auto it = ctx->saved_data.find(key);
      if (it == ctx->saved_data.end() || !d_loss.defined()) return at::Tensor();
      const at::Tensor g = it->second.toTensor();
      return g * d_loss.to(at::kFloat); // g's dtype: float32 arithmetic, one rounding
    };
    return {scaled("d_hidden"), scaled("d_weight"), at::Tensor(), at::Tensor(),
            at::Tensor(),       at::Tensor(),       at::Tensor(), at::Tensor()};
  }
};

} // namespace

bool linear_cross_entropy_supports(const ops::LinearCrossEntropyArgs& a) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  return a.hidden.is_cuda() && a.hidden.scalar_type() == at::kBFloat16 &&
         runs_on(a.hidden.device()) && a.hidden.size(0) <= kMax && a.weight.size(0) <= kMax;
}

ops::LinearCrossEntropyResult linear_cross_entropy(const ops::LinearCrossEntropyArgs& a) {
  // Inside the Function's forward autograd is off: ask here which gradients a backward will want.
  const bool grad_mode = c10::GradMode::is_enabled();
  const variable_list out = LinearCrossEntropyFunction::apply(
      a.hidden, a.weight, a.labels, a.ignore_index, a.reduction == ops::LossReduction::kMean,
      a.chunk_size, grad_mode && a.hidden.requires_grad(), grad_mode && a.weight.requires_grad());
  ops::LinearCrossEntropyResult result;
  result.loss = out[0];
  if (a.return_per_token) result.per_token = out[1];
  return result;
}

} // namespace kiln::backends::cuda
