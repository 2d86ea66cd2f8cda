// Registration table of the `example` backend: every kernel it provides, in one place.
#include "kernels.h"

#include "kiln/sdk/plugin.h"

namespace kiln_example {
namespace {

// Above the torch reference (-100): `auto` picks this kernel whenever supports() holds and falls
// back to torch for everything else (bf16/fp16, strided inputs, autograd).
constexpr int kPriority = 0;

void register_example_backend(kiln::sdk::Registrar& r) {
  r.add_kernel<kiln::ops::RmsNormOp>({
      .backend = "example",
      .device = c10::DeviceType::CPU,
      .priority = kPriority,
      .version = "1", // bump when the kernel's numerics or speed change (autotuning cache key)
      .run = &rms_norm_cpu,
      .supports = &rms_norm_cpu_supports,
  });
}

} // namespace
} // namespace kiln_example

// The descriptor's name must match the file: kind backend + name example ->
// libkiln-backend-example.so.
KILN_PLUGIN("example", backend, "1.0.0", kiln_example::register_example_backend)
