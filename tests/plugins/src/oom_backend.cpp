// A backend whose rms_norm runs out of memory the way CUDA's caching allocator says so (a
// c10::OutOfMemoryError, whose what() carries a C++ stack trace): the CLI and `kiln bench model`
// must turn it into one line that names what to change.
#include "kiln/sdk/ops.h"
#include "kiln/sdk/plugin.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace {

void register_oom(kiln::sdk::Registrar& r) {
  r.add_kernel<kiln::ops::RmsNormOp>(
      {.backend = "testoom",
       .device = c10::DeviceType::CPU,
       .priority = 10,
       .run = [](const kiln::ops::RmsNormArgs& a) -> at::Tensor {
         TORCH_CHECK_WITH(OutOfMemoryError, false,
                          "CUDA out of memory. Tried to allocate 9.00 GiB. GPU 0 has a total "
                          "capacity of 79.19 GiB of which 2.12 GiB is free.\n"
                          "Of the allocated memory 75.10 GiB is allocated by PyTorch.");
         return a.x;
       },
       .supports =
           [](const kiln::ops::RmsNormArgs& a) { return a.x.scalar_type() == at::kFloat; }});
}

} // namespace

KILN_PLUGIN("testoom", backend, "0.0.1", register_oom)
