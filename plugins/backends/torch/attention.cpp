// Reference `attention`: causal GQA over BSHD batches and THD packed documents, in query chunks.
// (On a GPU in bf16/fp16, plain causal self-attention goes to torch's sdpa, as HF's does; see
// hf_sdpa_case at the end.)
//
// Numerics (what HF's sdpa kernels do on chip; HF eager differs only by rounding the scores):
//   s = (q_f32 . k_f32) * scale        float32 (bf16 products are exact in float32; float32
//                                      accumulation). HF eager computes this product in the input
//                                      dtype and rounds s to it before its float32 softmax; the
//                                      sdpa flash / memory-efficient kernels (HF's default) keep s
//                                      in float32, as here.
//   p = softmax(s masked to -inf, -1)  float32, over every key the query sees (no online softmax:
//                                      the chunk holds whole rows, so p is HF's softmax exactly).
//   out = p.to(dtype) @ v              p rounded to the input dtype as HF eager (`.to(bf16) @ V`)
//                                      and flash attention do (sdpa's math backend, taken when HF
//                                      passes an explicit mask, keeps p in float32); the product
//                                      accumulates in float32 and is rounded to the input dtype
//                                      once. float32 inputs: every step in float32.
// The causal diagonal is bottom-right aligned (query i of Sq sits at position Sk - Sq + i).
//
// Memory: queries are processed in chunks of c rows against the Lc <= Sk keys they can see, so
// the extra memory never holds more than one chunk's scores. With P = B * Hq * c * Lc elements,
// forward peaks at 8P bytes (float32 scores and probabilities at the softmax) and backward at 12P
// bytes (float32 probabilities, dP and dP * P), plus short-lived 2P-byte copies in the input
// dtype. On top of that: a float32 copy of K ([B, Hkv, Sk, D]) and V reordered to
// [B, Hkv, Sk, Dv], and in backward float32 dK and dV accumulators of the same sizes. c is chosen
// so that B * Hq * c * Sk <= kScoreBudget (2^27 elements: forward <= 1 GiB, backward <= 1.5 GiB),
// at least one query. Never O(S^2 * H): kiln-ops-gpu-test runs 32K tokens x 32 heads forward and
// backward on one H100, where one [S, S] float32 matrix per head would take 128 GiB.
//
// Autograd: a custom Function whose backward recomputes each chunk's probabilities (as flash
// attention does) instead of keeping them, so training memory is the same O(chunk) and not
// O(S^2 * H) across chunks. The backward is the exact gradient of the forward above: dV += p_lo^T
// dO (input dtype, accumulated over chunks in float32), dp = (dO v^T) in the input dtype, upcast
// (the gradient of the cast), ds = p * (dp - sum(dp * p)) (softmax backward, float32), then
// dq = scale * ds k and dk += scale * ds^T q in float32. Double backward is not supported.
//
// GQA: query heads are viewed as [Hkv, G] (head h uses kv head h / G, HF's repeat_kv order) and
// the G heads of a kv head are stacked as rows of one matmul against that kv head's keys: K and V
// are never repeated. THD: cu_seqlens are copied to the host once per call (a sync, acceptable
// for the reference) and each document is one problem; documents never see each other.
#include "kernels.h"

#include "kiln/sdk/error.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace kiln::backends::torch_ref {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// float32 score elements per chunk (B * Hq * queries * keys), see the header comment.
constexpr int64_t kScoreBudget = int64_t{1} << 27;

// One causal problem: queries [q0, q0 + sq) of the packed query axis against keys [k0, k0 + sk)
// of the packed key axis, sk >= sq. BSHD is one segment covering the whole batch.
struct Segment {
  int64_t q0, sq, k0, sk;
};

// What forward and backward both need, rebuilt from q, k, v and the plan.
struct Problem {
  at::Tensor q5; // [B, Tq, Hkv, G, D] view of q
  at::Tensor k;  // [B, Hkv, Tk, D] float32, contiguous
  at::Tensor v;  // [B, Hkv, Tk, Dv] input dtype, contiguous
  int64_t batch, hkv, groups;
};

Problem make_problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool varlen) {
  Problem p;
  p.hkv = k.size(-2);
  p.groups = q.size(-2) / p.hkv;
  if (varlen) { // [T, H, D] -> one batch row
    p.q5 = q.unflatten(1, {p.hkv, p.groups}).unsqueeze(0);
    p.k = k.to(at::kFloat).permute({1, 0, 2}).contiguous().unsqueeze(0);
    p.v = v.permute({1, 0, 2}).contiguous().unsqueeze(0);
  } else {
    p.q5 = q.unflatten(2, {p.hkv, p.groups});
    p.k = k.to(at::kFloat).permute({0, 2, 1, 3}).contiguous();
    p.v = v.permute({0, 2, 1, 3}).contiguous();
  }
  p.batch = p.q5.size(0);
  return p;
}

