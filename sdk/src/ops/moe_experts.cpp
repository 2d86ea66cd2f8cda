// The SDK side of `moe_experts`: checks that hold for every backend, then dispatch.
#include "kiln/sdk/ops/moe_experts.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

namespace kiln::ops {

at::Tensor moe_experts(const at::Tensor& x, const at::Tensor& w_up, const at::Tensor& w_down,
                       const at::Tensor& indices, const at::Tensor& weights,
                       MoeActivation activation) {
  const detail::ArgChecker check(MoeExpertsOp::kName, "x", x);
  check.required("w_up", w_up);
  check.required("w_down", w_down);
  check.required("indices", indices);
  check.required("weights", weights);
  const bool gated = activation == MoeActivation::kSwiGlu;
  check.rank("x", x, 2, "[N, H]");
  check.rank("w_up", w_up, 3, gated ? "[E, 2I, H] (kSwiGlu)" : "[E, I, H] (kRelu2)");
  check.rank("w_down", w_down, 3, "[E, H, I]");
  check.rank("indices", indices, 2, "[N, k]");
  check.dtype_in("x", x, detail::kFloatTypes);
  check.same_dtype("w_up", w_up, "x", x);
  check.same_dtype("w_down", w_down, "x", x);
  check.dtype("indices", indices, c10::ScalarType::Long);
  check.require(
      weights.scalar_type() == c10::ScalarType::Float || weights.scalar_type() == x.scalar_type(),
      "'weights' dtype must be float32 (HF) or {} (x's dtype); found {}",
      dtype_name(x.scalar_type()), dtype_name(weights.scalar_type()));

  const int64_t n = x.size(0);
  const int64_t h = x.size(1);
  const int64_t e = w_up.size(0);
  const int64_t i = w_down.size(2);
  check.size("w_up", w_up, 2, h, "H (from x)");
  check.size("w_down", w_down, 0, e, "E (from w_up)");
  check.size("w_down", w_down, 1, h, "H (from x)");
  check.size(
      "w_up", w_up, 1, gated ? 2 * i : i,
      gated ? "2I (kSwiGlu: gate rows then up rows; I from w_down)" : "I (kRelu2; I from w_down)");
  check.size("indices", indices, 0, n, "N (from x)");
  check.require(indices.size(1) >= 1, "'indices' must be [N, k] with k >= 1; found {}",
                shape_str(indices.sizes()));
  check.shape("weights", weights, indices.sizes(), "[N, k] (from indices)");
  check.values_in("indices", indices, 0, e, /*sentinel=*/-1);
  return sdk::dispatch<MoeExpertsOp>(MoeExpertsArgs{x, w_up, w_down, indices, weights, activation});
}

} // namespace kiln::ops
