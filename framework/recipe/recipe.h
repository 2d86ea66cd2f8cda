// A recipe is the TOML file that decides what a kiln run does. This header is its typed, validated
// form and the entry points that produce it: load (with `extends` and CLI overrides), re-validate,
// and print back as TOML. The keys, their types, defaults and docs are described once, in
// schema.cpp; this header only holds the structs the rest of kiln reads.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace kiln::recipe {

/// [run]: what the run is called, where it writes, how it is seeded.
struct RunSection {
  std::string name = "kiln";
  /// Default runs/<name> (filled in by validate()). A relative path is kept as written: it is
  /// taken from the current directory at run time.
  std::filesystem::path dir;
  int64_t seed = 0;

  bool operator==(const RunSection&) const = default;
};

/// [model]: which model family, from a checkpoint or from scratch, in which dtype and device.
struct ModelSection {
  std::string family;
  /// HF model directory (config.json + safetensors); kept as written.
  std::filesystem::path checkpoint;
  /// The [model.config] table as JSON (an HF config.json for a model built from scratch); null
  /// when the recipe has none.
  nlohmann::json config;
  std::string dtype = "float32"; ///< "float32" | "bfloat16"
  std::string device = "cpu";    ///< "cpu" | "cuda" | "cuda:N"

  bool operator==(const ModelSection&) const = default;
};

/// [backend]: which kernel backend runs each op.
struct BackendSection {
  std::string default_backend = "auto";   ///< TOML key `default`
  std::map<std::string, std::string> ops; ///< [backend.ops] op = "backend"
  bool strict = false;

  bool operator==(const BackendSection&) const = default;
};

/// [plugins]: extra plugin directories, searched after --plugin and KILN_PLUGIN_PATH.
struct PluginsSection {
  /// Absolute: relative entries are resolved against the directory of the recipe file that wrote
  /// them (a recipe and its plugins move together), override entries against the current directory.
  std::vector<std::filesystem::path> dirs;

  bool operator==(const PluginsSection&) const = default;
};

/// A loaded, validated recipe.
struct Recipe {
  RunSection run;
  ModelSection model;
  BackendSection backend;
  PluginsSection plugins;
  /// The file load_recipe was given, as given (empty for a recipe built in code).
  std::filesystem::path source;

  bool operator==(const Recipe&) const = default;
};

/// Where each key of a loaded recipe was set, for messages: "section.key" (and, for tables of
/// named entries, "backend.ops.<op>") -> "file:line:col" or "override '--section.key'".
using KeyOrigins = std::map<std::string, std::string, std::less<>>;

/// Loads FILE, applies its `extends` chain, then CLI overrides ("section.key=value", later ones
/// win), and validates everything. Throws kiln::Error (kUser) with file:line:col on any problem.
Recipe load_recipe(const std::filesystem::path& file, std::span<const std::string> overrides = {});

/// Parses CLI override tokens: "--section.key value", "--section.key=value",
/// "--set section.key=value", "section.key=value". Returns "section.key=value" strings, in order.
/// Checks syntax only (keys are checked against the schema by load_recipe). Throws kiln::Error
/// (kUser) on malformed tokens.
std::vector<std::string> parse_override_args(std::span<const std::string> args);

/// The resolved recipe as TOML: every section and key in schema order, defaults included, each
/// with its doc line as a comment. load_recipe on the output yields an equal Recipe (but source).
std::string to_toml(const Recipe& recipe);

/// Fills derived defaults (run.dir = runs/<name>), then runs every value and cross-field check.
/// Errors point at origins[key] when known, else at recipe.source. load_recipe calls it; call it
/// again after changing a Recipe in code. Throws kiln::Error (kUser).
void validate(Recipe& recipe, const KeyOrigins& origins = {});

} // namespace kiln::recipe