// Undoes make_problem's K/V reordering for a gradient: [B, Hkv, Tk, X] -> k's layout.
at::Tensor to_input_layout(const at::Tensor& t, bool varlen, at::ScalarType dtype) {
  const at::Tensor r = varlen ? t.squeeze(0).permute({1, 0, 2}) : t.permute({0, 2, 1, 3});
  return r.to(dtype).contiguous();
}

int64_t chunk_rows(const Problem& p, const Segment& seg, int64_t query_chunk) {
  if (query_chunk > 0) return std::min(query_chunk, seg.sq);
  const int64_t per_query = std::max<int64_t>(1, p.batch * p.hkv * p.groups * seg.sk);
  return std::clamp<int64_t>(kScoreBudget / per_query, 1, std::max<int64_t>(seg.sq, 1));
}

// Rows [i0, i0 + c) of a segment: the float32 queries stacked per kv head and their softmax
// probabilities over the Lc keys they can see.
struct ChunkProbs {
  at::Tensor q;     // [B, Hkv, G * c, D] float32
  at::Tensor probs; // [B, Hkv, G * c, Lc] float32
  int64_t lc;
};

ChunkProbs chunk_probs(const Problem& p, const Segment& seg, int64_t i0, int64_t c, double scale) {
  const int64_t first_pos = seg.sk - seg.sq + i0; // position of the chunk's first query
  const int64_t lc = first_pos + c;               // keys 0 .. lc-1 are visible to some row
  const int64_t d = p.q5.size(-1);
  ChunkProbs out;
  out.lc = lc;
  out.q = p.q5.narrow(1, seg.q0 + i0, c)
              .to(at::kFloat)
              .permute({0, 2, 3, 1, 4}) // [B, Hkv, G, c, D]
              .reshape({p.batch, p.hkv, p.groups * c, d});
  const at::Tensor keys = p.k.narrow(2, seg.k0, lc);                    // [B, Hkv, Lc, D]
  at::Tensor s = at::matmul(out.q, keys.transpose(-1, -2)).mul_(scale); // [B, Hkv, G*c, Lc]
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(s.device());
  const at::Tensor future = at::arange(lc, long_opts).unsqueeze(0) >
                            (at::arange(c, long_opts) + first_pos).unsqueeze(1); // [c, Lc]
  s.view({p.batch, p.hkv, p.groups, c, lc})
      .masked_fill_(future, -std::numeric_limits<double>::infinity());
  out.probs = at::softmax(s, -1);
  return out;
}

// [B, Hkv, G * c, X] rows -> [B, c, Hkv, G, X], the layout of q5 and the output.
at::Tensor rows_to_tokens(const at::Tensor& t, const Problem& p, int64_t c) {
  return t.view({p.batch, p.hkv, p.groups, c, t.size(-1)}).permute({0, 3, 1, 2, 4});
}

void forward_segment(const Problem& p, const Segment& seg, double scale, int64_t query_chunk,
                     at::Tensor& out5) {
  const int64_t step = chunk_rows(p, seg, query_chunk);
  for (int64_t i0 = 0; i0 < seg.sq; i0 += step) {
    const int64_t c = std::min(step, seg.sq - i0);
    ChunkProbs cp = chunk_probs(p, seg, i0, c, scale);
    const at::Tensor probs = cp.probs.to(p.v.scalar_type());
    cp.probs.reset();
    const at::Tensor o = at::matmul(probs, p.v.narrow(2, seg.k0, cp.lc)); // [B, Hkv, G*c, Dv]
    out5.narrow(1, seg.q0 + i0, c).copy_(rows_to_tokens(o, p, c));
  }
}

