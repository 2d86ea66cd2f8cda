// The registry of model families, filled by model plugins, looked up by recipes and checkpoints.
#pragma once

#include "kiln/sdk/model.h"

#include <nlohmann/json_fwd.hpp>

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::core {

struct RegisteredFamily {
  sdk::ModelFamily family;
  std::string plugin; ///< the plugin that registered it
};

class ModelRegistry {
 public:
  static ModelRegistry& global();

  /// Throws kiln::Error if the name, an alias, an architecture or a model type is already taken.
  void check_new(const sdk::ModelFamily& family, std::string_view plugin) const;
  void add(sdk::ModelFamily family, std::string plugin);

  /// By registry name or alias. Throws kiln::Error listing the loaded families.
  const RegisteredFamily& find(std::string_view name,
                               std::string_view where = "model.family") const;
  /// By an HF config.json: `architectures` entries first, then `model_type`. Throws kiln::Error
  /// naming both values and the loaded families.
  const RegisteredFamily& find_for_config(const nlohmann::json& config,
                                          std::string_view where) const;

  std::vector<std::string> names() const;
  void reset_for_testing();

 private:
  mutable std::mutex mutex_;
  std::vector<RegisteredFamily> families_;
};

} // namespace kiln::core
