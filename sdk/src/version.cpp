#include "kiln/sdk/version.h"

#if defined(KILN_SDK_CUDA_VERSION)
#define KILN_BUILD_CUDA_VERSION KILN_SDK_CUDA_VERSION
#endif
#include "kiln/sdk/build_info.h"

namespace kiln::sdk {

std::string version() {
  return KILN_VERSION_STRING;
}

Fingerprint host_fingerprint() {
  return Fingerprint{KILN_BUILD_TORCH_VERSION, KILN_BUILD_CXX11_ABI, KILN_BUILD_CUDA_VERSION,
                     KILN_BUILD_COMPILER};
}

} // namespace kiln::sdk
