// The build fingerprint of the translation unit that includes this header: the values a plugin
// stamps into its descriptor and the host compares with its own. Each may be predefined (on the
// compiler command line) to build a deliberately mismatched plugin for tests.
#pragma once

#include <torch/headeronly/version.h>

#define KILN_STRINGIFY_IMPL(x) #x
#define KILN_STRINGIFY(x) KILN_STRINGIFY_IMPL(x)

#ifndef KILN_BUILD_TORCH_VERSION
#define KILN_BUILD_TORCH_VERSION TORCH_VERSION
#endif

#ifndef KILN_BUILD_CXX11_ABI
#if defined(_GLIBCXX_USE_CXX11_ABI)
#define KILN_BUILD_CXX11_ABI _GLIBCXX_USE_CXX11_ABI
#else
#define KILN_BUILD_CXX11_ABI 0
#endif
#endif

// CUDA_VERSION comes from cuda.h; a plugin with CUDA code includes it (or nvcc defines it) before
// this header. Everything else reports 0: no CUDA code, runs with any host.
#ifndef KILN_BUILD_CUDA_VERSION
#if defined(CUDA_VERSION)
#define KILN_BUILD_CUDA_VERSION CUDA_VERSION
#else
#define KILN_BUILD_CUDA_VERSION 0
#endif
#endif

#ifndef KILN_BUILD_COMPILER
#if defined(__clang__)
#define KILN_BUILD_COMPILER                                                                        \
  "Clang " KILN_STRINGIFY(__clang_major__) "." KILN_STRINGIFY(__clang_minor__) "." KILN_STRINGIFY( \
      __clang_patchlevel__)
#elif defined(__GNUC__)
#define KILN_BUILD_COMPILER                                                              \
  "GNU " KILN_STRINGIFY(__GNUC__) "." KILN_STRINGIFY(__GNUC_MINOR__) "." KILN_STRINGIFY( \
      __GNUC_PATCHLEVEL__)
#else
#define KILN_BUILD_COMPILER "unknown"
#endif
#endif
