// `kiln plugins`: every candidate plugin file, what it is, and whether it loaded (and why not).
#include "common.h"

#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"
#include "kiln/sdk/plugin.h"
#include "kiln/sdk/version.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <iostream>

namespace kiln::cli {
namespace {

const char* status_word(core::PluginStatus status) {
  switch (status) {
    case core::PluginStatus::kLoaded:
      return "loaded";
    case core::PluginStatus::kSkipped:
      return "skipped";
    case core::PluginStatus::kFailed:
      return "FAILED";
  }
  return "?";
}

std::string cuda_text(int version) {
  return version < 0 ? "?" : cuda_version_name(version);
}

} // namespace

void usage_plugins() {
  std::cout << "usage: kiln plugins [--plugin FILE]... [--verbose]\n\n"
               "Lists every candidate plugin (--plugin files, KILN_PLUGIN_PATH, <exe>/../lib/kiln/"
               "plugins)\nwith its name, kind, version, build fingerprint, status and reason.\n"
               "--verbose also lists what each plugin registered.\n\n"
            << plugin_options();
}

int cmd_plugins(const std::vector<std::string>& args) {
  po::options_description options = plugin_options();
  const auto vm = parse(args, options, {});
  const bool verbose = vm["verbose"].as<bool>();
  const auto records = load_plugins(vm, {}, /*quiet_failures=*/true);

  std::cout << version_line() << "\n";
  if (records.empty()) {
    std::cout << fmt::format("no plugin files found (searched --plugin, KILN_PLUGIN_PATH, {})\n",
                             core::default_plugin_dir().string());
    return 0;
  }
  size_t loaded = 0;
  for (const auto& r : records) {
    if (r.status == core::PluginStatus::kLoaded) ++loaded;
    if (r.kind.empty()) {
      std::cout << fmt::format("{:<8} {}  [{}]\n", status_word(r.status), r.path.string(),
                               r.origin);
    } else {
      std::cout << fmt::format("{:<8} {:<7} {:<12} {:<8} {}  [{}]\n", status_word(r.status), r.kind,
                               r.name, r.version, r.path.string(), r.origin);
      std::cout << fmt::format("         ABI {}, LibTorch {}, cxx11_abi={}, CUDA {}, {}\n", r.abi,
                               r.torch_version, r.cxx11_abi, cuda_text(r.cuda_version), r.compiler);
    }
    if (!r.reason.empty()) std::cout << "         " << r.reason << "\n";
    if (r.status == core::PluginStatus::kLoaded) {
      if (verbose) {
        for (const auto& p : r.provides) std::cout << "         provides " << p << "\n";
      } else {
        std::cout << fmt::format("         provides {} item(s); --verbose lists them\n",
                                 r.provides.size());
      }
    }
  }
  std::cout << fmt::format("{} of {} plugin file(s) loaded; backends: {}; policies: {}\n", loaded,
                           records.size(), fmt::join(sdk::Dispatcher::global().backends(), ", "),
                           fmt::join(sdk::Dispatcher::global().policies(), ", "));
  return 0;
}

} // namespace kiln::cli
