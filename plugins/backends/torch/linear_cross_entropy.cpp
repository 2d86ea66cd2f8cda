// Reference `linear_cross_entropy`: HF's lm_head + ForCausalLMLoss (models.md §1.7) in chunks,
// so that no [T, V] buffer ever exists:
//   logits = hidden @ weight^T            hidden's dtype, float32 accumulation, rounded (HF's
//                                         lm_head output), then .float() as HF's loss does
//   lse = logsumexp(logits, -1)           float32
//   loss_t = lse_t - logits[t, label_t]   float32; 0 at ignore_index
//   kSum: sum_t loss_t;  kMean: sum_t loss_t / max(valid count, 1)   (0, not NaN, when none)
// A chunk holds about kLogitBudget (2^26) logits, or chunk_size * V when the caller sets
// chunk_size (tokens per chunk). Forward walks chunks of tokens (c * V <= budget) and keeps the
// per-token logsumexp (float32 [T]).
//
// Autograd: a custom Function whose backward recomputes the logits chunk by chunk and forms
//   dlogits = scale * (softmax(logits) - onehot(label))   (0 rows at ignored tokens)
// with scale = dloss (kSum) or dloss / max(count, 1) (kMean), in float32, rounded to hidden's
// dtype (the gradient of HF's .float()), then dhidden = dlogits @ weight and dweight =
// dlogits^T @ hidden, GEMMs in hidden's dtype with float32 accumulation. The chunks run along
// the longer of the two dimensions so that the gradient accumulated across them is the smaller:
//   V >= T (an LM head: vocabularies are larger than most steps' token counts): slices of the
//     vocabulary, all tokens each. dweight's rows of a slice come from one GEMM over all tokens
//     (no accumulator); dhidden adds up in a float32 [T, H] buffer, each slice's product taken
//     in float32 from the bf16 operands (at::mm with out_dtype on CUDA, a float32 GEMM of the
//     widened operands on the CPU).
//   V < T: chunks of tokens, all of the vocabulary each; dhidden's rows of a chunk come from one
//     GEMM; dweight adds up in a float32 [V, H] buffer (in place when hidden is float32).
// Chunk and slice widths are whole multiples of 8 and 128 (aligned GEMMs). At T = 16384,
// V = 154880, H = 6144 (bf16) the vocabulary slicing accumulates 39 x 0.4 GB instead of
// 38 x 3.8 GB and holds 0.4 GB instead of 3.8 GB. `per_token` carries no gradient.
#include "kernels.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>

