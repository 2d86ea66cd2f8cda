// The `kiln` command line: `kiln <command> [args]`. Exit codes: 0 success, 2 user error (bad
// flag, recipe, file), 1 internal error or out of memory (one line each, no stack trace).
#include "common.h"

#include "core/failure.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"
#include "kiln/sdk/plugin.h"
#include "kiln/sdk/version.h"

#include <fmt/format.h>

#include <cstdio>
#include <iostream>
#include <string>

namespace kiln::cli {
namespace {

int cmd_help(const std::vector<std::string>& args);
void usage_help() {
  std::cout << "usage: kiln help [COMMAND]\n";
}

void print_version() {
  std::cout << version_line() << "\n";
}

void print_overview() {
  std::cout << "usage: kiln <command> [args]   (kiln help <command> for details)\n\ncommands:\n";
  for (const auto& c : commands()) std::cout << fmt::format("  {:<10} {}\n", c.name, c.summary);
  std::cout << "\noptions:\n  --version  print kiln's version and build fingerprint\n";
}

const Command* find_command(std::string_view name) {
  for (const auto& c : commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

std::string command_names() {
  std::string out;
  for (const auto& c : commands()) out += (out.empty() ? "" : ", ") + std::string(c.name);
  return out;
}

int cmd_help(const std::vector<std::string>& args) {
  if (args.empty()) {
    print_overview();
    return 0;
  }
  const Command* c = find_command(args[0]);
  KILN_CHECK_USER(c != nullptr, "kiln help: unknown command '{}'; commands: {}", args[0],
                  command_names());
  c->usage();
  return 0;
}

} // namespace

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"run", "train as a recipe says (no recipe: the embedded quickstart)", &usage_run, &cmd_run},
      {"plugins", "list plugin files, their fingerprints and load status", &usage_plugins,
       &cmd_plugins},
      {"recipe", "check a recipe or show it resolved (recipe check|show FILE)", &usage_recipe,
       &cmd_recipe},
      {"generate", "generate text from a checkpoint (cached decoding, sampling, streaming)",
       &usage_generate, &cmd_generate},
      {"logits", "logits, loss and gradient norms of a checkpoint on given ids", &usage_logits,
       &cmd_logits},
      {"bench", "A/B of backends: one op (bench op) or a recipe's training steps (bench model)",
       &usage_bench, &cmd_bench},
      {"plot", "draw a run's loss, learning rate and gradient norm curves to a PNG", &usage_plot,
       &cmd_plot},
      {"help", "show help for a command", &usage_help, &cmd_help},
  };
  return table;
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    print_overview();
    return 2;
  }
  if (args[0] == "--version" || args[0] == "version") {
    print_version();
    return 0;
  }
  if (args[0] == "--help" || args[0] == "-h") {
    print_overview();
    return 0;
  }
  const Command* command = find_command(args[0]);
  KILN_CHECK_USER(command != nullptr, "unknown command '{}'; commands: {} (see `kiln help`)",
                  args[0], command_names());
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  for (const auto& a : rest) {
    if (a == "--help" || a == "-h") {
      command->usage();
      return 0;
    }
  }
  return command->run(rest);
}

} // namespace kiln::cli

int main(int argc, char** argv) {
  try {
    return kiln::cli::main(argc, argv);
  } catch (const kiln::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.full().c_str());
    return e.kind() == kiln::ErrorKind::kUser ? 2 : 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    const std::string message = kiln::core::one_line_message(e);
    if (kiln::core::is_out_of_memory(e)) {
      std::fprintf(stderr, "error: out of memory: %s; %s\n", message.c_str(),
                   kiln::core::kOutOfMemoryHint);
    } else {
      std::fprintf(stderr, "internal error: %s\n", message.c_str());
    }
    return 1;
  }
}
