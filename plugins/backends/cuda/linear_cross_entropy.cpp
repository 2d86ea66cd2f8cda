// `linear_cross_entropy` on the cuda backend: the reference's chunked algorithm (plugins/backends/
// torch/linear_cross_entropy.cpp) with its float32 elementwise passes replaced by the row kernels
// of cross_entropy.cu. The GEMMs are cuBLAS (bf16 operands, float32 accumulation, bf16 logits as
// HF's lm_head output); a chunk's logits exist only in bf16:
//   forward:  chunks of tokens over the whole vocabulary: logits GEMM, then lse_kernel writes the
//             per-token log-sum-exp and loss (one read of the chunk);
//   backward: slices of the vocabulary over all tokens (V >= T, an LM head) or chunks of tokens
//             (V < T): the logits GEMM again, grad_kernel turns them into dlogits in place, then
//             dweight = dlogits^T hidden and dhidden = dlogits weight; the gradient spread over
//             the chunks adds up in float32 (dhidden for slices, dweight for token chunks).
// Since a chunk holds only bf16 logits (2 bytes each against the reference's ~8: bf16, a float32
// copy, the bf16 gradient), a chunk holds 2^28 logits (512 MiB) where the reference's holds 2^26:
// fewer, larger GEMMs and fewer float32 accumulations (10 instead of 39 at T 16384, V 154880)
// within the reference's memory.
//
// Rounding as the reference: logits bf16, lse and loss float32, dlogits = (softmax - onehot) *
// scale in float32 rounded to bf16 once, GEMMs with float32 accumulation, the float32 sums
// rounded once.
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

constexpr int64_t kLogitBudget = int64_t{1} << 28; // bf16 logits per chunk (512 MiB)

// n rounded down to a multiple of `granule` where that leaves at least one, at most `limit`
// (aligned GEMM operands: cuBLAS runs unaligned leading dimensions on far slower kernels).
int64_t aligned(int64_t n, int64_t granule, int64_t limit) {
  if (n >= limit) return std::max<int64_t>(limit, 1);
  return n >= granule ? n - n % granule : std::max<int64_t>(n, 1);
}

