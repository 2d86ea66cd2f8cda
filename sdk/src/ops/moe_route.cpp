// The SDK side of `moe_route`: checks that hold for every backend, then dispatch.
#include "kiln/sdk/ops/moe_route.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

#include <cmath>

namespace kiln::ops {

MoeRouteResult moe_route(const MoeRouteArgs& args) {
  const detail::ArgChecker check(MoeRouteOp::kName, "logits", args.logits);
  check.rank("logits", args.logits, 2, "[N, E]");
  check.dtype_in("logits", args.logits, detail::kFloatTypes);
  const int64_t e = args.logits.size(1);
  if (check.optional("e_score_correction_bias", args.e_score_correction_bias)) {
    check.dtype("e_score_correction_bias", args.e_score_correction_bias, c10::ScalarType::Float,
                "(HF keeps it in float32)");
    check.shape("e_score_correction_bias", args.e_score_correction_bias, {e}, "[E] (from logits)");
  }
  check.require(args.top_k >= 1 && args.top_k <= e, "'top_k' must be in [1, E = {}]; found {}", e,
                args.top_k);
  check.require(args.n_group >= 1 && e % args.n_group == 0,
                "'n_group' must be >= 1 and divide E = {}; found {}", e, args.n_group);
  check.require(args.topk_group >= 1 && args.topk_group <= args.n_group,
                "'topk_group' must be in [1, n_group = {}]; found {}", args.n_group,
                args.topk_group);
  if (args.n_group > 1) {
    const int64_t per_group = e / args.n_group;
    check.require(per_group >= 2,
                  "'n_group' = {} leaves {} expert(s) per group; the group score needs >= 2",
                  args.n_group, per_group);
    check.require(args.top_k <= args.topk_group * per_group,
                  "'top_k' must be <= topk_group * E / n_group = {} (experts in the kept groups); "
                  "found {}",
                  args.topk_group * per_group, args.top_k);
  }
  check.require(args.routed_scaling_factor > 0 && std::isfinite(args.routed_scaling_factor),
                "'routed_scaling_factor' must be finite and > 0; found {}",
                args.routed_scaling_factor);
  return sdk::dispatch<MoeRouteOp>(args);
}

} // namespace kiln::ops