void backward_segment(const Problem& p, const Segment& seg, double scale, int64_t query_chunk,
                      const at::Tensor& grad5, at::Tensor& dq5, at::Tensor& dk, at::Tensor& dv) {
  const int64_t step = chunk_rows(p, seg, query_chunk);
  const at::ScalarType dtype = p.v.scalar_type();
  for (int64_t i0 = 0; i0 < seg.sq; i0 += step) {
    const int64_t c = std::min(step, seg.sq - i0);
    ChunkProbs cp = chunk_probs(p, seg, i0, c, scale);
    const at::Tensor keys = p.k.narrow(2, seg.k0, cp.lc);
    const at::Tensor values = p.v.narrow(2, seg.k0, cp.lc);
    const at::Tensor d_out = grad5.narrow(1, seg.q0 + i0, c)
                                 .to(dtype)
                                 .permute({0, 2, 3, 1, 4})
                                 .reshape({p.batch, p.hkv, p.groups * c, values.size(-1)});
    dv.narrow(2, seg.k0, cp.lc).add_(at::matmul(cp.probs.to(dtype).transpose(-1, -2), d_out));
    at::Tensor ds = at::matmul(d_out, values.transpose(-1, -2)).to(at::kFloat); // dP
    const at::Tensor row_dot = (ds * cp.probs).sum(-1, /*keepdim=*/true);
    ds.sub_(row_dot).mul_(cp.probs).mul_(scale); // dS, scaled: the gradient of q.k
    cp.probs.reset();
    dq5.narrow(1, seg.q0 + i0, c).copy_(rows_to_tokens(at::matmul(ds, keys), p, c));
    dk.narrow(2, seg.k0, cp.lc).add_(at::matmul(ds.transpose(-1, -2), cp.q));
  }
}

struct Plan {
  bool varlen = false;
  std::vector<int64_t> segments; // flattened Segment quadruples
  double scale = 1;
  int64_t query_chunk = 0;
};

std::vector<Segment> unpack(const std::vector<int64_t>& flat) {
  std::vector<Segment> segs;
  for (size_t i = 0; i + 3 < flat.size(); i += 4) {
    segs.push_back({flat[i], flat[i + 1], flat[i + 2], flat[i + 3]});
  }
  return segs;
}

class AttentionFunction : public torch::autograd::Function<AttentionFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const Plan& plan) {
    const Problem p = make_problem(q, k, v, plan.varlen);
    std::vector<int64_t> out_sizes = q.sizes().vec();
    out_sizes.back() = v.size(-1);
    at::Tensor out = at::empty(out_sizes, q.options());
    at::Tensor out5 = plan.varlen ? out.unflatten(1, {p.hkv, p.groups}).unsqueeze(0)
                                  : out.unflatten(2, {p.hkv, p.groups});
    for (const Segment& seg : unpack(plan.segments)) {
      forward_segment(p, seg, plan.scale, plan.query_chunk, out5);
    }
    ctx->save_for_backward({q, k, v});
    ctx->saved_data["varlen"] = plan.varlen;
    ctx->saved_data["segments"] = plan.segments;
    ctx->saved_data["scale"] = plan.scale;
    ctx->saved_data["query_chunk"] = plan.query_chunk;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& q = saved[0];
    const at::Tensor& k = saved[1];
    const at::Tensor& v = saved[2];
    const bool varlen = ctx->saved_data["varlen"].toBool();
    const double scale = ctx->saved_data["scale"].toDouble();
    const int64_t query_chunk = ctx->saved_data["query_chunk"].toInt();
    const Problem p = make_problem(q, k, v, varlen);

    at::Tensor dq = at::zeros(q.sizes(), q.options());
    at::Tensor dq5 = varlen ? dq.unflatten(1, {p.hkv, p.groups}).unsqueeze(0)
                            : dq.unflatten(2, {p.hkv, p.groups});
    at::Tensor dk = at::zeros(p.k.sizes(), p.k.options()); // float32 accumulators
    at::Tensor dv = at::zeros(p.v.sizes(), p.v.options().dtype(at::kFloat));
    const at::Tensor grad = grads[0];
    const at::Tensor grad5 = varlen ? grad.unflatten(1, {p.hkv, p.groups}).unsqueeze(0)
                                    : grad.unflatten(2, {p.hkv, p.groups});
    for (const Segment& seg : unpack(ctx->saved_data["segments"].toIntVector())) {
      backward_segment(p, seg, scale, query_chunk, grad5, dq5, dk, dv);
    }
    return {dq, to_input_layout(dk, varlen, k.scalar_type()),
            to_input_layout(dv, varlen, v.scalar_type()), at::Tensor()};
  }
};

std::vector<int64_t> host_offsets(const at::Tensor& cu) {
  const at::Tensor host = cu.to(at::kCPU, at::kLong).contiguous();
  return {host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel()};
}

} // namespace

