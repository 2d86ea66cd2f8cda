#include "recipe/diagnostics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <numeric>

namespace kiln::recipe::detail {

std::string type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

std::optional<std::string> position(const toml::source_region& region) {
  if (!region.path || region.path->empty() || region.begin.line == 0) return std::nullopt;
  return fmt::format("{}:{}:{}", *region.path, region.begin.line, region.begin.column);
}

void Locator::add_override(std::string key_path, std::string label) {
  overrides_.emplace_back(std::move(key_path), std::move(label));
}

std::string Locator::where(const toml::source_region& region, std::string_view key_path) const {
  if (auto at = position(region)) return *at;
  // A node without a position was made by an override: the one that set this key path, or one
  // below it (a table that `--model.config.x=1` created), or one above it (an element of the
  // array that `--plugins.dirs=a,b` set).
  auto related = [](std::string_view a, std::string_view b) {
    if (a.size() > b.size()) std::swap(a, b);
    return b.starts_with(a) && (b.size() == a.size() || b[a.size()] == '.' || b[a.size()] == '[');
  };
  for (auto it = overrides_.rbegin(); it != overrides_.rend(); ++it) {
    if (related(it->first, key_path)) return it->second;
  }
  return fallback_;
}

} // namespace kiln::recipe::detail
