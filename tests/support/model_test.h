// What the model-family suites share: the device a suite runs on (the same source builds a CPU
// and a GPU executable), the fixture cases of a family, plugin loading, HF's loss, error measures.
#pragma once

#include "core/plugin_host.h"
#include "kiln/nn/loss.h"
#include "kiln/sdk/dispatch.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#ifndef KILN_TEST_DEVICE
#define KILN_TEST_DEVICE "cpu"
#endif

namespace kiln::test {

/// The device of this executable's suite: "cpu", or "cuda" for the `gpu`-labelled build.
inline const c10::Device kTestDevice(KILN_TEST_DEVICE);

/// Skips a test of the GPU build on a machine without a GPU (CI's); the CPU build runs it.
#define KILN_SKIP_WITHOUT_DEVICE()                                                    \
  do {                                                                                \
    if (::kiln::test::kTestDevice.is_cuda() && !at::hasCUDA())                        \
      GTEST_SKIP() << "no GPU on this machine (the CPU build of this suite runs it)"; \
  } while (0)

/// The fixture cases of a family: the folders under `family_dir` holding a config.json, sorted.
inline std::vector<std::string> fixture_cases(const std::filesystem::path& family_dir) {
  std::vector<std::string> out;
  if (std::filesystem::is_directory(family_dir)) {
    for (const auto& entry : std::filesystem::directory_iterator(family_dir)) {
      if (std::filesystem::exists(entry.path() / "config.json")) {
        out.push_back(entry.path().filename());
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// Loads the built-in plugins (not KILN_PLUGIN_PATH) once per process and pins every op to the
/// torch backend, strictly. On the CPU, one intra-op thread: the test models are tiny, and on a
/// busy machine more threads cost more than they save.
inline void load_plugins_once() {
  static const bool loaded = [] {
    if (!kTestDevice.is_cuda()) at::set_num_threads(1);
    core::PluginHost::global().load({.use_env = false});
    sdk::Dispatcher::global().configure({.default_backend = "torch", .strict = true});
    return true;
  }();
  (void)loaded;
}

/// max |a - b| / max |b|, in fp64 on the CPU.
inline double relative_error(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor bd = b.detach().cpu().to(at::kDouble);
  return (a.detach().cpu().to(at::kDouble) - bd).abs().max().item<double>() /
         bd.abs().max().item<double>();
}

/// HF's causal-LM loss of logits [B, S, V] on the ids they came from.
inline at::Tensor hf_loss(const at::Tensor& logits, const at::Tensor& ids) {
  return nn::causal_lm_loss(logits, nn::causal_lm_labels(ids.to(logits.device())));
}

} // namespace kiln::test
