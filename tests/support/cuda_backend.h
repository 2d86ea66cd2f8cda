// Whether this machine runs the cuda backend's kernels: they are sm_90a code, which loads on
// compute capability 9.0 only (H100, H200). The backend declines other GPUs (its supports()), so
// the tests that check its kernels skip there, saying which GPU they found.
#pragma once

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#if __has_include(<cuda_runtime_api.h>) && __has_include(<ATen/cuda/CUDAContext.h>)
#include <ATen/cuda/CUDAContext.h>
#define KILN_TEST_CUDA_PROPERTIES 1
#endif

#include <algorithm>
#include <cstdlib>
#include <iostream>
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

/// The bound of the bf16 comparisons against float32: `ours` (the backend under test) is as close
/// to the float32 result `exact` as torch's own bf16 result: norm-relative error
/// ||x - exact|| / ||exact|| (one number per tensor, which a lone outlier does not decide) at most
/// 2x torch's plus 5e-3. Prints both errors (the calibration a reader of the log wants).
inline ::testing::AssertionResult as_close_as_torch_bf16(const std::string& what,
                                                         const at::Tensor& ours,
                                                         const at::Tensor& torch_bf16,
                                                         const at::Tensor& exact) {
  const at::Tensor e = exact.detach().to(at::kCPU, at::kDouble);
  auto error = [&](const at::Tensor& x) {
    return (x.detach().to(at::kCPU, at::kDouble) - e).norm().item<double>() /
           std::max(e.norm().item<double>(), 1e-30);
  };
  const double mine = error(ours), theirs = error(torch_bf16);
  std::cout << what << ": " << cuda_backend_under_test() << " " << mine << ", torch bf16 " << theirs
            << "\n";
  if (mine <= 2 * theirs + 5e-3) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": norm-relative error vs float32 " << mine
                                       << " > 2 x torch bf16's " << theirs << " + 5e-3";
}

} // namespace kiln::test
