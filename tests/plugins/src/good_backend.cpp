// A well-formed backend plugin: an rms_norm kernel on CPU that the tests can recognise (it
// returns x * 2), registered above the torch reference.
#include "kiln/sdk/ops.h"
#include "kiln/sdk/plugin.h"

#include <ATen/ATen.h>

namespace {

void register_good(kiln::sdk::Registrar& r) {
  r.add_kernel<kiln::ops::RmsNormOp>(
      {.backend = "testgood",
       .device = c10::DeviceType::CPU,
       .priority = 10,
       .run = [](const kiln::ops::RmsNormArgs& a) { return a.x * 2; },
       .supports =
           [](const kiln::ops::RmsNormArgs& a) { return a.x.scalar_type() == at::kFloat; }});
}

} // namespace

KILN_PLUGIN("testgood", backend, "1.2.3", register_good)