int64_t chunk_tokens(int64_t tokens, int64_t vocab, int64_t requested) {
  if (requested > 0) return requested;
  return aligned(kLogitBudget / std::max<int64_t>(vocab, 1), 8, tokens);
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

// dlogits of a chunk, in place: logits [rows, cols] (bf16, contiguous) of vocabulary entries
// [col0, col0 + cols) for the tokens whose labels, lse and row scales are given.
void to_dlogits(at::Tensor& logits, const at::Tensor& labels, const at::Tensor& lse,
                const at::Tensor& row_scale, int64_t col0, int64_t ignore_index) {
  CrossEntropyRowsParams p = rows_of(logits, labels, col0, ignore_index);
  p.lse = lse.data_ptr<float>();
  p.row_scale = row_scale.data_ptr<float>();
  check_launch(launch_cross_entropy_grad(p, c10::cuda::getCurrentCUDAStream()),
               "linear_cross_entropy backward rows");
}

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  // Returns {loss, per_token}.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden,
                               const at::Tensor& weight, const at::Tensor& labels,
                               int64_t ignore_index, bool mean, int64_t chunk_size) {
    const c10::cuda::CUDAGuard guard(hidden.device());
    const int64_t tokens = hidden.size(0);
    const int64_t step = chunk_tokens(tokens, weight.size(0), chunk_size);
    const at::Tensor labels_c = labels.contiguous();
    const auto f32 = hidden.options().dtype(at::kFloat);
    at::Tensor lse = at::empty({tokens}, f32);
    at::Tensor per_token = at::empty({tokens}, f32);
    for (int64_t t0 = 0; t0 < tokens; t0 += step) {
      const int64_t c = std::min(step, tokens - t0);
      const at::Tensor logits = at::mm(hidden.narrow(0, t0, c), weight.t()); // [c, V] bf16
      CrossEntropyRowsParams p = rows_of(logits, labels_c.narrow(0, t0, c), 0, ignore_index);
      p.lse = lse.data_ptr<float>() + t0;
      p.loss = per_token.data_ptr<float>() + t0;
      check_launch(launch_cross_entropy_lse(p, c10::cuda::getCurrentCUDAStream()),
                   "linear_cross_entropy forward rows");
    }
    const at::Tensor valid = labels_c != ignore_index;
    const at::Tensor count = valid.sum().to(at::kFloat);
    at::Tensor loss = per_token.sum();
    if (mean) loss = loss / count.clamp_min(1.0);

    ctx->save_for_backward({hidden, weight, labels_c, valid, lse, count});
    ctx->saved_data["mean"] = mean;
    ctx->saved_data["step"] = step;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->mark_non_differentiable({per_token});
    return {loss, per_token};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& hidden = saved[0];
    const at::Tensor& weight = saved[1];
    const c10::cuda::CUDAGuard guard(hidden.device());
    Chunks ch{hidden, weight, saved[2], saved[4]};
    ch.ignore_index = ctx->saved_data["ignore_index"].toInt();
    ch.step = ctx->saved_data["step"].toInt();
    ch.want_hidden = ctx->needs_input_grad(0);
    ch.want_weight = ctx->needs_input_grad(1);
    at::Tensor scale = grads[0].to(at::kFloat); // 0-dim
    if (ctx->saved_data["mean"].toBool()) scale = scale / saved[5].clamp_min(1.0);
    ch.row_scale = saved[3].to(at::kFloat) * scale; // [T]
    const Grads g = weight.size(0) >= hidden.size(0) ? by_vocab_slices(ch) : by_token_chunks(ch);
    return {g.hidden, g.weight, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }

 private:
  struct Chunks {
    const at::Tensor &hidden, &weight, &labels, &lse;
    at::Tensor row_scale;
    int64_t ignore_index = -100, step = 1;
    bool want_hidden = false, want_weight = false;
  };
  struct Grads {
    at::Tensor hidden, weight;
  };

  // Chunks of `step` tokens over the whole vocabulary; dweight adds up in float32.
  static Grads by_token_chunks(const Chunks& ch) {
    const int64_t tokens = ch.hidden.size(0);
    Grads out;
    if (ch.want_hidden) out.hidden = at::empty_like(ch.hidden);
    at::Tensor d_weight; // float32 [V, H]
    if (ch.want_weight)
      d_weight = at::zeros(ch.weight.sizes(), ch.weight.options().dtype(at::kFloat));
    for (int64_t t0 = 0; t0 < tokens; t0 += ch.step) {
      const int64_t c = std::min(ch.step, tokens - t0);
      const at::Tensor h = ch.hidden.narrow(0, t0, c);
      at::Tensor g = at::mm(h, ch.weight.t()); // [c, V]
      to_dlogits(g, ch.labels.narrow(0, t0, c), ch.lse.narrow(0, t0, c),
                 ch.row_scale.narrow(0, t0, c), 0, ch.ignore_index);
      if (ch.want_hidden) {
        at::Tensor rows = out.hidden.narrow(0, t0, c);
        at::mm_out(rows, g, ch.weight);
      }
      if (ch.want_weight) d_weight.add_(at::mm(g.t(), h, at::kFloat));
    }
    if (ch.want_weight) out.weight = d_weight.to(ch.weight.scalar_type());
    return out;
  }

  // Slices of the vocabulary holding as many logits as `step` tokens' chunk would, over all
  // tokens; dhidden adds up in float32.
  static Grads by_vocab_slices(const Chunks& ch) {
    const int64_t tokens = ch.hidden.size(0), vocab = ch.weight.size(0);
    const int64_t rows = aligned(ch.step * vocab / std::max<int64_t>(tokens, 1), 128, vocab);
    Grads out;
    at::Tensor d_hidden; // float32 [T, H]
    if (ch.want_hidden)
      d_hidden = at::zeros(ch.hidden.sizes(), ch.hidden.options().dtype(at::kFloat));
    if (ch.want_weight) out.weight = at::empty(ch.weight.sizes(), ch.weight.options());
    for (int64_t v0 = 0; v0 < vocab; v0 += rows) {
      const int64_t c = std::min(rows, vocab - v0);
      const at::Tensor w = ch.weight.narrow(0, v0, c);
      at::Tensor g = at::mm(ch.hidden, w.t()); // [T, c]
      to_dlogits(g, ch.labels, ch.lse, ch.row_scale, v0, ch.ignore_index);
      if (ch.want_weight) {
        at::Tensor slice = out.weight.narrow(0, v0, c);
        at::mm_out(slice, g.t(), ch.hidden);
      }
      if (ch.want_hidden) d_hidden.add_(at::mm(g, w, at::kFloat));
    }
    if (ch.want_hidden) out.hidden = d_hidden.to(ch.hidden.scalar_type());
    return out;
  }
};

} // namespace

bool linear_cross_entropy_supports(const ops::LinearCrossEntropyArgs& a) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  return a.hidden.is_cuda() && a.hidden.scalar_type() == at::kBFloat16 &&
         runs_on(a.hidden.device()) && a.hidden.size(0) <= kMax && a.weight.size(0) <= kMax;
}

ops::LinearCrossEntropyResult linear_cross_entropy(const ops::LinearCrossEntropyArgs& a) {
  const variable_list out =
      LinearCrossEntropyFunction::apply(a.hidden, a.weight, a.labels, a.ignore_index,
                                        a.reduction == ops::LossReduction::kMean, a.chunk_size);
  ops::LinearCrossEntropyResult result;
  result.loss = out[0];
  if (a.return_per_token) result.per_token = out[1];
  return result;
}

} // namespace kiln::backends::cuda
