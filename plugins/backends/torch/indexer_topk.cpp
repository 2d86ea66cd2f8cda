// Reference `indexer_topk`: the DSA lightning indexer's scores and causal top-k, in query chunks.
//
// Numerics (HF GlmMoeDsaIndexer, models.md §3.4):
//   s[q, h, t] = index_q_f32[q, h] . index_k_f32[t]      float32 (bf16 products are exact in
//                                                       float32, as HF's q.float() @ k.float())
//   score[q, t] = sum_h head_weights[q, h] * relu(s)     float32, a [1, H] x [H, L] product per
//                                                       query as HF's weights @ scores
//   out[q] = at::topk(score[q, window], min(topk, L))    keys outside q's window are -inf and
//                                                       come back as -1, as do unused columns.
// HF scales s by D_I^-0.5 before the ReLU; the op folds that scale into head_weights, which is
// the same number up to float32 rounding of the products (exactly the same when D_I^-0.5 is a
// power of two).
//
// Windows: every query row gets the half-open key range [lo, hi) of index_k it may see: its own
// document from the document's start (cu_seqlens_padded or cu_seqlens) up to and including its
// own position (query_indices or its row). Rows in no document get an empty window. The offsets
// are copied to the host once per call (a sync, acceptable for the reference).
//
// Memory: rows are processed in chunks of c consecutive rows against the span of L keys that
// their windows cover together (for one document, the keys up to the chunk's last row). Beyond
// the inputs, the float32 keys [Tk, D_I] and the int32 output [Tq, 1, topk], one chunk holds
//   c * H_I * L * 4 bytes   float32 q.k products (the ReLU is applied in place)
//   c * L * 13 bytes        float32 scores, the visibility mask and the masked scores
//   c * k * 12 bytes        top-k values and int64 indices (k = min(topk, L))
// and c starts at every row and halves until c * L * (4 H_I + 16) <= kChunkBudget (1 GiB), at
// least one row; later chunks keep that size. So the peak is about
//   Tk * D_I * 4 + Tq * topk * 4 + 1 GiB
// and never O(Tq * Tk * H_I): for GLM-5 shapes (H_I = 32, D_I = 128, topk = 2048) at Tq = Tk =
// 32768 that is 16 MiB + 256 MiB + 1 GiB, where the full [T, H_I, T] float32 product alone would
// take 128 GiB.
#include "kernels.h"

#include "kiln/sdk/error.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace kiln::backends::torch_ref {
namespace {

constexpr int64_t kChunkBudget = int64_t{1} << 30; // bytes of per-chunk temporaries

std::vector<int64_t> to_host(const at::Tensor& t) {
  const at::Tensor host = t.to(at::kCPU, at::kLong).contiguous();
  return {host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel()};
}

// Key windows [lo[q], hi[q]) of every query row (empty: lo == hi).
struct Windows {
  std::vector<int64_t> lo, hi;
};

Windows query_windows(const ops::IndexerTopkArgs& a) {
  const int64_t tq = a.index_q.size(0);
  const std::vector<int64_t> cu = to_host(a.cu_seqlens);
  const std::vector<int64_t> starts =
      a.cu_seqlens_padded.defined() ? to_host(a.cu_seqlens_padded) : cu;
  std::vector<int64_t> position(tq);
  if (a.query_indices.defined()) {
    position = to_host(a.query_indices);
  } else {
    for (int64_t q = 0; q < tq; ++q) position[q] = q;
  }
  const int64_t docs = static_cast<int64_t>(cu.size()) - 1;
  Windows w{std::vector<int64_t>(tq, 0), std::vector<int64_t>(tq, 0)};
  for (int64_t q = 0; q < tq; ++q) {
    const int64_t p = position[q];
    // The last document starting at or before p (empty documents share a start with the next).
    const auto it = std::upper_bound(starts.begin(), starts.begin() + docs, p);
    const int64_t n = (it - starts.begin()) - 1;
    if (n < 0) continue;
    const int64_t length = cu[n + 1] - cu[n];
    if (p < starts[n] + length) {
      w.lo[q] = starts[n];
      w.hi[q] = p + 1;
    }
  }
  return w;
}

// The key span [lo, hi) covered by rows [r0, r0 + c); empty when every row's window is.
std::pair<int64_t, int64_t> span(const Windows& w, int64_t r0, int64_t c) {
  int64_t lo = std::numeric_limits<int64_t>::max();
  int64_t hi = std::numeric_limits<int64_t>::min();
  for (int64_t r = r0; r < r0 + c; ++r) {
    if (w.lo[r] == w.hi[r]) continue;
    lo = std::min(lo, w.lo[r]);
    hi = std::max(hi, w.hi[r]);
  }
  return lo < hi ? std::pair{lo, hi} : std::pair<int64_t, int64_t>{0, 0};
}

} // namespace

