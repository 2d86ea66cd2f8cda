#include "common.h"

#include "core/model_registry.h"
#include "io/checkpoint.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"
#include "kiln/sdk/plugin.h"
#include "kiln/sdk/version.h"

#include "kiln/sdk/log.h"

#include <ATen/Context.h>
#include <fmt/format.h>

namespace kiln::cli {

std::string version_line() {
  const auto host = sdk::host_fingerprint();
  return fmt::format("kiln {} (SDK ABI {}.{}, LibTorch {}, cxx11_abi={}, CUDA {}, {})",
                     sdk::version(), KILN_SDK_ABI_MAJOR, KILN_SDK_ABI_MINOR, host.torch_version,
                     host.cxx11_abi, cuda_version_name(host.cuda_version), host.compiler);
}

po::options_description plugin_options() {
  po::options_description options("plugin options");
  options.add_options()("plugin", po::value<std::vector<std::string>>()->composing(),
                        "load this plugin file first (repeatable)")("verbose,v", po::bool_switch(),
                                                                    "log debug messages");
  return options;
}

std::vector<core::PluginRecord> load_plugins(const po::variables_map& vm,
                                             const std::vector<std::filesystem::path>& recipe_dirs,
                                             bool quiet_failures) {
  if (vm.count("verbose") && vm["verbose"].as<bool>()) set_log_level(LogLevel::kDebug);
  core::PluginSearch search;
  if (vm.count("plugin")) {
    for (const auto& file : vm["plugin"].as<std::vector<std::string>>())
      search.files.push_back(file);
  }
  search.recipe_dirs = recipe_dirs;
  const LogLevel level = log_level();
  if (quiet_failures) set_log_level(std::max(level, LogLevel::kError));
  auto records = core::PluginHost::global().load(search);
  set_log_level(level);
  return records;
}

po::variables_map parse(const std::vector<std::string>& args,
                        const po::options_description& options,
                        const po::positional_options_description& positional) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    user_error("{}; see `kiln help`", e.what());
  }
  return vm;
}

c10::Device parse_device(const std::string& text) {
  c10::Device device(at::kCPU);
  try {
    device = c10::Device(text);
  } catch (const std::exception&) {
    user_error("--device: expected cpu, cuda or cuda:N, found '{}'", text);
  }
  KILN_CHECK_USER(device.is_cpu() || device.is_cuda(),
                  "--device: expected cpu, cuda or cuda:N, found '{}'", text);
  KILN_CHECK_USER(!device.is_cuda() || at::hasCUDA(),
                  "--device {}: no CUDA device is available here; use --device cpu", device.str());
  const auto gpus = static_cast<int64_t>(at::getNumGPUs());
  KILN_CHECK_USER(!device.is_cuda() || !device.has_index() || device.index() < gpus,
                  "--device {}: this machine has {} CUDA device(s), cuda:0 to cuda:{}",
                  device.str(), gpus, gpus - 1);
  return device;
}

std::shared_ptr<sdk::Model> load_checkpoint(const std::filesystem::path& dir,
                                            const std::string& device_text,
                                            const std::string& dtype_text) {
  const auto dtype = parse_dtype(dtype_text);
  KILN_CHECK_USER(dtype && (*dtype == at::kFloat || *dtype == at::kBFloat16),
                  "--dtype: expected float32 or bfloat16, found '{}'", dtype_text);
  const c10::Device device = parse_device(device_text);
  const nlohmann::json config = io::read_config(dir);
  const auto& family =
      core::ModelRegistry::global().find_for_config(config, (dir / "config.json").string());
  auto model = family.family.create({.json = config, .source = dir / "config.json"},
                                    {.device = device, .dtype = *dtype});
  model->load_weights(io::CheckpointReader(dir));
  return model;
}

} // namespace kiln::cli
