// The SDK side of `attention`: checks that hold for every backend, then dispatch.
#include "kiln/sdk/ops/attention.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

#include <cmath>

namespace kiln::ops {

at::Tensor attention(const AttentionArgs& args) {
  const detail::ArgChecker check(AttentionOp::kName, "q", args.q);
  const at::Tensor& q = args.q;
  const at::Tensor& k = args.k;
  const at::Tensor& v = args.v;
  check.required("k", k);
  check.required("v", v);
  check.dtype_in("q", q, detail::kFloatTypes);
  check.same_dtype("k", k, "q", q);
  check.same_dtype("v", v, "q", q);

  if (!args.varlen()) {
    check.require(!args.cu_seqlens_k.defined(),
                  "'cu_seqlens_k' is given without 'cu_seqlens' (BSHD takes neither, THD needs "
                  "cu_seqlens)");
    check.rank("q", q, 4, "[B, Sq, Hq, D] (BSHD; THD takes [Tq, Hq, D] with cu_seqlens)");
    check.rank("k", k, 4, "[B, Sk, Hkv, D]");
    check.rank("v", v, 4, "[B, Sk, Hkv, Dv]");
    check.size("k", k, 0, q.size(0), "B (from q)");
    check.size("v", v, 0, q.size(0), "B (from q)");
    check.size("v", v, 1, k.size(1), "Sk (from k)");
    check.require(k.size(1) >= q.size(1),
                  "'k' dim 1 (Sk) must be >= Sq = {} (queries are the last Sq positions); found "
                  "{}",
                  q.size(1), shape_str(k.sizes()));
  } else {
    check.rank("q", q, 3, "[Tq, Hq, D] (THD, with cu_seqlens)");
    check.rank("k", k, 3, "[Tk, Hkv, D]");
    check.rank("v", v, 3, "[Tk, Hkv, Dv]");
    check.size("v", v, 0, k.size(0), "Tk (from k)");
    const int64_t n = check.cu_seqlens("cu_seqlens", args.cu_seqlens, q.size(0));
    check.require(args.max_seqlen >= 1, "'max_seqlen' must be >= 1 in THD; found {}",
                  args.max_seqlen);
    check.seqlen_bound("cu_seqlens", args.cu_seqlens, "max_seqlen", args.max_seqlen);
    if (check.optional("cu_seqlens_k", args.cu_seqlens_k)) {
      const int64_t nk = check.cu_seqlens("cu_seqlens_k", args.cu_seqlens_k, k.size(0));
      check.require(nk == n,
                    "'cu_seqlens_k' must describe N = {} sequences (from cu_seqlens); "
                    "found {}",
                    n, nk);
      check.require(args.max_seqlen_k >= args.max_seqlen,
                    "'max_seqlen_k' must be >= max_seqlen = {} with cu_seqlens_k; found {}",
                    args.max_seqlen, args.max_seqlen_k);
      check.seqlen_bound("cu_seqlens_k", args.cu_seqlens_k, "max_seqlen_k", args.max_seqlen_k);
    } else {
      check.size("k", k, 0, q.size(0),
                 "Tq (from q; pass cu_seqlens_k for keys laid out differently)");
      check.require(args.max_seqlen_k == 0 || args.max_seqlen_k >= args.max_seqlen,
                    "'max_seqlen_k' must be 0 or >= max_seqlen = {}; found {}", args.max_seqlen,
                    args.max_seqlen_k);
    }
  }

  const int64_t hq = q.size(-2);
  const int64_t hkv = k.size(-2);
  check.require(hkv >= 1 && hq % hkv == 0,
                "'k' dim {} (Hkv) must divide the Hq = {} query heads; found {}", k.dim() - 2, hq,
                shape_str(k.sizes()));
  check.size("v", v, -2, hkv, "Hkv (from k)");
  check.size("k", k, -1, q.size(-1), "D (from q)");
  check.require(args.softmax_scale > 0 && std::isfinite(args.softmax_scale),
                "'softmax_scale' must be finite and > 0; found {}", args.softmax_scale);
  return sdk::dispatch<AttentionOp>(args);
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     double softmax_scale) {
  return attention(AttentionArgs{.q = q, .k = k, .v = v, .softmax_scale = softmax_scale});
}

} // namespace kiln::ops
