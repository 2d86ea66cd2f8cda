// The SDK side of `indexer_topk`: checks that hold for every backend, then dispatch.
#include "kiln/sdk/ops/indexer_topk.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

namespace kiln::ops {

at::Tensor indexer_topk(const at::Tensor& index_q, const at::Tensor& index_k,
                        const at::Tensor& head_weights, const at::Tensor& cu_seqlens, int64_t topk,
                        const at::Tensor& query_indices, const at::Tensor& cu_seqlens_padded) {
  const detail::ArgChecker check(IndexerTopkOp::kName, "index_q", index_q);
  check.required("index_k", index_k);
  check.required("head_weights", head_weights);
  check.rank("index_q", index_q, 3, "[Tq, H_I, D_I]");
  check.rank("index_k", index_k, 2, "[Tk, D_I]");
  check.dtype_in("index_q", index_q, detail::kFloatTypes);
  check.same_dtype("index_k", index_k, "index_q", index_q);
  const int64_t tq = index_q.size(0);
  const int64_t tk = index_k.size(0);
  check.size("index_k", index_k, 1, index_q.size(2), "D_I (from index_q)");
  check.dtype("head_weights", head_weights, c10::ScalarType::Float,
              "(fold the index scales in float32)");
  check.shape("head_weights", head_weights, {tq, index_q.size(1)}, "[Tq, H_I] (from index_q)");
  const int64_t n = check.cu_seqlens("cu_seqlens", cu_seqlens, tk, /*total_is_bound=*/true);
  check.require(topk >= 1, "'topk' must be >= 1; found {}", topk);
  if (check.optional("query_indices", query_indices)) {
    check.dtype("query_indices", query_indices, c10::ScalarType::Int);
    check.shape("query_indices", query_indices, {tq}, "[Tq] (from index_q)");
    check.values_in("query_indices", query_indices, 0, tk);
  } else {
    check.size("index_k", index_k, 0, tq,
               "Tq (from index_q; pass query_indices when the queries are a shard of the keys)");
  }
  if (check.optional("cu_seqlens_padded", cu_seqlens_padded)) {
    const int64_t np = check.cu_seqlens("cu_seqlens_padded", cu_seqlens_padded, tk,
                                        /*total_is_bound=*/true);
    check.require(np == n,
                  "'cu_seqlens_padded' must describe N = {} documents (from cu_seqlens); found {}",
                  n, np);
    if (cu_seqlens.device().is_cpu()) { // each document must fit its padded slot
      const auto real = cu_seqlens.accessor<int32_t, 1>();
      const auto padded = cu_seqlens_padded.accessor<int32_t, 1>();
      for (int64_t i = 0; i < n; ++i) {
        check.require(real[i + 1] - real[i] <= padded[i + 1] - padded[i],
                      "'cu_seqlens_padded' gives document {} a slot of {} tokens, shorter than "
                      "its {} real tokens (cu_seqlens)",
                      i, padded[i + 1] - padded[i], real[i + 1] - real[i]);
      }
    }
  }
  return sdk::dispatch<IndexerTopkOp>(IndexerTopkArgs{index_q, index_k, head_weights, cu_seqlens,
                                                      topk, query_indices, cu_seqlens_padded});
}

} // namespace kiln::ops
