// Registration of the glm4_moe family (GLM-4.5 / 4.5-Air / 4.6 / 4.7).
#include "model.h"

#include "kiln/sdk/plugin.h"

namespace kiln::models::glm4_moe {
namespace {

std::shared_ptr<sdk::Model> create(const sdk::ModelConfig& config,
                                   const sdk::ModelOptions& options) {
  const std::string where =
      config.source.empty() ? std::string("glm4_moe config") : config.source.string();
  auto model = std::make_shared<Model>(Config::from_json(config.json, where), options);
  model->init_random(options.seed);
  return model;
}

void register_glm4_moe(sdk::Registrar& r) {
  r.add_model_family({
      .name = "glm4_moe",
      .architectures = {"Glm4MoeForCausalLM"},
      .model_types = {"glm4_moe"},
      .description = "GLM-4.5 / 4.6 / 4.7 MoE (partial rope, qk-norm, sigmoid group routing)",
      .create = &create,
  });
}

} // namespace
} // namespace kiln::models::glm4_moe

KILN_PLUGIN("glm4_moe", model, "0.1.0", kiln::models::glm4_moe::register_glm4_moe)
