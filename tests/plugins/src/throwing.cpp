// Registers a kernel, then throws: the host must report the message and keep nothing.
#include "kiln/sdk/error.h"
#include "kiln/sdk/ops.h"
#include "kiln/sdk/plugin.h"

namespace {

void register_throwing(kiln::sdk::Registrar& r) {
  r.add_kernel<kiln::ops::RopeOp>({.backend = "testthrows",
                                   .device = c10::DeviceType::CPU,
                                   .run = [](const kiln::ops::RopeArgs& a) { return a.x; }});
  kiln::user_error("cannot find libfancy.so.3 (testthrows needs it)");
}

} // namespace

KILN_PLUGIN("testthrows", backend, "0.0.1", register_throwing)