namespace detail {

at::Tensor attention_chunked(const ops::AttentionArgs& args, int64_t query_chunk) {
  Plan plan;
  plan.varlen = args.varlen();
  plan.scale = args.softmax_scale;
  plan.query_chunk = query_chunk;
  if (!plan.varlen) {
    plan.segments = {0, args.q.size(1), 0, args.k.size(1)};
  } else {
    const std::vector<int64_t> cq = host_offsets(args.cu_seqlens);
    const std::vector<int64_t> ck =
        args.cu_seqlens_k.defined() ? host_offsets(args.cu_seqlens_k) : cq;
    for (size_t n = 0; n + 1 < cq.size(); ++n) {
      const int64_t sq = cq[n + 1] - cq[n];
      const int64_t sk = ck[n + 1] - ck[n];
      KILN_CHECK_USER(
          sq >= 0 && sk >= sq && cq[n + 1] <= args.q.size(0) && ck[n + 1] <= args.k.size(0),
          "attention (torch): sequence {} has {} queries at [{}, {}) and {} keys at "
          "[{}, {}); expected 0 <= queries <= keys within q's {} and k's {} tokens",
          n, sq, cq[n], cq[n + 1], sk, ck[n], ck[n + 1], args.q.size(0), args.k.size(0));
      if (sq > 0) plan.segments.insert(plan.segments.end(), {cq[n], sq, ck[n], sk});
    }
  }
  return AttentionFunction::apply(args.q, args.k, args.v, plan);
}

} // namespace detail

namespace {

// HF's own kernels for its common cases. On a GPU in bf16/fp16, causal self-attention (as many
// keys as queries) is exactly what HF hands to torch's sdpa (is_causal, enable_gqa for head_dim <=
// 256), and sdpa's flash kernel does it in O(S) memory. Decoding (one query per row against a KV
// cache holding the same number of keys in every row) is sdpa without a mask, as in HF.
// Everything else (fp32, CPU, several queries against longer keys) takes the chunked path above,
// which is the definition tests compare against.
enum class SdpaCase { kNone, kCausal, kDecode };

SdpaCase hf_sdpa_case(const ops::AttentionArgs& a) {
  const auto dtype = a.q.scalar_type();
  if (!a.q.is_cuda() || (dtype != at::kBFloat16 && dtype != at::kHalf)) return SdpaCase::kNone;
  if (a.q.size(-1) > 256 || a.q.size(-1) != a.v.size(-1)) return SdpaCase::kNone;
  if (a.varlen()) {
    const bool self = !a.cu_seqlens_k.defined() || a.cu_seqlens_k.is_same(a.cu_seqlens);
    return self ? SdpaCase::kCausal : SdpaCase::kNone;
  }
  if (a.q.size(1) == 1) return SdpaCase::kDecode;
  if (a.q.size(1) == a.k.size(1)) return SdpaCase::kCausal;
  return SdpaCase::kNone;
}

// sdpa without its cuDNN backend: cuDNN's attention builds (and caches) a graph per shape, ~47 ms
// each on an H200 (measured with kiln generate --profile), so every new sequence length (each
// decode step, each prompt length, each packed document length) would pay that; flash and
// memory-efficient attention have no per-shape cost. The user's global setting is restored.
at::Tensor sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                double scale) { // [B, S, H, D] each
  at::Context& context = at::globalContext();
  const bool cudnn = context.userEnabledCuDNNSDP();
  context.setSDPUseCuDNN(false);
  at::Tensor o;
  try {
    o = at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         /*attn_mask=*/{}, /*dropout_p=*/0.0, causal, scale,
                                         /*enable_gqa=*/true);
  } catch (...) {
    context.setSDPUseCuDNN(cudnn);
    throw;
  }
  context.setSDPUseCuDNN(cudnn);
  return o.transpose(1, 2);
}

} // namespace

at::Tensor attention(const ops::AttentionArgs& args) {
  switch (hf_sdpa_case(args)) {
    case SdpaCase::kNone:
      break;
    case SdpaCase::kDecode:
      return sdpa(args.q, args.k, args.v, false, args.softmax_scale);
    case SdpaCase::kCausal: {
      if (!args.varlen()) return sdpa(args.q, args.k, args.v, true, args.softmax_scale);
      const std::vector<int64_t> cu = host_offsets(args.cu_seqlens);
      std::vector<at::Tensor> docs; // one sdpa call per document: attention never crosses them
      for (size_t n = 0; n + 1 < cu.size(); ++n) {
        if (cu[n + 1] == cu[n]) continue;
        auto doc = [&](const at::Tensor& t) { return t.slice(0, cu[n], cu[n + 1]).unsqueeze(0); };
        docs.push_back(sdpa(doc(args.q), doc(args.k), doc(args.v), true, args.softmax_scale)[0]);
      }
      if (docs.empty()) return args.q.new_empty({0, args.q.size(1), args.v.size(-1)});
      return at::cat(docs, 0);
    }
  }
  return detail::attention_chunked(args, /*query_chunk=*/0);
}

} // namespace kiln::backends::torch_ref
