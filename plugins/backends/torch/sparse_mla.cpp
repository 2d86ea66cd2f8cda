// Reference `sparse_mla`: absorbed multi-head latent attention over each query's selected keys,
// in query chunks, differentiable through a custom autograd Function that recomputes each chunk
// in backward.
//
// Numerics, per chunk of c queries (e = the input dtype; float32 inputs: every step in float32):
//   g = kv_latent[idx]                    [c, K, Dqk] gathered rows, e (-1 reads row 0, masked)
//   s = (q_f32 . g_f32) * softmax_scale   [c, H, K] float32 (bf16 products are exact in float32)
//   p = softmax(s masked to -inf)         float32; 0 where a row selects nothing (no NaN)
//   o = p.to(e) @ g[..., :L]              [c, H, L] rounded to e, float32 accumulation
//   out = o @ w_vc^T per head             [c, H, Dv] rounded to e, float32 accumulation
// Backward is the exact gradient of these steps (the casts included): dO = dOut @ w_vc and
// dw_vc += dOut^T o per head (e products, float32 accumulator); dP = dO @ g_L^T (e, upcast) and
// dg_L = p_e^T dO; dS = p * (dP - sum(dP * p)) * scale (float32); dq = dS @ g_f32 and
// dg += dS^T @ q_f32 (float32); dg is scattered back onto kv_latent's rows with index_add into a
// float32 [Tk, Dqk] accumulator. Invalid slots have p = 0 and so contribute nothing. The indices
// are constants. Double backward is not supported. float64 inputs accumulate in float64 instead
// of float32 (tests check the gradient against finite differences that way).
//
// Memory: nothing of size T x K x Dqk exists at once. With T queries, H heads, K index slots,
// Dqk = L + R channels, Dv value channels and e bytes per element, one forward chunk of c queries
// holds about
//   c * K * (Dqk * (e + 4) + H * (12 + e))   the gathered rows (e and float32), s, p, p_e
//   + c * H * (Dqk * 4 + L * e + Dv * e)     float32 queries, o, the chunk's output
// and one backward chunk about
//   c * K * (Dqk * (e + 8) + L * (e + 4) + H * (16 + 2 e))   + gathered rows' gradient
//   + c * H * (Dqk * 8 + L * 2 e + Dv * e)
// c is the largest count with that <= kChunkBudget (1 GiB), at least 1. On top of the inputs and
// the [T, H, Dv] output, backward keeps float32 accumulators for kv_latent ([Tk, Dqk]) and w_vc
// ([H, Dv, L]) and writes dq ([T, H, Dqk], e). GLM-5 shapes (H = 64, L + R = 512 + 64, Dv = 256,
// K = 2048, bf16) at T = 32768: inputs 2.3 GiB (q) + 36 MiB (kv) + 256 MiB (indices), output
// 1 GiB; chunks of 117 (forward, ~9 MiB per query) and 50 (backward, ~21 MiB per query) queries
// within 1 GiB; accumulators 72 MiB; backward adds dq (2.3 GiB): about 5 GiB in forward and 8 GiB
// in backward. Gathering every query's K rows at once would take 72 GiB in bf16 (and 144 GiB
// more in float32), a dense float32 [T, T] score matrix per head 256 GiB.
#include "kernels.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace kiln::backends::torch_ref {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kChunkBudget = int64_t{1} << 30; // bytes of per-chunk temporaries

struct Shape {
  int64_t tokens, heads, dqk, latent, dv, slots, elem;
};

// float32, or float64 for float64 inputs (so that finite differences can check the gradient).
at::ScalarType accumulate_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

Shape shape_of(const at::Tensor& q, const at::Tensor& idx, const at::Tensor& w_vc) {
  return {q.size(0),
          q.size(1),
          q.size(2),
          w_vc.size(2),
          w_vc.size(1),
          idx.size(2),
          static_cast<int64_t>(q.element_size())};
}

int64_t chunk_queries(const Shape& s, bool backward, int64_t requested) {
  if (requested > 0) return std::min(requested, std::max<int64_t>(s.tokens, 1));
  const int64_t e = s.elem;
  const int64_t per_query =
      backward ? s.slots * (s.dqk * (e + 8) + s.latent * (e + 4) + s.heads * (16 + 2 * e)) +
                     s.heads * (s.dqk * 8 + s.latent * 2 * e + s.dv * e)
               : s.slots * (s.dqk * (e + 4) + s.heads * (12 + e)) +
                     s.heads * (s.dqk * 4 + s.latent * e + s.dv * e);
  return std::clamp<int64_t>(kChunkBudget / std::max<int64_t>(per_query, 1), 1,
                             std::max<int64_t>(s.tokens, 1));
}

// Queries [t0, t0 + c): their gathered latent rows and attention probabilities.
struct Chunk {
  at::Tensor rows;  // [c, K, Dqk] input dtype
  at::Tensor q;     // [c, H, Dqk] float32
  at::Tensor probs; // [c, H, K] float32
};

