// Versions of the SDK and the fingerprint of the host process's build.
#pragma once

#include "kiln/sdk/export.h"

#include <string>

namespace kiln::sdk {

/// The kiln release the SDK library belongs to, e.g. "0.1.0".
KILN_SDK_API std::string version();

/// The build fingerprint of libkiln-sdk.so itself (what plugins must match).
struct Fingerprint {
  std::string torch_version; ///< "2.11.0"
  int cxx11_abi = 1;
  int cuda_version = 0; ///< CUDA toolkit the host was built with, 0 if none
  std::string compiler; ///< "GNU 12.2.0"
};
KILN_SDK_API Fingerprint host_fingerprint();

} // namespace kiln::sdk
