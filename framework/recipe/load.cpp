// load_recipe: files -> one merged TOML table (extends chain, then overrides) -> Recipe (schema
// reader) -> validate(). The table is merged before anything is read so that precedence is one
// rule (later layer wins, per key) and every node keeps the position of the file that wrote it.
#include "recipe/diagnostics.h"
#include "recipe/overrides.h"
#include "recipe/recipe.h"
#include "recipe/schema.h"

#include "kiln/sdk/error.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>

namespace kiln::recipe {
namespace {

namespace fs = std::filesystem;
using detail::Locator;
using detail::position;

std::optional<std::string> read_text(const fs::path& file) {
  std::error_code error;
  if (!fs::is_regular_file(file, error)) return std::nullopt;
  std::ifstream in(file, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return std::move(text).str();
}

toml::table parse_text(const std::string& text, const fs::path& file) {
  try {
    // Positions carry the path as given, which is what messages print.
    return toml::parse(text, file.string());
  } catch (const toml::parse_error& error) {
    user_error("{}: {}", position(error.source()).value_or(file.string()), error.description());
  }
}

/// CHILD's keys win; tables present in both merge key by key; anything else (arrays included) is
/// replaced whole. Nodes are moved, which keeps their source positions (copies drop them).
void deep_merge(toml::table& base, toml::table&& child) {
  for (auto&& [key, node] : child) {
    toml::node* existing = base.get(key.str());
    if (existing && existing->is_table() && node.is_table()) {
      deep_merge(*existing->as_table(), std::move(*node.as_table()));
      continue;
    }
    // Erase, then insert: the key (and its position) must be the child's too.
    base.erase(key.str());
    base.insert(key, std::move(node));
  }
}

struct Visit {
  fs::path shown;     // as the user or an `extends` wrote it, for messages
  fs::path canonical; // for cycle detection
};

fs::path canonical_of(const fs::path& file) {
  std::error_code error;
  fs::path out = fs::weakly_canonical(fs::absolute(file), error);
  return error ? fs::absolute(file).lexically_normal() : out;
}

/// FILE (already read into TEXT) merged over its `extends` chain. CHAIN holds the files being
/// loaded, outermost first, FILE last.
toml::table load_layer(const fs::path& file, const std::string& text, std::vector<Visit>& chain) {
  toml::table table = parse_text(text, file);
  const toml::node* extends = table.get(detail::kExtendsKey);
  if (!extends) return table;

  const std::string where = position(extends->source()).value_or(file.string());
  const auto* name = extends->as_string();
  if (!name) {
    user_error("{}: extends: expected a string (the base recipe's file), found {}", where,
               detail::type_name(*extends));
  }
  if (name->get().empty()) {
    user_error("{}: extends: expected the base recipe's file, found an empty string", where);
  }
  // Relative to the extending file, so a folder of recipes works from any current directory.
  const fs::path base = file.parent_path() / fs::path(name->get());
  const fs::path canonical = canonical_of(base);
  for (size_t i = 0; i < chain.size(); ++i) {
    if (chain[i].canonical != canonical) continue;
    std::string cycle;
    for (size_t j = i; j < chain.size(); ++j) cycle += chain[j].shown.string() + " -> ";
    user_error(
        "{}: extends: cycle {}{}; a recipe cannot extend itself, directly or through its bases",
        where, cycle, base.string());
  }
  const auto base_text = read_text(base);
  if (!base_text) {
    user_error("{}: extends: cannot open '{}' (resolved from '{}')", where, base.string(),
               name->get());
  }

  chain.push_back({base, canonical});
  toml::table merged = load_layer(base, *base_text, chain);
  chain.pop_back();
  table.erase(detail::kExtendsKey);
  deep_merge(merged, std::move(table));
  return merged;
}

/// A table's entries in the order they were written, so that the first error reported is the
/// first one in the file (toml::table iterates by key).
std::vector<std::pair<const toml::key*, const toml::node*>> in_file_order(
    const toml::table& table) {
  std::vector<std::pair<const toml::key*, const toml::node*>> out;
  for (const auto& [key, node] : table) out.emplace_back(&key, &node);
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    const auto& x = a.first->source().begin;
    const auto& y = b.first->source().begin;
    return std::tie(x.line, x.column) < std::tie(y.line, y.column);
  });
  return out;
}

/// Reads ROOT into RECIPE through the schema: unknown sections and keys and wrong types are
/// errors; ORIGINS learns where every key was set.
void read_recipe(const toml::table& root, const Locator& locator, Recipe& recipe,
                 KeyOrigins& origins) {
  for (const auto& [section_key, section_node] : in_file_order(root)) {
    const std::string section_name(section_key->str());
    const detail::Section* section = detail::find_section(section_name);
    if (!section) {
      user_error("{}: {}", locator.where(section_key->source(), section_name),
                 detail::unknown_top_level_message(section_name, section_node->is_table()));
    }
    const toml::table* table = section_node->as_table();
    if (!table) {
      user_error("{}: {}: expected a table ([{}]), found {}",
                 locator.where(section_node->source(), section_name), section_name, section_name,
                 detail::type_name(*section_node));
    }
    for (const auto& [key, node] : in_file_order(*table)) {
      const detail::Field* field = section->find(key->str());
      if (!field) {
        const std::string path = fmt::format("{}.{}", section_name, key->str());
        user_error("{}: {}", locator.where(key->source(), path),
                   detail::unknown_key_message(*section, key->str()));
      }
      const detail::ReadContext context{&locator, &origins, field};
      field->read(recipe, *node, context);
      origins.insert_or_assign(field->name(), context.where(*node, field->name()));
    }
  }
}

} // namespace

Recipe load_recipe(const std::filesystem::path& file, std::span<const std::string> overrides,
                   KeyOrigins* origins_out) {
  const auto text = read_text(file);
  if (!text) {
    std::error_code error;
    user_error("cannot open recipe '{}': {}; check the path (a relative one starts at '{}')",
               file.string(), fs::exists(file, error) ? "not a readable file" : "no such file",
               fs::current_path(error).string());
  }
  std::vector<Visit> chain{{file, canonical_of(file)}};
  toml::table root = load_layer(file, *text, chain);

  Locator locator(file.string());
  for (const std::string& override_text : overrides) {
    detail::apply_override(root, override_text, locator);
  }

  Recipe recipe;
  recipe.source = file;
  KeyOrigins origins;
  read_recipe(root, locator, recipe, origins);
  validate(recipe, origins);
  if (origins_out) *origins_out = std::move(origins);
  return recipe;
}

} // namespace kiln::recipe
