// Times the DeepSeek Sparse Attention ops of GLM-5 on one GPU through the dispatcher (default
// backend: torch, the reference): indexer_topk, sparse_mla forward and sparse_mla backward, at
// GLM-5 shapes (H = 64 heads, kv_lora 512 + rope 64, v_head 256; indexer H_I = 32, D_I = 128;
// topk 2048), bf16, one packed document of T tokens. Median of N runs after one warm-up, CUDA
// events; peak memory from the CUDA caching allocator, in total and above what was allocated
// before the op (its inputs). One JSON line per (op, T).
//
//   kiln-bench-dsa-ops [--seq 4096,16384,32768] [--steps 3] [--backend torch]
#include "core/plugin_host.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/core/GradMode.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/autograd/autograd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iostream>
#include <sstream>
#include <vector>

namespace {

constexpr int64_t kHeads = 64, kLatent = 512, kRope = 64, kValue = 256;
constexpr int64_t kIndexHeads = 32, kIndexDim = 128, kTopk = 2048;

double gib(int64_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0);
}

int64_t allocated_now() {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .current;
}

int64_t allocated_peak() {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .peak;
}

// Runs `setup` (untimed) then `op` `steps` times after one warm-up; prints one JSON line.
void measure(const std::string& name, int64_t tokens, int64_t steps,
             const std::function<void()>& setup, const std::function<void()>& op) {
  setup();
  op(); // warm-up
  std::vector<double> ms;
  int64_t peak = 0, base = 0;
  for (int64_t i = 0; i < steps; ++i) {
    setup();
    c10::cuda::device_synchronize();
    base = allocated_now();
    c10::cuda::CUDACachingAllocator::resetPeakStats(0);
    at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    start.record();
    op();
    stop.record();
    stop.synchronize();
    ms.push_back(start.elapsed_time(stop));
    peak = std::max(peak, allocated_peak());
  }
  std::sort(ms.begin(), ms.end());
  const nlohmann::json line = {{"bench", "dsa_ops"},
                               {"op", name},
                               {"tokens", tokens},
                               {"dtype", "bfloat16"},
                               {"median_ms", ms[ms.size() / 2]},
                               {"min_ms", ms.front()},
                               {"peak_gib", gib(peak)},
                               {"peak_above_inputs_gib", gib(peak - base)}};
  std::cout << line.dump() << std::endl;
}

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  return out;
}

} // namespace

int main(int argc, char** argv) try {
  std::vector<int64_t> seqs = {4096, 16384, 32768};
  int64_t steps = 3;
  std::string backend = "torch";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--seq")
      seqs = parse_list(value);
    else if (flag == "--steps")
      steps = std::stoll(value);
    else if (flag == "--backend")
      backend = value;
    else
      kiln::user_error(
          "unknown flag {}; usage: kiln-bench-dsa-ops [--seq 4096,16384,32768] "
          "[--steps 3] [--backend torch]",
          flag);
  }
  KILN_CHECK_USER(at::hasCUDA(), "kiln-bench-dsa-ops needs a CUDA device");
  KILN_CHECK_USER(steps >= 1, "--steps must be >= 1, found {}", steps);
  kiln::core::PluginHost::global().load({});
  kiln::sdk::Dispatcher::global().configure({.default_backend = backend, .strict = true});

  const c10::Device device(c10::DeviceType::CUDA, 0);
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(device);
  for (const int64_t t : seqs) {
    at::manual_seed(t);
    const at::Tensor cu = at::tensor({0, static_cast<int>(t)}, at::kInt).to(device);
    at::Tensor index_q = at::randn({t, kIndexHeads, kIndexDim}, bf16);
    at::Tensor index_k = at::randn({t, kIndexDim}, bf16);
    at::Tensor weights = at::rand({t, kIndexHeads}, bf16.dtype(at::kFloat)) *
                         (1.0 / std::sqrt(static_cast<double>(kIndexHeads * kIndexDim)));
    at::Tensor topk;
    measure(
        "indexer_topk", t, steps, [] {},
        [&] { topk = kiln::ops::indexer_topk(index_q, index_k, weights, cu, kTopk); });
    index_q.reset();
    index_k.reset();
    weights.reset();

    at::Tensor q = at::randn({t, kHeads, kLatent + kRope}, bf16).requires_grad_(true);
    at::Tensor kv = at::randn({t, 1, kLatent + kRope}, bf16).requires_grad_(true);
    at::Tensor w_vc = (at::randn({kHeads, kValue, kLatent}, bf16) * 0.05).requires_grad_(true);
    at::Tensor out;
    {
      const c10::NoGradGuard no_grad;
      measure(
          "sparse_mla_forward", t, steps, [] {},
          [&] { out = kiln::ops::sparse_mla(q, kv, topk, w_vc, 1.0 / 16.0); });
    }
    at::Tensor grad_out = at::randn({t, kHeads, kValue}, bf16);
    std::vector<at::Tensor> grads;
    measure(
        "sparse_mla_backward", t, steps,
        [&] {
          grads.clear();
          out = kiln::ops::sparse_mla(q, kv, topk, w_vc, 1.0 / 16.0);
        },
        [&] {
          grads = torch::autograd::grad({out}, {q, kv, w_vc}, {grad_out});
        });
    grads.clear();
    out.reset();
  }
  return 0;
} catch (const kiln::Error& e) {
  std::cerr << "error: " << e.full() << "\n";
  return 2;
}
