// Building blocks of recipe error messages, shared by the loader, the override parser and
// validate() so every message reads the same way: "WHERE: KEY: expected X, found Y (did you mean
// 'Z'?)", where WHERE is "file:line:col" or "override '--section.key'".
#pragma once

#include "core/text.h"

#include <toml++/toml.h>

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::recipe::detail {

// Suggestions and lists come from core/text.h, shared with the plugin host and registries.
using core::did_you_mean;
using core::edit_distance;
using core::join;
using core::nearest;

/// "a string", "an integer", ... for "expected ..., found ..." messages.
std::string type_name(const toml::node& node);

/// "path:line:col", or nullopt for a region without a file (values made from override text).
std::optional<std::string> position(const toml::source_region& region);

/// Says where a value came from. Nodes parsed from a file carry their position; nodes made from
/// override text carry none, so the override that set a key path is remembered here.
class Locator {
 public:
  /// FALLBACK names the recipe file, for nodes neither a file nor an override explains.
  explicit Locator(std::string fallback) : fallback_(std::move(fallback)) {}

  /// Records that override LABEL ("override '--model.dtype'") set KEY_PATH ("model.dtype").
  void add_override(std::string key_path, std::string label);

  /// Where the value or key at REGION, reached by KEY_PATH, was written.
  std::string where(const toml::source_region& region, std::string_view key_path) const;

 private:
  std::string fallback_;
  std::vector<std::pair<std::string, std::string>> overrides_; // in order; the latest wins
};

} // namespace kiln::recipe::detail
