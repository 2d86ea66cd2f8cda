// Overrides are applied to the merged TOML table, not to the Recipe, so that they go through the
// same reader, type checks and validate() as file values, and so that `--model.config.x=1` can
// change one entry of a table the files wrote.
#include "recipe/overrides.h"

#include "recipe/recipe.h"
#include "recipe/schema.h"

#include "kiln/sdk/error.h"

#include <fmt/format.h>

#include <memory>

namespace kiln::recipe {
namespace detail {
namespace {

bool is_key_segment(std::string_view segment) {
  if (segment.empty()) return false;
  for (char c : segment) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::vector<std::string_view> split_key(std::string_view dotted) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = dotted.find('.', start);
    parts.push_back(dotted.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) return parts;
    start = dot + 1;
  }
}

/// section.key or deeper, each part a bare TOML key (quoted keys are not worth the syntax).
bool is_dotted_key(std::string_view dotted) {
  const auto parts = split_key(dotted);
  if (parts.size() < 2) return false;
  for (std::string_view part : parts) {
    if (!is_key_segment(part)) return false;
  }
  return true;
}

// A copy made without the position the scratch document gave it: the value belongs to the
// override, and the Locator names it.
std::unique_ptr<toml::node> copy_node(const toml::node& node) {
  return node.visit([](const auto& concrete) -> std::unique_ptr<toml::node> {
    return std::make_unique<std::remove_cvref_t<decltype(concrete)>>(concrete);
  });
}

/// TEXT as exactly one TOML value (128, 1e-5, true, "x", [1, 2], { a = 1 }), or null.
std::unique_ptr<toml::node> parse_value(std::string_view text) {
  try {
    const toml::table document = toml::parse(fmt::format("v = {}", text));
    const toml::node* value = document.get("v");
    if (document.size() != 1 || !value) return nullptr; // "1\nx = 2" smuggles in a key
    return copy_node(*value);
  } catch (const toml::parse_error&) {
    return nullptr;
  }
}

/// Strings may be given bare (`--model.family glm4_moe`) or, to keep spaces or quotes exact, as a
/// TOML string.
std::unique_ptr<toml::node> string_value(std::string_view text) {
  if (text.starts_with('"') || text.starts_with('\'')) {
    if (auto value = parse_value(text); value && value->is_string()) return value;
  }
  return std::make_unique<toml::value<std::string>>(std::string(text));
}

std::string_view trim(std::string_view text) {
  const size_t begin = text.find_first_not_of(" \t");
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(" \t") - begin + 1);
}

std::unique_ptr<toml::node> typed_value(const Field& field, bool nested, std::string_view dotted,
                                        std::string_view text, const std::string& label) {
  auto fail = [&](std::string_view expected) {
    user_error("{}: {}: expected {}, found '{}'", label, dotted, expected, text);
  };
  if (nested) {
    // An entry of a table key: [backend.ops] holds strings; [model.config] holds anything, so the
    // text is a TOML value when it parses as one (128, 1e-5, true, [1, 2]) and a string otherwise.
    if (field.type == ValueType::kStringMap) return string_value(text);
    if (auto value = parse_value(text)) return value;
    return string_value(text);
  }
  switch (field.type) {
    case ValueType::kString:
    case ValueType::kPath:
      return string_value(text);
    case ValueType::kInteger:
    case ValueType::kFloat:
    case ValueType::kBool: {
      // Parsed as TOML and left to the reader, which reports "expected an integer, found a
      // float" with this override as the place.
      auto value = parse_value(text);
      if (!value) fail(field.expected());
      return value;
    }
    case ValueType::kStringList:
    case ValueType::kPathList: {
      if (trim(text).starts_with('[')) {
        auto value = parse_value(text);
        if (!value) fail(R"(an array of strings: a,b or ["a", "b"])");
        return value;
      }
      auto array = std::make_unique<toml::array>();
      if (trim(text).empty()) return array;
      for (std::string_view rest = text;;) {
        const size_t comma = rest.find(',');
        array->push_back(std::string(trim(rest.substr(0, comma))));
        if (comma == std::string_view::npos) break;
        rest = rest.substr(comma + 1);
      }
      return array;
    }
    case ValueType::kFloatList: {
      // "0.9,0.95" or "[0.9, 0.95]"; the reader checks each element.
      const std::string_view body = trim(text);
      auto value =
          parse_value(body.starts_with('[') ? std::string(body) : fmt::format("[{}]", body));
      if (!value) fail("an array of numbers: 0.9,0.95 or [0.9, 0.95]");
      return value;
    }
    case ValueType::kTable:
    case ValueType::kStringMap: {
      auto value = parse_value(text);
      if (!value || !value->is_table()) {
        fail(fmt::format(
            "an inline table like {{ key = value }} (or set one entry: --{}.KEY=VALUE)", dotted));
      }
      return value;
    }
  }
  internal_error("{}: no override typing for {}", label, field.name());
}

} // namespace

