// Runs the `kiln` executable as a user would: for the tests of its commands' output text and
// exit codes.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace kiln::test {

/// The built-in backends in the order kiln lists them: the cuda backend is built wherever a CUDA
/// toolkit is found, so messages that list backends depend on the build.
inline std::string builtin_backends() {
  const bool cuda = std::filesystem::exists(std::filesystem::path(KILN_BUILTIN_PLUGIN_DIR) /
                                            "libkiln-backend-cuda.so");
  return cuda ? "cuda, torch" : "torch";
}

struct CliResult {
  int code = -1;
  std::string out; ///< stdout and stderr together
};

/// A shell command line, stdout and stderr captured together.
inline CliResult run_shell(const std::string& command_line) {
  const std::string command = command_line + " 2>&1";
  CliResult r;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    r.out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

/// `kiln ARGS` through the shell, with `env` (e.g. "KILN_PLUGIN_PATH=x") in front.
inline CliResult run_kiln(const std::string& args, const std::string& env = "") {
  return run_shell(env + " " + KILN_CLI + " " + args);
}

} // namespace kiln::test
