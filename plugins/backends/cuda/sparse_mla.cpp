// `sparse_mla` on the cuda backend: the attention core on the latent runs in the hand-written
// kernels of sparse_mla_fwd.cu / sparse_mla_bwd.cu, the per-head w_vc projection and its
// gradients in cuBLAS (bf16 batched GEMMs, float32 accumulation), as the contract's rounding
// steps say: o is rounded to bf16, then projected.
//
// Forward saves q, kv, w_vc, the indices, o ([T, H, L] bf16) and the log-sum-exp ([T, H]
// float32); backward computes d_o = dOut @ w_vc and d_w_vc = dOut^T o per head (cuBLAS), then the
// kernel's dq and the float32 dkv accumulator. Memory beyond the inputs: o and lse in forward
// (T*H*(2L + 4) bytes: 2 GiB at T = 32768, H = 64), d_o, dq, delta and dkv in backward.
//
// supports(): a compute capability 9.0 GPU (runs_on), bfloat16, widths the kernels are compiled for
// (sparse_mla_supported), dqk a multiple of 8 (16-byte rows). Inputs whose channel dimension is not
// contiguous or whose rows are not 16-byte aligned are copied contiguous first.
#include "kernels.h"
#include "launch.h"

#include "kiln/sdk/error.h"

#include <ATen/ATen.h>
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

struct Saved {
  at::Tensor q, kv, idx; // q [T, H, Dqk], kv [Tk, Dqk], idx [T, K] (inner stride 1)
};

Saved prepare(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& idx) {
  Saved s;
  s.q = rows_16b(q);
  s.kv = rows_16b(kv.select(1, 0));
  s.idx = idx.select(1, 0);
  if (s.idx.stride(1) != 1) s.idx = s.idx.contiguous();
  return s;
}

template <class P>
void fill_common(P& p, const Saved& s, int64_t latent, double scale) {
  p.q = s.q.data_ptr();
  p.kv = s.kv.data_ptr();
  p.idx = s.idx.data_ptr<int32_t>();
  p.q_t = s.q.stride(0);
  p.q_h = s.q.stride(1);
  p.kv_t = s.kv.stride(0);
  p.idx_t = s.idx.stride(0);
  p.tokens = static_cast<int>(s.q.size(0));
  p.heads = static_cast<int>(s.q.size(1));
  p.keys = static_cast<int>(s.kv.size(0));
  p.topk = static_cast<int>(s.idx.size(1));
  p.dqk = static_cast<int>(s.q.size(2));
  p.latent = static_cast<int>(latent);
  p.scale = static_cast<float>(scale);
}

// a [T, H, K] x b [H, K, N] -> [T, H, N] contiguous, per head (cuBLAS, float32 accumulation):
// the batched GEMM writes its output through the result's [H, T, N] view (row stride H N), so
// no transposed copy follows it.
at::Tensor per_head_mm(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = at::empty({a.size(0), a.size(1), b.size(2)}, a.options());
  at::Tensor by_head = out.transpose(0, 1);
  at::bmm_out(by_head, a.transpose(0, 1), b);
  return out;
}

// Per-head projection [T, H, L] x w_vc [H, Dv, L] -> [T, H, Dv].
at::Tensor project(const at::Tensor& o, const at::Tensor& w_vc) {
  return per_head_mm(o, w_vc.transpose(1, 2));
}

class SparseMlaFunction : public torch::autograd::Function<SparseMlaFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& kv,
                            const at::Tensor& w_vc, const at::Tensor& idx, double scale) {
    const c10::cuda::CUDAGuard guard(q.device());
    const Saved s = prepare(q, kv, idx);
    const int64_t tokens = q.size(0), heads = q.size(1), latent = w_vc.size(2);
    at::Tensor o = at::empty({tokens, heads, latent}, q.options());
    at::Tensor lse = at::empty({tokens, heads}, q.options().dtype(at::kFloat));
    if (tokens > 0) {
      SparseMlaFwdParams p;
      fill_common(p, s, latent, scale);
      p.o = o.data_ptr();
      p.lse = lse.data_ptr<float>();
      check_launch(launch_sparse_mla_fwd(p, c10::cuda::getCurrentCUDAStream()),
                   "sparse_mla forward");
    }
    ctx->save_for_backward({s.q, s.kv, w_vc, s.idx, o, lse});
    ctx->saved_data["scale"] = scale;
    return project(o, w_vc);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Saved s{saved[0], saved[1], saved[3]};
    const at::Tensor& w_vc = saved[2];
    const at::Tensor& o = saved[4];
    const at::Tensor& lse = saved[5];
    const c10::cuda::CUDAGuard guard(s.q.device());
    const int64_t tokens = s.q.size(0), heads = s.q.size(1), dqk = s.q.size(2);
    const int64_t latent = w_vc.size(2);
    const at::Tensor d_out = grads[0].to(s.q.scalar_type());
    // d_w_vc[h] = dOut[:, h]^T o[:, h]; d_o[:, h] = dOut[:, h] w_vc[h].
    at::Tensor d_wvc = at::bmm(d_out.permute({1, 2, 0}), o.transpose(0, 1));
    const at::Tensor d_o = per_head_mm(d_out, w_vc);
    at::Tensor dq = at::empty({tokens, heads, dqk}, s.q.options());
    at::Tensor dkv = at::zeros({s.kv.size(0), dqk}, s.q.options().dtype(at::kFloat));
    if (tokens > 0) {
      at::Tensor delta = at::empty({tokens, heads}, s.q.options().dtype(at::kFloat));
      SparseMlaBwdParams p;
      fill_common(p, s, latent, ctx->saved_data["scale"].toDouble());
      p.o = o.data_ptr();
      p.d_o = d_o.data_ptr();
      p.lse = lse.data_ptr<float>();
      p.delta = delta.data_ptr<float>();
      p.dq = dq.data_ptr();
      p.dkv = dkv.data_ptr<float>();
      check_launch(launch_sparse_mla_bwd(p, c10::cuda::getCurrentCUDAStream()),
                   "sparse_mla backward");
    }
    return {dq, dkv.to(s.q.scalar_type()).unsqueeze(1), d_wvc, at::Tensor(), at::Tensor()};
  }
};

} // namespace

bool sparse_mla_supports(const ops::SparseMlaArgs& a) {
  const at::Tensor& q = a.q_absorbed;
  return q.is_cuda() && q.scalar_type() == at::kBFloat16 && runs_on(q.device()) &&
         q.size(2) % 8 == 0 && q.size(0) <= std::numeric_limits<int32_t>::max() / 2 &&
         a.kv_latent.size(0) <= std::numeric_limits<int32_t>::max() / 2 &&
         sparse_mla_supported(static_cast<int>(q.size(2)), static_cast<int>(a.w_vc.size(2)),
                              static_cast<int>(std::min<int64_t>(a.topk_indices.size(2), 1 << 30)));
}

at::Tensor sparse_mla(const ops::SparseMlaArgs& a) {
  return SparseMlaFunction::apply(a.q_absorbed, a.kv_latent, a.w_vc, a.topk_indices,
                                  a.softmax_scale);
}

} // namespace kiln::backends::cuda