void apply_override(toml::table& root, std::string_view text, Locator& locator) {
  const size_t equals = text.find('=');
  if (equals == std::string_view::npos) {
    user_error("override '{}': expected section.key=value", text);
  }
  const std::string_view dotted = text.substr(0, equals);
  const std::string_view value = text.substr(equals + 1);
  const std::string label = fmt::format("override '--{}'", dotted);
  if (!is_dotted_key(dotted)) {
    user_error("{}: expected a dotted key like model.dtype (letters, digits, '_', '-'), found '{}'",
               label, dotted);
  }
  const auto parts = split_key(dotted);
  const Section* section = find_section(parts[0]);
  const Field* field = section ? section->find(parts[1]) : nullptr;
  if (!field) {
    user_error("{}: {}", label,
               unknown_dotted_key_message(fmt::format("{}.{}", parts[0], parts[1])));
  }
  const bool nested = parts.size() > 2;
  if (nested && field->type != ValueType::kTable && field->type != ValueType::kStringMap) {
    user_error("{}: {} is {}, not a table; write --{}=VALUE", label, field->name(),
               field->expected(), field->name());
  }
  std::unique_ptr<toml::node> node = typed_value(*field, nested, dotted, value, label);

  toml::table* table = &root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::node* child = table->get(parts[i]);
    if (!child || !child->is_table()) {
      table->insert_or_assign(parts[i], toml::table{});
      child = table->get(parts[i]);
    }
    table = child->as_table();
  }
  // Replaced, never merged: an override says what the value is.
  table->erase(parts.back());
  table->insert(parts.back(), std::move(*node));
  locator.add_override(std::string(dotted), label);
}

} // namespace detail

std::vector<std::string> parse_override_args(std::span<const std::string> args) {
  using detail::is_dotted_key;
  constexpr std::string_view kForms =
      "--section.key VALUE, --section.key=VALUE, --set section.key=VALUE or section.key=VALUE";
  // TOKEN is what the user typed, for the message; ASSIGNMENT its "key=value" part.
  auto checked = [&](std::string_view token, std::string_view assignment) {
    const size_t equals = assignment.find('=');
    if (equals == std::string_view::npos) {
      user_error("override '{}': expected section.key=value; overrides are written {}", token,
                 kForms);
    }
    if (!is_dotted_key(assignment.substr(0, equals))) {
      user_error(
          "override '{}': expected a dotted key like model.dtype (letters, digits, '_', '-'), "
          "found '{}'",
          token, assignment.substr(0, equals));
    }
    return std::string(assignment);
  };

  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--set") {
      if (i + 1 == args.size()) {
        user_error("override '--set': expected section.key=value after it, found nothing");
      }
      ++i;
      out.push_back(checked(fmt::format("--set {}", args[i]), args[i]));
    } else if (arg.starts_with("--set=")) {
      out.push_back(checked(arg, arg.substr(6)));
    } else if (arg.starts_with("--")) {
      const std::string_view body = arg.substr(2);
      if (body.find('=') != std::string_view::npos) {
        out.push_back(checked(arg, body));
        continue;
      }
      if (!is_dotted_key(body)) {
        user_error(
            "override '{}': expected a dotted key like --model.dtype; overrides are written {}",
            arg, kForms);
      }
      // A following option means the value was forgotten; taking "--x=1" as the value would hide
      // it.
      if (i + 1 == args.size() || args[i + 1].starts_with("--")) {
        user_error("override '{}': missing a value; write {} VALUE or {}=VALUE", arg, arg, arg);
      }
      ++i;
      out.push_back(fmt::format("{}={}", body, args[i]));
    } else if (arg.find('=') != std::string_view::npos) {
      out.push_back(checked(arg, arg));
    } else {
      user_error("override '{}': expected {}", arg, kForms);
    }
  }
  return out;
}

} // namespace kiln::recipe
