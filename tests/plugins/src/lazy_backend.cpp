// A backend whose CUDA kernels return their output without writing it (at::empty): what a kernel
// that skips part of its output looks like to `kiln bench op`, which must report it (values not
// finite or below -1, wrong picks) instead of whatever an earlier row left in that memory.
#include "kiln/sdk/ops.h"
#include "kiln/sdk/plugin.h"

#include <ATen/ATen.h>

namespace {

void register_lazy(kiln::sdk::Registrar& r) {
  r.add_kernel<kiln::ops::RmsNormOp>(
      {.backend = "testlazy",
       .device = c10::DeviceType::CUDA,
       .run = [](const kiln::ops::RmsNormArgs& a) { return at::empty_like(a.x); }});
  r.add_kernel<kiln::ops::IndexerTopkOp>(
      {.backend = "testlazy",
       .device = c10::DeviceType::CUDA,
       .run = [](const kiln::ops::IndexerTopkArgs& a) {
         return at::empty({a.index_q.size(0), 1, a.topk}, a.index_q.options().dtype(at::kInt));
       }});
}

} // namespace

KILN_PLUGIN("testlazy", backend, "1.0.0", register_lazy)
