// to_toml prints through its own small emitter rather than toml++'s formatter: it writes each
// key's doc line as a comment, prints floats in their shortest exact form (1e-05, not
// 1.0000000000000001e-05), and keeps table headers full (`[model.config.rope_scaling]`).
#include "recipe/recipe.h"
#include "recipe/schema.h"

#include "kiln/sdk/error.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

namespace kiln::recipe {
namespace {

using nlohmann::json;

std::string toml_string(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += fmt::format("\\u{:04X}", static_cast<unsigned>(c));
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string toml_key(std::string_view key) {
  const bool bare = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
  return bare ? std::string(key) : toml_string(key);
}

std::string toml_float(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  std::string out = fmt::format("{}", value); // shortest text that reads back as the same double
  if (out.find_first_of(".eE") == std::string::npos) out += ".0"; // else TOML reads an integer
  return out;
}

std::string toml_value(const json& value, const std::string& path) {
  switch (value.type()) {
    case json::value_t::boolean:
      return value.get<bool>() ? "true" : "false";
    case json::value_t::number_integer:
      return fmt::format("{}", value.get<int64_t>());
    case json::value_t::number_unsigned: {
      const auto number = value.get<uint64_t>();
      if (number > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        user_error("to_toml: {}: {} does not fit a TOML integer (64-bit signed)", path, number);
      }
      return fmt::format("{}", number);
    }
    case json::value_t::number_float:
      return toml_float(value.get<double>());
    case json::value_t::string:
      return toml_string(value.get<std::string>());
    case json::value_t::array: {
      std::string out = "[";
      for (size_t i = 0; i < value.size(); ++i) {
        if (i) out += ", ";
        out += toml_value(value[i], fmt::format("{}[{}]", path, i));
      }
      return out + "]";
    }
    case json::value_t::object: {
      std::string out = "{";
      bool first = true;
      for (const auto& [key, item] : value.items()) {
        if (item.is_null()) continue; // TOML has no null; an absent key reads the same to HF
        out += fmt::format("{} {} = {}", first ? "" : ",", toml_key(key),
                           toml_value(item, fmt::format("{}.{}", path, key)));
        first = false;
      }
      return out + (first ? "}" : " }");
    }
    case json::value_t::null:
    case json::value_t::binary:
    case json::value_t::discarded:
      break;
  }
  user_error("to_toml: {}: a JSON {} has no TOML form", path, value.type_name());
}

/// OBJECT as `[HEADER]` with its plain keys, then each sub-table under its full header.
void emit_table(std::string& out, const std::string& header, const json& object) {
  out += fmt::format("[{}]\n", header);
  for (const auto& [key, item] : object.items()) {
    if (item.is_null() || item.is_object()) continue;
    out += fmt::format("{} = {}\n", toml_key(key), toml_value(item, header + "." + key));
  }
  for (const auto& [key, item] : object.items()) {
    if (!item.is_object()) continue;
    out += "\n";
    emit_table(out, header + "." + toml_key(key), item);
  }
}

} // namespace

std::string to_toml(const Recipe& recipe) {
  std::string out = "# kiln recipe";
  if (!recipe.source.empty()) out += fmt::format(", resolved from {}", recipe.source.string());
  out += ": every key, defaults included.\n";
  for (const detail::Section& section : detail::schema()) {
    out += fmt::format("\n# {}\n[{}]\n", section.doc, section.name);
    std::vector<std::pair<const detail::Field*, json>> tables;
    for (const detail::Field& field : section.fields) {
      json value = field.get(recipe);
      if (field.type == detail::ValueType::kTable || field.type == detail::ValueType::kStringMap) {
        tables.emplace_back(&field, std::move(value));
        continue;
      }
      out += fmt::format("# {}\n{} = {}\n", field.doc, field.key, toml_value(value, field.name()));
    }
    // Tables go last: a [header] ends the plain keys of the section above it.
    for (const auto& [field, value] : tables) {
      out += fmt::format("\n# {}\n", field->doc);
      if (value.is_null()) {
        out += fmt::format("# [{}] is not set.\n", field->name());
        continue;
      }
      emit_table(out, field->name(), value);
    }
  }
  return out;
}

} // namespace kiln::recipe
