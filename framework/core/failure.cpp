#include "core/failure.h"

#include <c10/util/Exception.h>

#include <string_view>

namespace kiln::core {
namespace {

std::string fold_blanks(std::string_view text) {
  std::string out;
  bool blank = false;
  for (const char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      blank = !out.empty();
      continue;
    }
    if (blank) out += ' ';
    blank = false;
    out += c;
  }
  return out;
}

} // namespace

std::string one_line_message(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string line =
      fold_blanks(c10_error != nullptr ? c10_error->what_without_backtrace() : e.what());
  if (line.ends_with('.')) line.pop_back(); // the caller goes on with "; ..."
  return line;
}

bool is_out_of_memory(const std::exception& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return true;
  return one_line_message(e).find("can't allocate memory") != std::string::npos;
}

} // namespace kiln::core
