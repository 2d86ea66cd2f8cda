// Built with KILN_BUILD_TORCH_VERSION="2.10.0" on the command line: a plugin from an older
// LibTorch.
#include "kiln/sdk/plugin.h"

namespace {
void register_nothing(kiln::sdk::Registrar&) {}
} // namespace

KILN_PLUGIN("testoldtorch", backend, "0.0.1", register_nothing)
