// Needs a symbol nothing provides: dlopen with RTLD_NOW must fail, cleanly.
#include "kiln/sdk/plugin.h"

extern "C" void kiln_test_symbol_that_does_not_exist();

namespace {
void register_unresolved(kiln::sdk::Registrar&) {
  kiln_test_symbol_that_does_not_exist();
}
} // namespace

KILN_PLUGIN("testunresolved", backend, "0.0.1", register_unresolved)
