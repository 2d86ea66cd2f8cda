// `kiln logits`: one forward (and optionally backward) pass of an HF checkpoint on given ids,
// written as safetensors — the parity probe against HF transformers.
#include "common.h"

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "kiln/nn/loss.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include <iostream>

namespace kiln::cli {

void usage_logits() {
  std::cout
      << "usage: kiln logits --model DIR --input IN.safetensors --output OUT.safetensors\n"
         "                   [--dtype float32|bfloat16] [--device cpu|cuda]\n"
         "                   [--backend NAME] [--grad-norms GRADS.safetensors]\n\n"
         "Runs the checkpoint in DIR (config.json + safetensors, HF layout) on IN's\n"
         "`input_ids` (int64 [B, S], or [T] with int32 `cu_seqlens` for packed documents)\n"
         "and writes `logits` (float32) and `loss` (float32 [1], HF's shifted causal-LM\n"
         "loss). --grad-norms back-propagates the loss and writes one float32 [1] tensor per\n"
         "checkpoint tensor that got a gradient: the L2 norm of its gradient.\n\n"
      << plugin_options();
}

int cmd_logits(const std::vector<std::string>& args) {
  po::options_description options("logits options");
  options.add_options()("model", po::value<std::string>()->required(),
                        "checkpoint folder (config.json + weights)")(
      "input", po::value<std::string>()->required(), "safetensors with input_ids [, cu_seqlens]")(
      "output", po::value<std::string>()->required(), "safetensors to write logits and loss to")(
      "dtype", po::value<std::string>()->default_value("float32"), "float32 or bfloat16")(
      "device", po::value<std::string>()->default_value("cpu"), "cpu, cuda or cuda:N")(
      "backend", po::value<std::string>()->default_value("auto"), "backend or policy for all ops")(
      "grad-norms", po::value<std::string>(), "also write gradient norms here");
  options.add(plugin_options());
  const auto vm = parse(args, options, {});

  const std::filesystem::path dir = vm["model"].as<std::string>();
  load_plugins(vm, {});
  sdk::Dispatcher::global().configure({.default_backend = vm["backend"].as<std::string>()});
  auto model = load_checkpoint(dir, vm["device"].as<std::string>(), vm["dtype"].as<std::string>());
  const c10::Device device = model->lm_head_weight().device();

  const io::SafetensorsFile input(vm["input"].as<std::string>());
  KILN_CHECK_USER(input.contains("input_ids"), "{}: no tensor 'input_ids'",
                  vm["input"].as<std::string>());
  sdk::ForwardInput forward;
  forward.input_ids = input.load("input_ids").to(at::kLong);
  if (input.contains("cu_seqlens")) forward.cu_seqlens = input.load("cu_seqlens").to(at::kInt);

  const bool want_grads = vm.count("grad-norms") > 0;
  c10::AutoGradMode grad_mode(want_grads);
  const auto out = model->forward(forward);
  const at::Tensor loss = nn::causal_lm_loss(
      out.logits, nn::causal_lm_labels(forward.input_ids.to(device), forward.cu_seqlens));

  std::vector<std::pair<std::string, at::Tensor>> results = {
      {"logits", out.logits.to(at::kFloat).to(at::kCPU).contiguous()},
      {"loss", loss.detach().reshape({1}).to(at::kCPU)}};
  io::write_safetensors(vm["output"].as<std::string>(), results, {});

  if (want_grads) {
    loss.backward();
    std::vector<std::pair<std::string, at::Tensor>> norms;
    for (const auto& [name, grad] : model->gradients()) {
      norms.emplace_back(name, grad.to(at::kFloat).norm().reshape({1}).to(at::kCPU));
    }
    io::write_safetensors(vm["grad-norms"].as<std::string>(), norms, {});
  }
  std::cout << fmt::format("{}: logits {} {}, loss {:.6f}\n", vm["output"].as<std::string>(),
                           shape_str(out.logits.sizes()), dtype_name(out.logits.scalar_type()),
                           loss.item<double>());
  return 0;
}

} // namespace kiln::cli
