// `kiln recipe check|show FILE [overrides]`.
#include "common.h"

#include "core/model_registry.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "recipe/recipe.h"
#include "train/trainer.h"

#include <fmt/format.h>

#include <iostream>

namespace kiln::cli {

void usage_recipe() {
  std::cout
      << "usage: kiln recipe check FILE [--section.key VALUE]... [--plugin FILE]...\n"
         "       kiln recipe show  FILE [--section.key VALUE]...\n\n"
         "check: parses and validates the recipe (keys, types, extends, cross-field rules), loads\n"
         "       the plugins it needs and checks that its model family and backends exist.\n"
         "show:  prints the resolved recipe (extends and overrides applied, defaults filled) as "
         "TOML.\n\n"
         "Overrides: --section.key VALUE, --section.key=VALUE or --set section.key=VALUE; typed "
         "by\n"
         "the recipe schema; they win over the file and its bases.\n\n"
      << plugin_options();
}

int cmd_recipe(const std::vector<std::string>& args) {
  if (args.empty() || (args[0] != "check" && args[0] != "show")) {
    user_error(
        "kiln recipe: expected 'check' or 'show' then FILE, found '{}'; see `kiln help recipe`",
        args.empty() ? "" : args[0]);
  }
  const bool check = args[0] == "check";
  KILN_CHECK_USER(args.size() >= 2 && args[1].rfind("--", 0) != 0,
                  "kiln recipe {}: expected a recipe FILE", args[0]);
  const std::string file = args[1];

  // The rest: our own options (--plugin, --verbose) or recipe overrides.
  std::vector<std::string> own;
  std::vector<std::string> overrides;
  for (size_t i = 2; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--verbose" || a == "-v") {
      own.push_back(a);
    } else if (a == "--plugin" || a.rfind("--plugin=", 0) == 0) {
      own.push_back(a);
      if (a == "--plugin" && i + 1 < args.size()) own.push_back(args[++i]);
    } else {
      overrides.push_back(a);
    }
  }
  const auto vm = parse(own, plugin_options(), {});
  const recipe::Recipe r = recipe::load_recipe(file, recipe::parse_override_args(overrides));
  if (!check) {
    std::cout << recipe::to_toml(r);
    return 0;
  }

  load_plugins(vm, r.plugins.dirs);
  if (!r.model.family.empty()) core::ModelRegistry::global().find(r.model.family);
  try {
    sdk::Dispatcher::global().configure(train::dispatch_config(r.backend));
  } catch (const Error& e) {
    throw e.with_context(fmt::format("checking {}", file));
  }
  std::cout << fmt::format("{}: ok\n", file);
  return 0;
}

} // namespace kiln::cli
