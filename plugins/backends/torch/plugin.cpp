// Registration table of the torch reference backend.
#include "kernels.h"

#include "kiln/sdk/plugin.h"

namespace kiln::backends::torch_ref {
namespace {

// Below every hand-written backend: `auto` prefers anything faster, torch is the fallback.
constexpr int kPriority = -100;

template <class Op>
void add(sdk::Registrar& r, typename Op::Result (*fn)(const typename Op::Args&)) {
  for (auto device : {c10::DeviceType::CPU, c10::DeviceType::CUDA}) {
    r.add_kernel<Op>({.backend = "torch", .device = device, .priority = kPriority, .run = fn});
  }
}

void register_torch_backend(sdk::Registrar& r) {
  add<ops::RmsNormOp>(r, &rms_norm);
  add<ops::RopeOp>(r, &rope);
  add<ops::AttentionOp>(r, &attention);
  add<ops::MoeRouteOp>(r, &moe_route);
  add<ops::MoeExpertsOp>(r, &moe_experts);
  add<ops::LinearCrossEntropyOp>(r, &linear_cross_entropy);
  add<ops::IndexerTopkOp>(r, &indexer_topk);
  add<ops::SparseMlaOp>(r, &sparse_mla);
  add<ops::GatedRmsNormOp>(r, &gated_rms_norm);
  add<ops::CausalConv1dOp>(r, &causal_conv1d);
  add<ops::Mamba2ScanOp>(r, &mamba2_scan);
  add<ops::AdamwOp>(r, &adamw);
}

} // namespace
} // namespace kiln::backends::torch_ref

KILN_PLUGIN("torch", backend, "0.1.0", kiln::backends::torch_ref::register_torch_backend)
