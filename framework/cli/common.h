// What every `kiln` subcommand shares: the command table, plugin options, loading plugins.
#pragma once

#include "core/plugin_host.h"
#include "kiln/sdk/model.h"

#include <c10/core/Device.h>
#include <boost/program_options.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace kiln::cli {

namespace po = boost::program_options;

/// One subcommand. `run` gets the arguments after the command name and returns the exit code;
/// it throws kiln::Error for user errors.
struct Command {
  const char* name;
  const char* summary; ///< one line for `kiln help`
  void (*usage)();     ///< prints the full help of the command
  int (*run)(const std::vector<std::string>& args);
};

const std::vector<Command>& commands();

/// "kiln 0.1.0 (SDK ABI 1.0, LibTorch 2.11.0, cxx11_abi=1, CUDA 13.0, GNU 12.2.0)".
std::string version_line();

/// --plugin FILE (repeatable) and --verbose, shared by the commands that load plugins.
po::options_description plugin_options();

/// Applies --verbose and loads plugins: --plugin files, KILN_PLUGIN_PATH, `recipe_dirs`, the
/// default directory. Returns the records of this load.
std::vector<core::PluginRecord> load_plugins(const po::variables_map& vm,
                                             const std::vector<std::filesystem::path>& recipe_dirs,
                                             bool quiet_failures = false);

/// "cpu", "cuda" or "cuda:N" as --device gives it; a one-line kiln::Error (naming --device) for
/// bad syntax, another device type, no CUDA here, or an index past the machine's GPUs.
c10::Device parse_device(const std::string& text);

/// Builds the model of an HF checkpoint folder (config.json + safetensors) on `device` ("cpu",
/// "cuda", "cuda:N") in `dtype` ("float32" or "bfloat16") and loads its weights. Plugins must be
/// loaded. Bad values are kiln::Errors naming the --device / --dtype option.
std::shared_ptr<sdk::Model> load_checkpoint(const std::filesystem::path& dir,
                                            const std::string& device, const std::string& dtype);

/// Parses `args` with `options`; positional names given in order. Unknown options are errors.
po::variables_map parse(const std::vector<std::string>& args,
                        const po::options_description& options,
                        const po::positional_options_description& positional);

int cmd_plugins(const std::vector<std::string>& args);
void usage_plugins();
int cmd_recipe(const std::vector<std::string>& args);
void usage_recipe();
int cmd_logits(const std::vector<std::string>& args);
void usage_logits();
int cmd_run(const std::vector<std::string>& args);
void usage_run();
int cmd_generate(const std::vector<std::string>& args);
void usage_generate();
int cmd_plot(const std::vector<std::string>& args);
void usage_plot();
int cmd_bench(const std::vector<std::string>& args);
void usage_bench();

} // namespace kiln::cli
