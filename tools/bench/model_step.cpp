// Times one training step's forward + backward of a model built from an HF config (random
// weights) on one GPU: median of N steps with CUDA events, after warm-up. The loss is HF's
// (logits -> fp32 cross-entropy), so the work matches tools/bench/hf_model_step.py exactly.
//
//   kiln-bench-model-step CONFIG.json [--seq 4096] [--batch 1] [--steps 10] [--dtype bfloat16]
//                         [--backend auto]
#include "core/model_registry.h"
#include "core/plugin_host.h"
#include "kiln/nn/loss.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <iostream>

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: kiln-bench-model-step CONFIG.json [--seq N] [--batch B] [--steps N] "
                 "[--dtype bfloat16|float32] [--backend NAME]\n";
    return 2;
  }
  std::string config_path = argv[1], dtype_text = "bfloat16", backend = "auto";
  int64_t seq = 4096, batch = 1, steps = 10;
  for (int i = 2; i + 1 < argc; i += 2) {
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
  KILN_CHECK_USER(at::hasCUDA(), "kiln-bench-model-step needs a CUDA device");
  const auto dtype = kiln::parse_dtype(dtype_text);
  KILN_CHECK_USER(dtype.has_value(), "--dtype: unknown '{}'", dtype_text);

  kiln::core::PluginHost::global().load({});
  kiln::sdk::Dispatcher::global().configure({.default_backend = backend});
  std::ifstream in(config_path);
  KILN_CHECK_USER(in.good(), "{}: cannot open", config_path);
  const nlohmann::json config = nlohmann::json::parse(in);
  const auto& family = kiln::core::ModelRegistry::global().find_for_config(config, config_path);
  const c10::Device device(c10::DeviceType::CUDA, 0);
  auto model = family.family.create({.json = config}, {.device = device, .dtype = *dtype});

  const int64_t vocab = config.at("vocab_size").get<int64_t>();
  at::manual_seed(0);
  const at::Tensor ids =
      at::randint(vocab, {batch, seq}, at::TensorOptions().dtype(at::kLong).device(device));
  const at::Tensor labels = kiln::nn::causal_lm_labels(ids);

  auto step = [&] {
    const auto out = model->forward({.input_ids = ids});
    const at::Tensor loss = kiln::nn::causal_lm_loss(out.logits, labels);
    loss.backward();
    for (auto& [name, p] : model->named_parameters()) p.mutable_grad() = at::Tensor();
    return loss.item<double>();
  };
  for (int i = 0; i < 2; ++i) step(); // warm-up
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  std::vector<double> ms;
  double loss = 0;
  for (int64_t i = 0; i < steps; ++i) {
    at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    start.record();
    loss = step();
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
  const nlohmann::json result = {{"impl", "kiln"},
                                 {"backend", backend},
                                 {"config", config_path},
                                 {"seq", seq},
                                 {"batch", batch},
                                 {"dtype", dtype_text},
                                 {"median_ms", ms[ms.size() / 2]},
                                 {"min_ms", ms.front()},
                                 {"peak_gib", peak_gib},
                                 {"loss", loss},
                                 {"tokens_per_s", batch * seq / (ms[ms.size() / 2] / 1000.0)}};
  std::cout << result.dump() << "\n";
  return 0;
} catch (const kiln::Error& e) {
  std::cerr << "error: " << e.full() << "\n";
  return 2;
}
