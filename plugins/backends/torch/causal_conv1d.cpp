// Reference `causal_conv1d`: HF Nemotron-H's depthwise causal conv over time (models.md §4.3 step
// 3), token-major. Each sequence is seen as its K-1 state columns (initial_state, or zeros)
// followed by its tokens, xp = [state^T | x]; then, for every tap j of the K-wide kernel,
//   out[t] = act( round_x( bias + sum_j weight[:, j] * xp[t + j] ) )
// with weight and bias rounded to x's dtype first (HF holds them in the model dtype), products
// and sums in float32 (float64 for float64 inputs), one rounding to x's dtype, then SiLU in x's
// dtype as HF (its conv output is rounded before the activation). final_state is the last K-1
// rows of xp, transposed to [C, K-1] (oldest first).
// BSHD: xp [B, K-1+L, C] by concatenation. THD: the documents are laid out one after another in
// one xp [T + N(K-1), C], each behind its own K-1 state rows (index_copy), and the taps read it
// through index_select, so no output ever sees another document. cu_seqlens are copied to the
// host once per call (a sync, acceptable for the reference). kStep is the BSHD path with L = 1.
// Memory: xp and the accumulator in float32 (2 * (T + N(K-1)) * C * 4 bytes), plus autograd's
// saved copies of them; linear in the tokens. Differentiable in x, weight, bias and initial_state
// through autograd; final_state is detached (it only feeds a cache).
#include "kernels.h"

#include <ATen/ATen.h>

#include <vector>

namespace kiln::backends::torch_ref {
namespace {

at::ScalarType compute_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::ScalarType::Float;
}

// weight [C, K] and bias [C] (or undefined) rounded to x's dtype, then in the compute dtype.
struct Taps {
  at::Tensor weight, bias;
};

Taps taps(const ops::CausalConv1dArgs& args) {
  const at::ScalarType dtype = args.x.scalar_type();
  const at::ScalarType compute = compute_type(args.x);
  Taps t;
  t.weight = args.weight.to(dtype).to(compute);
  if (args.bias.defined()) t.bias = args.bias.to(dtype).to(compute);
  return t;
}

// bias + sum_j weight[:, j] * tap(j), rounded to `dtype`, then the activation.
template <class TapFn>
at::Tensor convolve(const Taps& t, const TapFn& tap, at::ScalarType dtype,
                    ops::ConvActivation activation) {
  const int64_t k = t.weight.size(1);
  at::Tensor acc = tap(0) * t.weight.select(1, 0);
  for (int64_t j = 1; j < k; ++j) acc = acc + tap(j) * t.weight.select(1, j);
  if (t.bias.defined()) acc = acc + t.bias;
  at::Tensor out = acc.to(dtype);
  return activation == ops::ConvActivation::kSilu ? at::silu(out) : out;
}

ops::CausalConv1dResult padded(const ops::CausalConv1dArgs& args, const at::Tensor& x) {
  // x [B, L, C]
  const Taps t = taps(args);
  const int64_t k = t.weight.size(1);
  const int64_t len = x.size(1);
  const at::ScalarType compute = compute_type(args.x);
  const at::Tensor state =
      args.initial_state.defined()
          ? args.initial_state.transpose(1, 2).to(compute)
          : at::zeros({x.size(0), k - 1, x.size(2)}, x.options().dtype(compute));
  const at::Tensor xp = at::cat({state, x.to(compute)}, 1); // [B, K-1+L, C]
  ops::CausalConv1dResult r;
  r.out = convolve(
      t, [&](int64_t j) { return xp.narrow(1, j, len); }, x.scalar_type(), args.activation);
  if (args.return_final_state) {
    r.final_state = xp.narrow(1, len, k - 1).transpose(1, 2).to(x.scalar_type()).detach();
  }
  return r;
}

ops::CausalConv1dResult packed(const ops::CausalConv1dArgs& args) {
  const at::Tensor& x = args.x; // [T, C]
  const Taps t = taps(args);
  const int64_t k = t.weight.size(1);
  const int64_t tokens = x.size(0);
  const int64_t channels = x.size(1);
  const at::ScalarType compute = compute_type(x);
  const at::Tensor cu_host = args.cu_seqlens.to(at::kCPU, at::kLong).contiguous();
  const int64_t* cu = cu_host.data_ptr<int64_t>();
  const int64_t docs = cu_host.numel() - 1;

  // Row of xp for token t of document d: t + (d + 1)(K - 1); document d's state rows start at
  // cu[d] + d(K - 1).
  std::vector<int64_t> token_rows, state_rows, final_rows;
  token_rows.reserve(tokens);
  for (int64_t d = 0; d < docs; ++d) {
    for (int64_t i = 0; i < k - 1; ++i) state_rows.push_back(cu[d] + d * (k - 1) + i);
    for (int64_t tok = cu[d]; tok < cu[d + 1]; ++tok) token_rows.push_back(tok + (d + 1) * (k - 1));
    for (int64_t i = 0; i < k - 1; ++i) final_rows.push_back(cu[d + 1] + d * (k - 1) + i);
  }
  const auto index = [&](const std::vector<int64_t>& v) {
    return at::tensor(v, at::kLong).to(x.device());
  };
  const at::Tensor rows = index(token_rows);
  at::Tensor xp = at::zeros({tokens + docs * (k - 1), channels}, x.options().dtype(compute));
  if (args.initial_state.defined()) {
    const at::Tensor state = args.initial_state.transpose(1, 2).reshape({docs * (k - 1), channels});
    xp = xp.index_copy(0, index(state_rows), state.to(compute));
  }
  xp = xp.index_copy(0, rows, x.to(compute));
  ops::CausalConv1dResult r;
  r.out = convolve(
      t, [&](int64_t j) { return xp.index_select(0, rows + (j - (k - 1))); }, x.scalar_type(),
      args.activation);
  if (args.return_final_state) {
    r.final_state = xp.index_select(0, index(final_rows))
                        .view({docs, k - 1, channels})
                        .transpose(1, 2)
                        .to(x.scalar_type())
                        .detach();
  }
  return r;
}

} // namespace

ops::CausalConv1dResult causal_conv1d(const ops::CausalConv1dArgs& args) {
  if (args.mode == ops::CausalConv1dMode::kStep) {
    ops::CausalConv1dArgs step = args;
    step.return_final_state = true;
    ops::CausalConv1dResult r = padded(step, args.x.unsqueeze(1)); // [B, 1, C]
    r.out = r.out.squeeze(1);
    return r;
  }
  if (args.cu_seqlens.defined()) return packed(args);
  return padded(args, args.x);
}

} // namespace kiln::backends::torch_ref
