// Whether this machine runs the cuda backend's kernels: they are sm_90a code, which loads on
// compute capability 9.0 only (H100, H200). The backend declines other GPUs (its supports()), so
// the tests that check its kernels skip there, saying which GPU they found.
#pragma once

#include <ATen/Context.h>
#include <fmt/format.h>

#if __has_include(<cuda_runtime_api.h>) && __has_include(<ATen/cuda/CUDAContext.h>)
#include <ATen/cuda/CUDAContext.h>
#define KILN_TEST_CUDA_PROPERTIES 1
#endif

#include <cstdlib>
#include <string>

namespace kiln::test {

/// The cuda backend these tests check: "cuda", or the backend KILN_TEST_CUDA_BACKEND names (a
/// second build of its sources under another name, e.g. CMake's KILN_CUDA_VARIANT builds
/// "cuda_variant"; tools/gpu kernels runs the suites once per backend).
inline std::string cuda_backend_under_test() {
  const char* name = std::getenv("KILN_TEST_CUDA_BACKEND");
  return name != nullptr && *name != '\0' ? name : "cuda";
}

/// Empty when GPU 0 runs the cuda backend's kernels; else why not (for GTEST_SKIP).
inline std::string cuda_backend_unavailable() {
  if (!at::hasCUDA()) return "no GPU";
#ifdef KILN_TEST_CUDA_PROPERTIES
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(0);
  if (p->major != 9 || p->minor != 0) {
    return fmt::format(
        "the cuda backend's kernels are sm_90a code; this GPU is {} (compute "
        "capability {}.{})",
        p->name, p->major, p->minor);
  }
#endif
  return "";
}

} // namespace kiln::test
