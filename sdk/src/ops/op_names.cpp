#include "kiln/sdk/ops.h"

namespace kiln::ops {

std::span<const std::string_view> op_names() {
  static constexpr std::string_view kNames[] = {
      "rms_norm",    "gated_rms_norm",       "rope",
      "attention",   "indexer_topk",         "sparse_mla",
      "moe_route",   "moe_experts",          "causal_conv1d",
      "mamba2_scan", "linear_cross_entropy", "adamw"};
  return kNames;
}

} // namespace kiln::ops
