// Logging shared by the host and plugins. The host installs the sink and the level (`--verbose`);
// plugins just call kiln::log_info(...) and friends.
#pragma once

#include "kiln/sdk/export.h"

#include <fmt/format.h>

#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace kiln {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

/// Receives every message at or above the current level. Default: "level: message" on stderr.
using LogSink = std::function<void(LogLevel, std::string_view)>;

KILN_SDK_API void set_log_level(LogLevel level);
KILN_SDK_API LogLevel log_level();
/// Replaces the sink (nullptr restores the default). Not thread-safe against concurrent logging:
/// call it at start-up.
KILN_SDK_API void set_log_sink(LogSink sink);
KILN_SDK_API void log_message(LogLevel level, std::string_view message);

template <class... Args>
void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  if (level < log_level()) return;
  log_message(level, fmt::format(format, std::forward<Args>(args)...));
}
template <class... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... a) {
  log(LogLevel::kDebug, f, std::forward<Args>(a)...);
}
template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... a) {
  log(LogLevel::kInfo, f, std::forward<Args>(a)...);
}
template <class... Args>
void log_warn(fmt::format_string<Args...> f, Args&&... a) {
  log(LogLevel::kWarn, f, std::forward<Args>(a)...);
}

} // namespace kiln
