// Registration of the nemotron_v3 family (Nemotron-H / NVIDIA Nemotron 3 Nano, Super).
#include "model.h"

#include "kiln/sdk/plugin.h"

namespace kiln::models::nemotron_v3 {
namespace {

std::shared_ptr<sdk::Model> create(const sdk::ModelConfig& config,
                                   const sdk::ModelOptions& options) {
  const std::string where =
      config.source.empty() ? std::string("nemotron_v3 config") : config.source.string();
  auto model = std::make_shared<Model>(Config::from_json(config.json, where), options);
  model->init_random(options.seed);
  return model;
}

void register_nemotron_v3(sdk::Registrar& r) {
  r.add_model_family({
      .name = "nemotron_v3",
      .aliases = {"nemotron_h"},
      .architectures = {"NemotronHForCausalLM"},
      .model_types = {"nemotron_h"},
      .description = "Nemotron-H / Nemotron 3 hybrid (Mamba2 + attention + relu2 MLP/MoE + MTP)",
      .create = &create,
  });
}

} // namespace
} // namespace kiln::models::nemotron_v3

KILN_PLUGIN("nemotron_v3", model, "0.1.0", kiln::models::nemotron_v3::register_nemotron_v3)