namespace kiln::backends::torch_ref {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kLogitBudget = int64_t{1} << 26; // logits elements per chunk

// n rounded down to a multiple of `granule` where that leaves at least one, at most `limit`.
// cuBLAS takes its slow unaligned kernels for a GEMM whose leading dimension is not a multiple
// of 8 elements: 4093-wide vocabulary slices (2^26 / 16384 tokens) ran the LM head's backward
// at a fifth of the aligned speed on an H200 (702 against 131 ms a step).
int64_t aligned(int64_t n, int64_t granule, int64_t limit) {
  if (n >= limit) return std::max<int64_t>(limit, 1);
  return n >= granule ? n - n % granule : std::max<int64_t>(n, 1);
}

int64_t chunk_tokens(int64_t tokens, int64_t vocab, int64_t requested) {
  if (requested > 0) return requested;
  return aligned(kLogitBudget / std::max<int64_t>(vocab, 1), 8, tokens);
}

// float32 logits of the rows of `hidden` against the rows of `weight`, rounded to hidden's dtype
// first as HF's lm_head output.
at::Tensor logits_f32(const at::Tensor& hidden, const at::Tensor& weight) {
  return at::matmul(hidden, weight.t()).to(at::kFloat);
}

// dlogits in hidden's dtype from one chunk's float32 logits [rows, cols] (consumed): softmax
// with the saved logsumexp `lse` [rows], minus `hit` [rows] at column `target` [rows] (the
// one-hot of the label: 1, or 0 where the label lies outside the chunk's columns), times
// `row_scale` [rows].
at::Tensor dlogits(at::Tensor logits, const at::Tensor& lse, const at::Tensor& target,
                   const at::Tensor& hit, const at::Tensor& row_scale, at::ScalarType dtype) {
  logits.sub_(lse.unsqueeze(1)).exp_();
  logits.scatter_add_(1, target.unsqueeze(1), hit.neg().unsqueeze(1));
  logits.mul_(row_scale.unsqueeze(1));
  return logits.to(dtype);
}

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  // Returns {loss, per_token}.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden,
                               const at::Tensor& weight, const at::Tensor& labels,
                               int64_t ignore_index, bool mean, int64_t chunk_size) {
    const int64_t tokens = hidden.size(0);
    const int64_t step = chunk_tokens(tokens, weight.size(0), chunk_size);
    const at::Tensor valid = labels != ignore_index;                           // [T] bool
    const at::Tensor safe_labels = labels.masked_fill(valid.logical_not(), 0); // [T]
    const auto f32 = hidden.options().dtype(at::kFloat);
    at::Tensor lse = at::empty({tokens}, f32);
    at::Tensor per_token = at::empty({tokens}, f32);
    for (int64_t t0 = 0; t0 < tokens; t0 += step) {
      const int64_t c = std::min(step, tokens - t0);
      const at::Tensor logits = logits_f32(hidden.narrow(0, t0, c), weight); // [c, V]
      const at::Tensor chunk_lse = at::logsumexp(logits, {-1});
      const at::Tensor target = logits.gather(1, safe_labels.narrow(0, t0, c).unsqueeze(1));
      lse.narrow(0, t0, c).copy_(chunk_lse);
      per_token.narrow(0, t0, c).copy_(chunk_lse - target.squeeze(1));
    }
    per_token.masked_fill_(valid.logical_not(), 0.0);
    const at::Tensor count = valid.sum().to(at::kFloat);
    at::Tensor loss = per_token.sum();
    if (mean) loss = loss / count.clamp_min(1.0);

    ctx->save_for_backward({hidden, weight, safe_labels, valid, lse, count});
    ctx->saved_data["mean"] = mean;
    ctx->saved_data["step"] = step;
    ctx->mark_non_differentiable({per_token});
    return {loss, per_token};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& hidden = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& labels = saved[2]; // ignored tokens replaced by 0
    const at::Tensor& valid = saved[3];
    const at::Tensor& lse = saved[4];
    const at::Tensor& count = saved[5];
    const bool mean = ctx->saved_data["mean"].toBool();
    const int64_t step = ctx->saved_data["step"].toInt();
    const bool want_hidden = ctx->needs_input_grad(0);
    const bool want_weight = ctx->needs_input_grad(1);

    at::Tensor scale = grads[0].to(at::kFloat); // 0-dim
    if (mean) scale = scale / count.clamp_min(1.0);
    const at::Tensor row_scale = valid.to(at::kFloat) * scale; // [T]
    const Grads g = weight.size(0) >= hidden.size(0)
                        ? by_vocab_slices(hidden, weight, labels, lse, row_scale, step, want_hidden,
                                          want_weight)
                        : by_token_chunks(hidden, weight, labels, lse, row_scale, step, want_hidden,
                                          want_weight);
    return {g.hidden, g.weight, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }

 private:
  struct Grads {
    at::Tensor hidden, weight;
  };

  // Chunks of `step` tokens over the whole vocabulary.
  static Grads by_token_chunks(const at::Tensor& hidden, const at::Tensor& weight,
                               const at::Tensor& labels, const at::Tensor& lse,
                               const at::Tensor& row_scale, int64_t step, bool want_hidden,
                               bool want_weight) {
    const int64_t tokens = hidden.size(0);
    const at::ScalarType dtype = hidden.scalar_type();
    Grads out;
    if (want_hidden) out.hidden = at::empty_like(hidden);
    const bool accumulate_f32 = dtype != at::kFloat && step < tokens;
    if (want_weight) {
      out.weight =
          at::zeros(weight.sizes(), weight.options().dtype(accumulate_f32 ? at::kFloat : dtype));
    }
    for (int64_t t0 = 0; t0 < tokens; t0 += step) {
      const int64_t c = std::min(step, tokens - t0);
      const at::Tensor g_lo =
          dlogits(logits_f32(hidden.narrow(0, t0, c), weight), lse.narrow(0, t0, c),
                  labels.narrow(0, t0, c), at::ones({c}, lse.options()), row_scale.narrow(0, t0, c),
                  dtype); // [c, V]
      if (want_hidden) out.hidden.narrow(0, t0, c).copy_(at::matmul(g_lo, weight));
      if (want_weight) out.weight.add_(at::matmul(g_lo.t(), hidden.narrow(0, t0, c)));
    }
    if (want_weight) out.weight = out.weight.to(dtype);
    return out;
  }

  // Slices of the vocabulary holding as many logits as `step` tokens' chunk would, over all
  // tokens.
  static Grads by_vocab_slices(const at::Tensor& hidden, const at::Tensor& weight,
                               const at::Tensor& labels, const at::Tensor& lse,
                               const at::Tensor& row_scale, int64_t step, bool want_hidden,
                               bool want_weight) {
    const int64_t tokens = hidden.size(0), vocab = weight.size(0);
    const at::ScalarType dtype = hidden.scalar_type();
    const int64_t rows = aligned(step * vocab / std::max<int64_t>(tokens, 1), 128, vocab);
    const auto f32 = hidden.options().dtype(at::kFloat);
    Grads out;
    at::Tensor d_hidden; // float32 [T, H]
    if (want_hidden) d_hidden = at::zeros(hidden.sizes(), f32);
    if (want_weight) out.weight = at::empty_like(weight);
    for (int64_t v0 = 0; v0 < vocab; v0 += rows) {
      const int64_t c = std::min(rows, vocab - v0);
      const at::Tensor w = weight.narrow(0, v0, c);
      const at::Tensor hit = (labels >= v0).logical_and(labels < v0 + c).to(at::kFloat);
      const at::Tensor g_lo = dlogits(logits_f32(hidden, w), lse, (labels - v0).clamp(0, c - 1),
                                      hit, row_scale, dtype); // [T, c]
      if (want_weight) out.weight.narrow(0, v0, c).copy_(at::matmul(g_lo.t(), hidden));
      if (want_hidden) {
        if (dtype == at::kFloat) {
          d_hidden.add_(at::matmul(g_lo, w));
        } else if (hidden.is_cuda()) {
          d_hidden.add_(at::mm(g_lo, w, at::kFloat)); // bf16 operands, float32 product
        } else {
          d_hidden.add_(at::matmul(g_lo.to(at::kFloat), w.to(at::kFloat)));
        }
      }
    }
    if (want_hidden) out.hidden = d_hidden.to(dtype);
    return out;
  }
};

} // namespace

ops::LinearCrossEntropyResult linear_cross_entropy(const ops::LinearCrossEntropyArgs& args) {
  const variable_list out = LinearCrossEntropyFunction::apply(
      args.hidden, args.weight, args.labels, args.ignore_index,
      args.reduction == ops::LossReduction::kMean, args.chunk_size);
  ops::LinearCrossEntropyResult result;
  result.loss = out[0];
  if (args.return_per_token) result.per_token = out[1];
  return result;
}

} // namespace kiln::backends::torch_ref