namespace detail {

at::Tensor indexer_topk_chunked(const ops::IndexerTopkArgs& args, int64_t query_chunk) {
  const c10::NoGradGuard no_grad; // integer result; HF runs the indexer under no_grad
  const int64_t tq = args.index_q.size(0);
  const int64_t heads = args.index_q.size(1);
  const int64_t dim = args.index_q.size(2);
  const int64_t topk = args.topk;
  const auto device = args.index_q.device();
  at::Tensor out = at::full({tq, 1, topk}, -1, at::TensorOptions().dtype(at::kInt).device(device));
  if (tq == 0) return out;

  const Windows windows = query_windows(args);
  const at::Tensor keys = args.index_k.to(at::kFloat).contiguous(); // [Tk, D_I]
  const at::Tensor lo_all = at::tensor(windows.lo, at::kLong).to(device);
  const at::Tensor hi_all = at::tensor(windows.hi, at::kLong).to(device);
  const int64_t bytes_per_pair = 4 * heads + 16;
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);

  int64_t step = query_chunk > 0 ? query_chunk : tq;
  for (int64_t r0 = 0; r0 < tq;) {
    int64_t c = std::min(step, tq - r0);
    auto [k0, k1] = span(windows, r0, c);
    while (c > 1 && c * (k1 - k0) * bytes_per_pair > kChunkBudget) {
      c = (c + 1) / 2;
      std::tie(k0, k1) = span(windows, r0, c);
    }
    step = c; // later rows see at least as many keys in one document: keep the smaller chunk
    const int64_t keys_seen = k1 - k0;
    if (keys_seen > 0) {
      const at::Tensor q = args.index_q.narrow(0, r0, c).to(at::kFloat); // [c, H, D]
      const at::Tensor k = keys.narrow(0, k0, keys_seen);                // [L, D]
      at::Tensor s = at::matmul(q.reshape({c * heads, dim}), k.t());     // [c*H, L]
      s.relu_();
      const at::Tensor w = args.head_weights.narrow(0, r0, c).unsqueeze(1);       // [c, 1, H]
      at::Tensor score = at::matmul(w, s.view({c, heads, keys_seen})).squeeze(1); // [c, L]
      s.reset();
      const at::Tensor position = at::arange(k0, k1, long_opts).unsqueeze(0); // [1, L]
      const at::Tensor visible = (position >= lo_all.narrow(0, r0, c).unsqueeze(1)) &
                                 (position < hi_all.narrow(0, r0, c).unsqueeze(1)); // [c, L]
      score.masked_fill_(visible.logical_not(), -std::numeric_limits<float>::infinity());
      const int64_t kk = std::min(topk, keys_seen);
      const auto [values, indices] = at::topk(score, kk, /*dim=*/-1); // [c, kk]
      const at::Tensor picked =
          at::where(at::isinf(values), at::full({}, -1, long_opts), indices + k0);
      out.narrow(0, r0, c).select(1, 0).narrow(1, 0, kk).copy_(picked);
    }
    r0 += c;
  }
  return out;
}

} // namespace detail

at::Tensor indexer_topk(const ops::IndexerTopkArgs& args) {
  return detail::indexer_topk_chunked(args, /*query_chunk=*/0);
}

} // namespace kiln::backends::torch_ref