Chunk chunk_probs(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& idx, int64_t t0,
                  int64_t c, double scale) {
  const at::Tensor slots = idx.narrow(0, t0, c).select(1, 0); // [c, K] int32
  const at::Tensor valid = slots.ge(0);                       // [c, K]
  const at::Tensor safe = slots.clamp_min(0).to(at::kLong);   // [c, K]
  const at::Tensor latent = kv.select(1, 0);                  // [Tk, Dqk]
  Chunk out;
  out.rows = latent.index_select(0, safe.flatten()).view({c, slots.size(1), kv.size(2)});
  const at::ScalarType acc = accumulate_type(q);
  out.q = q.narrow(0, t0, c).to(acc);
  at::Tensor s = at::matmul(out.q, out.rows.to(acc).transpose(1, 2)).mul_(scale);
  s.masked_fill_(valid.logical_not().unsqueeze(1), -std::numeric_limits<float>::infinity());
  out.probs = at::softmax(s, -1);
  // A row that selects nothing: softmax of all -inf is NaN; it attends to nothing instead.
  out.probs.masked_fill_(valid.any(-1).logical_not().view({c, 1, 1}), 0.0);
  return out;
}

// Per-head projection of latent outputs: [c, H, L] x w_vc [H, Dv, L] -> [c, H, Dv].
at::Tensor project_values(const at::Tensor& o, const at::Tensor& w_vc) {
  return at::matmul(o.transpose(0, 1), w_vc.transpose(1, 2)).transpose(0, 1);
}

class SparseMlaFunction : public torch::autograd::Function<SparseMlaFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& kv,
                            const at::Tensor& w_vc, const at::Tensor& idx, double scale,
                            int64_t query_chunk) {
    const Shape s = shape_of(q, idx, w_vc);
    at::Tensor out = at::empty({s.tokens, s.heads, s.dv}, q.options());
    const int64_t step = chunk_queries(s, /*backward=*/false, query_chunk);
    for (int64_t t0 = 0; t0 < s.tokens; t0 += step) {
      const int64_t c = std::min(step, s.tokens - t0);
      Chunk ch = chunk_probs(q, kv, idx, t0, c, scale);
      const at::Tensor p = ch.probs.to(q.scalar_type());
      ch.probs.reset();
      const at::Tensor o = at::matmul(p, ch.rows.narrow(2, 0, s.latent)); // [c, H, L]
      out.narrow(0, t0, c).copy_(project_values(o, w_vc));
    }
    ctx->save_for_backward({q, kv, w_vc, idx});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["query_chunk"] = query_chunk;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& q = saved[0];
    const at::Tensor& kv = saved[1];
    const at::Tensor& w_vc = saved[2];
    const at::Tensor& idx = saved[3];
    const double scale = ctx->saved_data["scale"].toDouble();
    const Shape s = shape_of(q, idx, w_vc);
    const at::ScalarType dtype = q.scalar_type();
    const at::Tensor d_out = grads[0].to(dtype);

    const at::ScalarType acc = accumulate_type(q);
    at::Tensor dq = at::empty_like(q, at::MemoryFormat::Contiguous);
    const auto f32 = q.options().dtype(acc);
    at::Tensor d_latent = at::zeros({kv.size(0), s.dqk}, f32);
    at::Tensor d_wvc = at::zeros({s.heads, s.dv, s.latent}, f32);
    const int64_t step =
        chunk_queries(s, /*backward=*/true, ctx->saved_data["query_chunk"].toInt());
    for (int64_t t0 = 0; t0 < s.tokens; t0 += step) {
      const int64_t c = std::min(step, s.tokens - t0);
      Chunk ch = chunk_probs(q, kv, idx, t0, c, scale);
      const at::Tensor p = ch.probs.to(dtype);
      const at::Tensor values = ch.rows.narrow(2, 0, s.latent); // [c, K, L]
      const at::Tensor d_out_c = d_out.narrow(0, t0, c);        // [c, H, Dv]
      const at::Tensor o = at::matmul(p, values);               // [c, H, L] (recomputed)
      d_wvc.add_(at::matmul(d_out_c.permute({1, 2, 0}), o.transpose(0, 1))); // [H, Dv, L]
      const at::Tensor d_o = at::matmul(d_out_c.transpose(0, 1), w_vc).transpose(0, 1); // [c,H,L]
      at::Tensor ds = at::matmul(d_o, values.transpose(1, 2)).to(acc); // dP [c, H, K]
      const at::Tensor d_values = at::matmul(p.transpose(1, 2), d_o);  // [c, K, L]
      const at::Tensor row_dot = (ds * ch.probs).sum(-1, /*keepdim=*/true);
      ds.sub_(row_dot).mul_(ch.probs).mul_(scale); // dS: the gradient of q . g
      ch.probs.reset();
      dq.narrow(0, t0, c).copy_(at::matmul(ds, ch.rows.to(acc)));
      at::Tensor d_rows = at::matmul(ds.transpose(1, 2), ch.q); // [c, K, Dqk] float32
      d_rows.narrow(2, 0, s.latent).add_(d_values);
      const at::Tensor safe = idx.narrow(0, t0, c).select(1, 0).clamp_min(0).to(at::kLong);
      d_latent.index_add_(0, safe.flatten(), d_rows.view({-1, s.dqk}));
    }
    return {
        dq,          d_latent.to(dtype).unsqueeze(1), d_wvc.to(dtype), at::Tensor(), at::Tensor(),
        at::Tensor()};
  }
};

} // namespace

namespace detail {

at::Tensor sparse_mla_chunked(const ops::SparseMlaArgs& args, int64_t query_chunk) {
  return SparseMlaFunction::apply(args.q_absorbed, args.kv_latent, args.w_vc, args.topk_indices,
                                  args.softmax_scale, query_chunk);
}

} // namespace detail

at::Tensor sparse_mla(const ops::SparseMlaArgs& args) {
  return detail::sparse_mla_chunked(args, /*query_chunk=*/0);
}

} // namespace kiln::backends::torch_ref
