// Every check on values, in one place: the schema's allowed values, then each rule that involves
// one key's format or several keys at once. Types were checked when reading; this runs on any
// Recipe, loaded or built in code.
#include "recipe/diagnostics.h"
#include "recipe/recipe.h"
#include "recipe/schema.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/ops.h"

#include <fmt/format.h>

#include <algorithm>

namespace kiln::recipe {
namespace {

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

bool is_device(std::string_view device) {
  if (device == "cpu" || device == "cuda") return true;
  if (!device.starts_with("cuda:") || device.size() == 5) return false;
  return std::all_of(device.begin() + 5, device.end(), [](char c) { return c >= '0' && c <= '9'; });
}

} // namespace

void validate(Recipe& recipe, const KeyOrigins& origins) {
  // Where a message points: the key's position when load_recipe recorded it, else the file.
  const std::string file = recipe.source.empty() ? std::string("recipe") : recipe.source.string();
  auto where = [&](std::string_view key) -> std::string {
    const auto it = origins.find(key);
    return it != origins.end() ? it->second : file;
  };

  // Allowed values declared in the schema.
  for (const detail::Section& section : detail::schema()) {
    for (const detail::Field& field : section.fields) {
      if (field.choices.empty()) continue;
      const std::string value = field.get(recipe).get<std::string>();
      if (std::find(field.choices.begin(), field.choices.end(), value) != field.choices.end()) {
        continue;
      }
      user_error("{}: {}: expected one of {}; found '{}'{}", where(field.name()), field.name(),
                 detail::join(field.choices), value, detail::did_you_mean(value, field.choices));
    }
  }

  // [run]. The name becomes a directory name, so nothing that could escape or split a path.
  const RunSection& run = recipe.run;
  if (run.name.empty() || run.name == "." || run.name == ".." ||
      !std::all_of(run.name.begin(), run.name.end(), is_name_char)) {
    user_error(
        "{}: run.name: expected letters, digits, '.', '_' or '-' (it names the run directory); "
        "found '{}'",
        where("run.name"), run.name);
  }
  if (recipe.run.dir.empty()) recipe.run.dir = std::filesystem::path("runs") / run.name;

  // [model].
  const ModelSection& model = recipe.model;
  if (!is_device(model.device)) {
    user_error("{}: model.device: expected cpu, cuda or cuda:N (N a GPU index); found '{}'",
               where("model.device"), model.device);
  }
  const bool has_config = !model.config.is_null();
  const bool has_checkpoint = !model.checkpoint.empty();
  if (has_config && !model.config.is_object()) {
    user_error("{}: model.config: expected a table, found JSON {}", where("model.config"),
               model.config.type_name());
  }
  if (has_config && has_checkpoint) {
    user_error(
        "{}: model.checkpoint and [model.config] are mutually exclusive: a checkpoint brings its "
        "own config.json; remove one ([model.config] is at {})",
        where("model.checkpoint"), where("model.config"));
  }
  if (model.family.empty() && !has_checkpoint) {
    user_error(
        "{}: [model] needs a family or a checkpoint: add family = \"glm4_moe\" (or glm_moe_dsa, "
        "nemotron_v3) with a [model.config] table to build from scratch, or checkpoint = "
        "\"path/to/hf_model\" to start from weights",
        has_config ? where("model.config") : file);
  }
  if (!has_checkpoint && !has_config) {
    user_error(
        "{}: model.family '{}' has nothing to build from: add a [model.config] table (an HF "
        "config.json's keys) to build from scratch, or model.checkpoint",
        where("model.family"), model.family);
  }

  // [backend]. Backend names are the plugins' to define: the dispatcher checks them once plugins
  // are loaded. Op names are the SDK's, known now.
  if (recipe.backend.default_backend.empty()) {
    user_error("{}: backend.default: expected a backend name (auto, torch, cuda, ...), found ''",
               where("backend.default"));
  }
  const auto op_views = ops::op_names();
  const std::vector<std::string> op_names(op_views.begin(), op_views.end());
  for (const auto& [op, backend] : recipe.backend.ops) {
    const std::string key = fmt::format("backend.ops.{}", op);
    if (std::find(op_names.begin(), op_names.end(), op) == op_names.end()) {
      const std::string hint = detail::did_you_mean(op, op_names);
      user_error("{}: backend.ops: unknown op '{}'{}", where(key), op,
                 hint.empty() ? fmt::format("; ops: {}", detail::join(op_names)) : hint);
    }
    if (backend.empty()) {
      user_error("{}: {}: expected a backend name (torch, cuda, ...), found ''", where(key), key);
    }
  }

  // [plugins].
  for (size_t i = 0; i < recipe.plugins.dirs.size(); ++i) {
    if (recipe.plugins.dirs[i].empty()) {
      user_error("{}: plugins.dirs[{}]: expected a directory, found ''", where("plugins.dirs"), i);
    }
  }
}

} // namespace kiln::recipe
