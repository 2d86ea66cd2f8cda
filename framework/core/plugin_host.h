// The plugin host: finds libkiln-*.so files, checks each descriptor before running any of its
// code, runs its registration into the registries, and remembers what happened to every
// candidate (for `kiln plugins` and for error messages).
#pragma once

#include "kiln/sdk/version.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kiln::core {

/// Where to look, in the fixed discovery order: explicit files (`--plugin FILE`), then the
/// directories of KILN_PLUGIN_PATH, then the recipe's [plugins] dirs, then
/// `<exe>/../lib/kiln/plugins`. The current directory is never searched.
struct PluginSearch {
  std::vector<std::filesystem::path> files;       ///< --plugin FILE (must exist)
  std::vector<std::filesystem::path> recipe_dirs; ///< [plugins] dirs, already absolute
  bool use_env = true;                            ///< read KILN_PLUGIN_PATH
  bool use_default_dir = true;                    ///< <exe>/../lib/kiln/plugins
};

enum class PluginStatus {
  kLoaded,  ///< checked, registered, in use
  kSkipped, ///< not used, harmlessly (same file or same plugin name seen earlier)
  kFailed,  ///< refused: the reason says why and what to do
};

/// What happened to one candidate file.
struct PluginRecord {
  std::filesystem::path path;
  std::string origin; ///< "--plugin", "KILN_PLUGIN_PATH", "recipe", "default"
  PluginStatus status = PluginStatus::kFailed;
  std::string reason; ///< one line; empty when loaded
  // From the descriptor, when it could be read:
  std::string name;
  std::string kind; ///< "model", "backend", "policy"
  std::string version;
  std::string abi; ///< "1.0"
  std::string torch_version;
  int cxx11_abi = -1;
  int cuda_version = -1;
  std::string compiler;
  // What it registered:
  std::vector<std::string> provides; ///< e.g. "kernel rms_norm/torch/cpu", "family glm4_moe"
};

/// Loads plugins. Registries are process-wide and plugins are never unloaded, so one load per
/// file per process: asking again for a file already loaded records it as skipped.
class PluginHost {
 public:
  static PluginHost& global();

  /// Discovers and loads candidates in order; never throws for a bad plugin (it is recorded as
  /// failed and logged as one warning line). Returns the records of this call, in order.
  /// Throws kiln::Error only for a `--plugin FILE` that does not exist.
  std::vector<PluginRecord> load(const PluginSearch& search);

  /// Every record so far, in load order.
  const std::vector<PluginRecord>& records() const { return records_; }

  /// Forgets the records (tests only): libraries stay loaded, and loading a file again runs its
  /// registration again, into registries the test has reset.
  void reset_for_testing() { records_.clear(); }

  /// Loads one file (used by load()) and records the outcome; exposed for tests.
  PluginRecord load_file(const std::filesystem::path& path, const std::string& origin);

 private:
  PluginRecord check_and_register(const std::filesystem::path& path, const std::string& origin);

  std::vector<PluginRecord> records_;
};

/// "file (name)": how messages name a plugin.
std::string describe(const PluginRecord& record);

/// The directory `<exe>/../lib/kiln/plugins` of the running executable.
std::filesystem::path default_plugin_dir();

} // namespace kiln::core
