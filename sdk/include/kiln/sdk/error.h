// kiln's one error type. Every failure a user can cause or see is a kiln::Error: a one-line
// message (what, where, expected vs found, what to do), a kind that decides the CLI's exit code,
// and a chain of context lines added as the error travels up ("while loading plugin X").
#pragma once

#include "kiln/sdk/export.h"

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace kiln {

/// Who is to blame: the user (bad recipe, bad file, bad flag: exit code 2) or kiln (a bug or an
/// environment failure: exit code 1).
enum class ErrorKind { kUser, kInternal };

/// The exception kiln throws. Copyable; safe to throw across the plugin boundary (plugins and the
/// host share libkiln-sdk.so, which owns this type's typeinfo).
class KILN_SDK_API Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message);
  ~Error() override; // out of line: the typeinfo lives in libkiln-sdk.so only

  ErrorKind kind() const noexcept { return kind_; }
  /// The innermost message, without context.
  const std::string& message() const noexcept { return message_; }
  /// Context lines, innermost first.
  const std::vector<std::string>& context() const noexcept { return context_; }

  /// Returns a copy with one more context line (outermost so far).
  Error with_context(std::string line) const;
  /// The message followed by "(while ...)" context, on one line.
  std::string full() const;

 private:
  ErrorKind kind_;
  std::string message_;
  std::vector<std::string> context_;
};

/// Throws a user error built with fmt::format.
template <class... Args>
[[noreturn]] void user_error(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(ErrorKind::kUser, fmt::format(format, std::forward<Args>(args)...));
}

/// Throws an internal error built with fmt::format.
template <class... Args>
[[noreturn]] void internal_error(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(ErrorKind::kInternal, fmt::format(format, std::forward<Args>(args)...));
}

/// Checks a condition that user input controls.
#define KILN_CHECK_USER(cond, ...)                \
  do {                                            \
    if (!(cond)) ::kiln::user_error(__VA_ARGS__); \
  } while (0)

} // namespace kiln
