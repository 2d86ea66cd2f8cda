#include "core/model_registry.h"

#include "core/text.h"
#include "kiln/sdk/error.h"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace kiln::core {

ModelRegistry& ModelRegistry::global() {
  static ModelRegistry* instance = new ModelRegistry(); // plugins outlive main()
  return *instance;
}

void ModelRegistry::check_new(const sdk::ModelFamily& family, std::string_view plugin) const {
  KILN_CHECK_USER(is_registry_name(family.name),
                  "model family '{}' from plugin '{}': names are lower-case letters, digits and "
                  "'_'; rename it",
                  family.name, plugin);
  KILN_CHECK_USER(static_cast<bool>(family.create),
                  "model family '{}' from plugin '{}' has no create function", family.name, plugin);
  std::lock_guard lock(mutex_);
  for (const auto& r : families_) {
    auto taken = [&](std::string_view what, std::string_view value) {
      user_error(
          "duplicate model family {} '{}' from plugin '{}': already registered by family "
          "'{}' of plugin '{}'",
          what, value, plugin, r.family.name, r.plugin);
    };
    auto names_of = [](const sdk::ModelFamily& f) {
      std::vector<std::string> all = f.aliases;
      all.push_back(f.name);
      return all;
    };
    for (const auto& n : names_of(family)) {
      for (const auto& m : names_of(r.family)) {
        if (n == m) taken("name", n);
      }
    }
    for (const auto& a : family.architectures) {
      if (std::count(r.family.architectures.begin(), r.family.architectures.end(), a)) {
        taken("architecture", a);
      }
    }
    for (const auto& t : family.model_types) {
      if (std::count(r.family.model_types.begin(), r.family.model_types.end(), t)) {
        taken("model_type", t);
      }
    }
  }
}

void ModelRegistry::add(sdk::ModelFamily family, std::string plugin) {
  check_new(family, plugin);
  std::lock_guard lock(mutex_);
  families_.push_back(RegisteredFamily{std::move(family), std::move(plugin)});
}

const RegisteredFamily& ModelRegistry::find(std::string_view name, std::string_view where) const {
  std::lock_guard lock(mutex_);
  for (const auto& r : families_) {
    if (r.family.name == name) return r;
    for (const auto& alias : r.family.aliases) {
      if (alias == name) return r;
    }
  }
  std::vector<std::string> loaded;
  for (const auto& r : families_) loaded.push_back(r.family.name);
  user_error("unknown model family '{}' ({}){}; loaded: {}", name, where,
             did_you_mean(name, loaded), join_or_none(loaded));
}

const RegisteredFamily& ModelRegistry::find_for_config(const nlohmann::json& config,
                                                       std::string_view where) const {
  std::vector<std::string> architectures;
  if (config.contains("architectures") && config["architectures"].is_array()) {
    for (const auto& a : config["architectures"]) {
      if (a.is_string()) architectures.push_back(a.get<std::string>());
    }
  }
  std::string model_type;
  if (config.contains("model_type") && config["model_type"].is_string()) {
    model_type = config["model_type"].get<std::string>();
  }
  std::lock_guard lock(mutex_);
  for (const auto& a : architectures) {
    for (const auto& r : families_) {
      if (std::count(r.family.architectures.begin(), r.family.architectures.end(), a)) return r;
    }
  }
  for (const auto& r : families_) {
    if (std::count(r.family.model_types.begin(), r.family.model_types.end(), model_type)) return r;
  }
  std::vector<std::string> loaded;
  for (const auto& r : families_) loaded.push_back(r.family.name);
  user_error(
      "{}: no loaded model family handles architectures [{}] / model_type '{}'; loaded: {} "
      "(load the family's plugin, or set model.family)",
      where, join_or_none(architectures), model_type, join_or_none(loaded));
}

std::vector<std::string> ModelRegistry::names() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& r : families_) out.push_back(r.family.name);
  std::sort(out.begin(), out.end());
  return out;
}

void ModelRegistry::reset_for_testing() {
  std::lock_guard lock(mutex_);
  families_.clear();
}

} // namespace kiln::core
