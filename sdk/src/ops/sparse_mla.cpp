// The SDK side of `sparse_mla`: checks that hold for every backend, then dispatch.
#include "kiln/sdk/ops/sparse_mla.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

#include <cmath>

namespace kiln::ops {

at::Tensor sparse_mla(const at::Tensor& q_absorbed, const at::Tensor& kv_latent,
                      const at::Tensor& topk_indices, const at::Tensor& w_vc,
                      double softmax_scale) {
  const detail::ArgChecker check(SparseMlaOp::kName, "q_absorbed", q_absorbed);
  check.required("kv_latent", kv_latent);
  check.required("topk_indices", topk_indices);
  check.required("w_vc", w_vc);
  check.rank("q_absorbed", q_absorbed, 3, "[T, H, L + R]");
  check.rank("kv_latent", kv_latent, 3, "[Tk, 1, L + R]");
  check.rank("topk_indices", topk_indices, 3, "[T, 1, K]");
  check.rank("w_vc", w_vc, 3, "[H, Dv, L]");
  check.dtype_in("q_absorbed", q_absorbed, detail::kFloatTypes);
  check.same_dtype("kv_latent", kv_latent, "q_absorbed", q_absorbed);
  check.same_dtype("w_vc", w_vc, "q_absorbed", q_absorbed);
  check.dtype("topk_indices", topk_indices, c10::ScalarType::Int);

  const int64_t t = q_absorbed.size(0);
  const int64_t dqk = q_absorbed.size(2);
  check.size("kv_latent", kv_latent, 1, 1, "H_kv (one latent head shared by all heads)");
  check.size("kv_latent", kv_latent, 2, dqk, "L + R (from q_absorbed)");
  check.size("topk_indices", topk_indices, 0, t, "T (from q_absorbed)");
  check.size("topk_indices", topk_indices, 1, 1, "H_kv (one index set shared by all heads)");
  check.require(topk_indices.size(2) >= 1, "'topk_indices' must be [T, 1, K] with K >= 1; found {}",
                shape_str(topk_indices.sizes()));
  check.values_in("topk_indices", topk_indices, 0, kv_latent.size(0), /*sentinel=*/-1);
  check.size("w_vc", w_vc, 0, q_absorbed.size(1), "H (from q_absorbed)");
  check.require(w_vc.size(2) >= 1 && w_vc.size(2) <= dqk,
                "'w_vc' dim 2 (L = kv_lora_rank) must be in [1, L + R = {}]; found {}", dqk,
                shape_str(w_vc.sizes()));
  check.require(softmax_scale > 0 && std::isfinite(softmax_scale),
                "'softmax_scale' must be finite and > 0; found {}", softmax_scale);
  return sdk::dispatch<SparseMlaOp>(
      SparseMlaArgs{q_absorbed, kv_latent, topk_indices, w_vc, softmax_scale});
}

} // namespace kiln::ops
