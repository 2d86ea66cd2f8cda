#include "embedded.h"

#include "io/files.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/version.h"

#include <cstdlib>

// The files, placed in .rodata by the assembler (paths come from CMake). Each is followed by its
// end symbol.
#define KILN_EMBED(symbol, file)         \
  __asm__(                               \
      ".section .rodata\n"               \
      ".balign 16\n"                     \
      ".local " #symbol "\n" #symbol     \
      ":\n"                              \
      ".incbin \"" file                  \
      "\"\n"                             \
      ".local " #symbol "_end\n" #symbol \
      "_end:\n"                          \
      ".previous\n");                    \
  extern "C" const char symbol[];        \
  extern "C" const char symbol##_end[];

KILN_EMBED(kiln_embedded_quickstart, KILN_EMBED_QUICKSTART)
KILN_EMBED(kiln_embedded_train, KILN_EMBED_TRAIN)
KILN_EMBED(kiln_embedded_validation, KILN_EMBED_VALIDATION)

namespace kiln::cli {
namespace {

std::string_view span_of(const char* begin, const char* end) {
  return {begin, static_cast<size_t>(end - begin)};
}

} // namespace

std::vector<std::pair<std::string_view, std::string_view>> embedded_files() {
  return {
      {"quickstart.toml", span_of(kiln_embedded_quickstart, kiln_embedded_quickstart_end)},
      {"data/shakespeare/train.jsonl", span_of(kiln_embedded_train, kiln_embedded_train_end)},
      {"data/shakespeare/validation.jsonl",
       span_of(kiln_embedded_validation, kiln_embedded_validation_end)},
  };
}

std::filesystem::path write_embedded_quickstart() {
  std::filesystem::path base;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    base = xdg;
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    base = std::filesystem::path(home) / ".cache";
  } else {
    user_error(
        "kiln run without a recipe writes the embedded quickstart under $HOME/.cache, but "
        "neither HOME nor XDG_CACHE_HOME is set; give a recipe file instead");
  }
  const auto folder = base / "kiln" / ("quickstart-" + sdk::version());
  for (const auto& [name, content] : embedded_files()) {
    const auto file = folder / name;
    if (io::read_file(file) == std::string(content)) continue;
    std::filesystem::create_directories(file.parent_path());
    io::replace_file(file, content);
  }
  return folder / "quickstart.toml";
}

} // namespace kiln::cli
