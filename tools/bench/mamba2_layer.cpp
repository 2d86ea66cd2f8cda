// Times one Mamba2 mixer's forward + backward (nn::Mamba2Mixer: in_proj, causal_conv1d, the
// mamba2_scan, gated_rms_norm, out_proj) on one GPU: median of N steps with CUDA events after two
// warm-up steps, the same protocol as tools/bench/hf_mamba2_layer.py, which times HF's
// NemotronHMamba2Mixer torch path. Default shape: Nemotron-3-Nano width (hidden 2688, 64 heads x
// 64, state 128, 8 groups, conv 4, chunk 128), seq 8192, batch 1, bf16.
//
//   kiln-bench-mamba2-layer [--seq 8192] [--batch 1] [--steps 10] [--dtype bfloat16]
//                           [--backend auto]
#include "core/plugin_host.h"
#include "kiln/nn/mamba2.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <iostream>

int main(int argc, char** argv) try {
  std::string dtype_text = "bfloat16", backend = "auto";
  int64_t seq = 8192, batch = 1, steps = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--seq")
      seq = std::stoll(value);
    else if (flag == "--batch")
      batch = std::stoll(value);
    else if (flag == "--steps")
      steps = std::stoll(value);
    else if (flag == "--dtype")
      dtype_text = value;
    else if (flag == "--backend")
      backend = value;
    else
      kiln::user_error("unknown flag {}", flag);
  }
  KILN_CHECK_USER(at::hasCUDA(), "kiln-bench-mamba2-layer needs a CUDA device");
  const auto dtype = kiln::parse_dtype(dtype_text);
  KILN_CHECK_USER(dtype.has_value(), "--dtype: unknown '{}'", dtype_text);
  kiln::core::PluginHost::global().load({});
  kiln::sdk::Dispatcher::global().configure({.default_backend = backend});

  const kiln::nn::Mamba2MixerConfig config{.hidden = 2688,
                                           .num_heads = 64,
                                           .head_dim = 64,
                                           .state_size = 128,
                                           .n_groups = 8,
                                           .conv_kernel = 4,
                                           .chunk_size = 128,
                                           .dt_min = 1e-3};
  const auto options = at::TensorOptions().dtype(*dtype).device(at::kCUDA);
  at::manual_seed(0);
  kiln::nn::Mamba2Mixer mixer(config, options);
  mixer.init(0.02, 1e-3, 0.1, 1e-4);
  const at::Tensor x = at::randn({batch, seq, config.hidden}, options).requires_grad_(true);
  const at::Tensor dy = at::randn({batch, seq, config.hidden}, options);
  kiln::nn::NamedTensors params;
  mixer.collect(params, "");

  auto step = [&] {
    const at::Tensor y = mixer(x, {});
    y.backward(dy);
    for (auto& [name, p] : params) p.mutable_grad() = at::Tensor();
    x.mutable_grad() = at::Tensor();
  };
  for (int i = 0; i < 2; ++i) step(); // warm-up
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  std::vector<double> ms;
  for (int64_t i = 0; i < steps; ++i) {
    at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    start.record();
    step();
    stop.record();
    stop.synchronize();
    ms.push_back(start.elapsed_time(stop));
  }
  std::sort(ms.begin(), ms.end());
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  const double peak_gib =
      static_cast<double>(
          stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
              .peak) /
      (1024.0 * 1024 * 1024);
  nlohmann::json kernels = nlohmann::json::object();
  for (const auto& r : kiln::sdk::Dispatcher::global().resolved()) kernels[r.op] = r.chosen;
  const nlohmann::json result = {{"impl", "kiln"},
                                 {"bench", "mamba2_layer"},
                                 {"backend", backend},
                                 {"kernels", kernels},
                                 {"seq", seq},
                                 {"batch", batch},
                                 {"dtype", dtype_text},
                                 {"median_ms", ms[ms.size() / 2]},
                                 {"min_ms", ms.front()},
                                 {"peak_gib", peak_gib},
                                 {"tokens_per_s", batch * seq / (ms[ms.size() / 2] / 1000.0)}};
  std::cout << result.dump() << "\n";
  return 0;
} catch (const kiln::Error& e) {
  std::cerr << "error: " << e.full() << "\n";
  return 2;
}
