// Claims the torch backend's rms_norm on CPU: a duplicate of the torch plugin's kernel.
#include "kiln/sdk/ops.h"
#include "kiln/sdk/plugin.h"

namespace {

void register_duplicate(kiln::sdk::Registrar& r) {
  r.add_kernel<kiln::ops::RmsNormOp>({.backend = "torch",
                                      .device = c10::DeviceType::CPU,
                                      .run = [](const kiln::ops::RmsNormArgs& a) { return a.x; }});
}

} // namespace

KILN_PLUGIN("testdup", backend, "0.0.1", register_duplicate)
