#include "kiln/sdk/autotune.h"

#include "kiln/sdk/ops.h"

#include <fmt/format.h>

namespace kiln::sdk {
namespace {

// Size of dim `d` (negative counts from the end), 0 for an undefined tensor or a missing dim.
int64_t dim(const at::Tensor& t, int64_t d) {
  if (!t.defined()) return 0;
  const int64_t rank = t.dim();
  if (d < 0) d += rank;
  return d >= 0 && d < rank ? t.size(d) : 0;
}

// A token-like size, rounded up to a power of two.
int64_t tok(int64_t n) {
  return round_up_pow2(n);
}

// Sequences in a cu_seqlens [N+1] tensor (its shape, never its values).
int64_t seqs(const at::Tensor& cu_seqlens) {
  return tok(std::max<int64_t>(dim(cu_seqlens, 0) - 1, 0));
}

// Rows of x [..., D]: every dim but the last.
int64_t rows(const at::Tensor& x) {
  const int64_t d = dim(x, -1);
  return d > 0 ? x.numel() / d : 0;
}

std::string bucket(const ops::RmsNormArgs& a) {
  return fmt::format("T={},D={}", tok(rows(a.x)), dim(a.x, -1));
}

std::string bucket(const ops::GatedRmsNormArgs& a) {
  return fmt::format("T={},D={},group={}", tok(rows(a.x)), dim(a.x, -1), a.group_size);
}

std::string bucket(const ops::RopeArgs& a) {
  const bool bshd = a.x.defined() && a.x.dim() == 4;
  const int64_t tokens = bshd ? dim(a.x, 0) * dim(a.x, 1) : dim(a.x, 0);
  return fmt::format("T={},H={},D={},R={}", tok(tokens), dim(a.x, -2), dim(a.x, -1),
                     2 * dim(a.cos, -1));
}

std::string bucket(const ops::AttentionArgs& a) {
  const std::string heads = fmt::format("Hq={},Hkv={},D={},Dv={}", dim(a.q, -2), dim(a.k, -2),
                                        dim(a.q, -1), dim(a.v, -1));
  if (a.varlen()) {
    return fmt::format("T={},Tk={},S={},Sk={},{}", tok(dim(a.q, 0)), tok(dim(a.k, 0)),
                       tok(a.max_seqlen), tok(a.key_max_seqlen()), heads);
  }
  return fmt::format("B={},Sq={},Sk={},{}", tok(dim(a.q, 0)), tok(dim(a.q, 1)), tok(dim(a.k, 1)),
                     heads);
}

std::string bucket(const ops::IndexerTopkArgs& a) {
  return fmt::format("T={},Tk={},H={},D={},K={}", tok(dim(a.index_q, 0)), tok(dim(a.index_k, 0)),
                     dim(a.index_q, 1), dim(a.index_q, 2), a.topk);
}

std::string bucket(const ops::SparseMlaArgs& a) {
  return fmt::format("T={},Tk={},H={},D={},Dv={},K={}", tok(dim(a.q_absorbed, 0)),
                     tok(dim(a.kv_latent, 0)), dim(a.q_absorbed, 1), dim(a.q_absorbed, 2),
                     dim(a.w_vc, 1), dim(a.topk_indices, -1));
}

std::string bucket(const ops::MoeRouteArgs& a) {
  return fmt::format("T={},E={},K={},G={}", tok(dim(a.logits, 0)), dim(a.logits, 1), a.top_k,
                     a.n_group);
}

std::string bucket(const ops::MoeExpertsArgs& a) {
  return fmt::format("T={},H={},I={},E={},K={},act={}", tok(dim(a.x, 0)), dim(a.x, 1),
                     dim(a.w_down, 2), dim(a.w_up, 0), dim(a.indices, 1),
                     a.activation == ops::MoeActivation::kSwiGlu ? "swiglu" : "relu2");
}

std::string bucket(const ops::CausalConv1dArgs& a) {
  const std::string widths = fmt::format("C={},K={}", dim(a.weight, 0), dim(a.weight, 1));
  if (a.mode == ops::CausalConv1dMode::kStep) {
    return fmt::format("B={},{},step", tok(dim(a.x, 0)), widths);
  }
  if (a.cu_seqlens.defined()) {
    return fmt::format("T={},seqs={},{}", tok(dim(a.x, 0)), seqs(a.cu_seqlens), widths);
  }
  return fmt::format("B={},L={},{}", tok(dim(a.x, 0)), tok(dim(a.x, 1)), widths);
}

std::string bucket(const ops::Mamba2ScanArgs& a) {
  // x [B, L, H, P] or [T, H, P]; B/C [..., G, N].
  const std::string widths =
      fmt::format("H={},P={},G={},N={}", dim(a.x, -2), dim(a.x, -1), dim(a.B, -2), dim(a.B, -1));
  if (a.cu_seqlens.defined()) {
    return fmt::format("T={},seqs={},{}", tok(dim(a.x, 0)), seqs(a.cu_seqlens), widths);
  }
  return fmt::format("B={},L={},{}", tok(dim(a.x, 0)), tok(dim(a.x, 1)), widths);
}

std::string bucket(const ops::LinearCrossEntropyArgs& a) {
  return fmt::format("T={},H={},V={}", tok(dim(a.hidden, 0)), dim(a.hidden, 1), dim(a.weight, 0));
}

// adamw is never timed (dispatch_in_place), but a policy may still ask for its bucket.
std::string bucket(const ops::AdamwArgs& a) {
  return fmt::format("N={},master={}", tok(a.param.defined() ? a.param.numel() : 0),
                     a.master.defined() ? 1 : 0);
}

// fn(the typed Args) when call.op is one of Ops, else `otherwise`.
template <class... Ops, class R, class Fn>
R visit_ops(const OpCall& call, R otherwise, const Fn& fn) {
  R out = std::move(otherwise);
  (void)((call.op == Ops::kName
              ? (out = fn(*static_cast<const typename Ops::Args*>(call.args)), true)
              : false) ||
         ...);
  return out;
}

// Every op of kiln/sdk/ops.
template <class R, class Fn>
R visit(const OpCall& call, R otherwise, const Fn& fn) {
  if (call.args == nullptr) return otherwise;
  return visit_ops<ops::RmsNormOp, ops::GatedRmsNormOp, ops::RopeOp, ops::AttentionOp,
                   ops::IndexerTopkOp, ops::SparseMlaOp, ops::MoeRouteOp, ops::MoeExpertsOp,
                   ops::CausalConv1dOp, ops::Mamba2ScanOp, ops::LinearCrossEntropyOp, ops::AdamwOp>(
      call, std::move(otherwise), fn);
}

} // namespace

int64_t round_up_pow2(int64_t n) {
  if (n <= 0) return 0;
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

std::string shape_bucket(const OpCall& call) {
  return visit(call, std::string(), [](const auto& args) { return bucket(args); });
}

c10::Device call_device(const OpCall& call) {
  return visit(call, c10::Device(call.device), [](const auto& args) { return args.device(); });
}

} // namespace kiln::sdk
