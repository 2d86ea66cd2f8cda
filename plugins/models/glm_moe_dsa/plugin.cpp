// Registration of the glm_moe_dsa family (GLM-5 / 5.1 / 5.2).
#include "model.h"

#include "kiln/sdk/plugin.h"

namespace kiln::models::glm_moe_dsa {
namespace {

std::shared_ptr<sdk::Model> create(const sdk::ModelConfig& config,
                                   const sdk::ModelOptions& options) {
  const std::string where =
      config.source.empty() ? std::string("glm_moe_dsa config") : config.source.string();
  auto model = std::make_shared<Model>(Config::from_json(config.json, where), options);
  model->init_random(options.seed);
  return model;
}

void register_glm_moe_dsa(sdk::Registrar& r) {
  r.add_model_family({
      .name = "glm_moe_dsa",
      .architectures = {"GlmMoeDsaForCausalLM"},
      .model_types = {"glm_moe_dsa"},
      .description = "GLM-5 MoE (MLA, DeepSeek sparse attention indexer, IndexShare)",
      .create = &create,
  });
}

} // namespace
} // namespace kiln::models::glm_moe_dsa

KILN_PLUGIN("glm_moe_dsa", model, "0.1.0", kiln::models::glm_moe_dsa::register_glm_moe_dsa)
