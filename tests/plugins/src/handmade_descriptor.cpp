// A descriptor written by hand, as a plugin from another SDK version would carry it. The ABI
// numbers come from the command line (TEST_ABI_MAJOR / TEST_ABI_MINOR / TEST_NAME).
#include "kiln/sdk/plugin.h"

namespace {
int register_never(void*, char*, size_t) {
  return 0;
}
} // namespace

extern "C" __attribute__((visibility("default"))) const struct kiln_plugin_info* kiln_plugin_info(
    void) {
  static const struct kiln_plugin_info info = {sizeof(struct kiln_plugin_info),
                                               TEST_ABI_MAJOR,
                                               TEST_ABI_MINOR,
                                               KILN_BUILD_TORCH_VERSION,
                                               KILN_BUILD_CXX11_ABI,
                                               0,
                                               KILN_BUILD_COMPILER,
                                               TEST_NAME,
                                               KILN_PLUGIN_KIND_BACKEND,
                                               "9.9.9",
                                               &register_never};
  return &info;
}
