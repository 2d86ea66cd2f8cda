// The recipe schema: every section and key, described once (name, type, doc, allowed values, the
// Recipe member it fills; the default is that member's initializer). Parsing, type checks,
// override typing, validate()'s per-key checks and to_toml are all driven by this table, so a new
// section ([data], [train], ...) is a struct in recipe.h plus one entry in schema.cpp.
#pragma once

#include "recipe/diagnostics.h"
#include "recipe/recipe.h"

#include <toml++/toml.h>

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::recipe::detail {

/// What a key holds; decides how its TOML value is read and how override text is typed.
enum class ValueType {
  kString,
  kInteger,
  kFloat, // an integer is accepted too: `lr = 1` means 1.0
  kBool,
  kPath,
  kStringList,
  kPathList,
  kFloatList,
  kTable,    // free-form table, kept as JSON ([model.config])
  kStringMap // table of name = "string" ([backend.ops])
};

/// How a relative path is resolved when read.
enum class PathBase {
  kAsWritten, // kept as written; the current directory at run time applies
  kFileDir,   // against the directory of the file that wrote it (made absolute)
};

struct Field;

/// What a Field's reader needs besides the node: where things were written, and where to record
/// the origins that validate() reports.
struct ReadContext {
  const Locator* locator;
  KeyOrigins* origins;
  const Field* field;

  std::string where(const toml::node& node, std::string_view key_path) const {
    return locator->where(node.source(), key_path);
  }
  /// Throws "WHERE: KEY_PATH: expected EXPECTED, found <node's type>".
  [[noreturn]] void type_error(const toml::node& node, std::string_view key_path,
                               std::string_view expected) const;
  /// Applies the field's PathBase to TEXT, written at NODE.
  std::filesystem::path resolve_path(const std::string& text, const toml::node& node) const;
};

struct Field {
  std::string_view section; // "model"
  std::string_view key;     // "dtype"
  std::string_view doc;     // one line, printed by to_toml
  ValueType type = ValueType::kString;
  std::vector<std::string> choices; // allowed values of a string key; empty: any
  PathBase path_base = PathBase::kAsWritten;
  /// Type-checks NODE and stores it in the recipe; throws kiln::Error (kUser).
  std::function<void(Recipe&, const toml::node&, const ReadContext&)> read;
  /// The recipe's value as JSON (paths as strings, tables as objects): what to_toml prints and
  /// validate() checks against `choices`.
  std::function<nlohmann::json(const Recipe&)> get;

  std::string name() const; // "model.dtype"
  /// "a string", "an array of strings", ... for messages.
  std::string_view expected() const;
};

struct Section {
  std::string_view name;
  std::string_view doc;
  std::vector<Field> fields;

  const Field* find(std::string_view key) const;
};

/// Every section, in the order to_toml prints them.
const std::vector<Section>& schema();
const Section* find_section(std::string_view name);
/// The one key allowed outside a section.
inline constexpr std::string_view kExtendsKey = "extends";

/// "unknown key 'run.nmae' (did you mean 'run.name'?)" / "...; valid keys in [run]: name, ...".
std::string unknown_key_message(const Section& section, std::string_view key);
/// For a top-level entry that is not a section (KEY is a table) or a key outside any section.
std::string unknown_top_level_message(std::string_view key, bool is_table);
/// For a dotted override key whose section or key does not exist ("trian.steps").
std::string unknown_dotted_key_message(std::string_view dotted);

} // namespace kiln::recipe::detail
