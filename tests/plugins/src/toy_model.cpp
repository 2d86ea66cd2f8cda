// A minimal model family that crosses every boundary: the host builds it through the registry,
// its forward calls kiln::ops::rms_norm, which the dispatcher sends to a backend plugin.
#include "kiln/sdk/error.h"
#include "kiln/sdk/ops.h"
#include "kiln/sdk/plugin.h"

#include <ATen/ATen.h>

namespace {

class ToyModel final : public kiln::sdk::Model {
 public:
  ToyModel(int64_t vocab, int64_t hidden, const kiln::sdk::ModelOptions& options) {
    auto opts = at::TensorOptions().dtype(options.dtype).device(options.device);
    at::manual_seed(options.seed);
    embed_ = at::randn({vocab, hidden}, opts);
    norm_ = at::ones({hidden}, opts);
    head_ = at::randn({vocab, hidden}, opts);
  }

  std::string family() const override { return "toy"; }

  kiln::sdk::ForwardOutput forward(const kiln::sdk::ForwardInput& input) override {
    at::Tensor h = at::embedding(embed_, input.input_ids); // [B, S, H]
    h = kiln::ops::rms_norm(h, norm_, 1e-6);
    return {.logits = at::matmul(h, head_.t())}; // [B, S, V]
  }

  std::vector<std::pair<std::string, at::Tensor>> named_parameters() override {
    return {{"model.embed_tokens.weight", embed_},
            {"model.norm.weight", norm_},
            {"lm_head.weight", head_}};
  }

  void load_weights(const kiln::sdk::WeightSource& source) override {
    for (auto& [name, param] : named_parameters()) param.copy_(source.load(name));
  }

  std::vector<std::pair<std::string, at::Tensor>> state_dict() override {
    return named_parameters();
  }

  std::vector<std::pair<std::string, at::Tensor>> gradients() override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (auto& [name, param] : named_parameters()) {
      if (param.grad().defined()) out.emplace_back(name, param.grad());
    }
    return out;
  }

  nlohmann::json config_json() const override {
    return {{"model_type", "toy"}, {"vocab_size", embed_.size(0)}, {"hidden_size", embed_.size(1)}};
  }

  at::Tensor lm_head_weight() override { return head_; }

 private:
  at::Tensor embed_, norm_, head_;
};

void register_toy(kiln::sdk::Registrar& r) {
  r.add_model_family({
      .name = "toy",
      .aliases = {"toy_lm"},
      .architectures = {"ToyForCausalLM"},
      .model_types = {"toy"},
      .description = "test family: embedding, rms_norm, lm_head",
      .create = [](const kiln::sdk::ModelConfig& config,
                   const kiln::sdk::ModelOptions& options) -> std::shared_ptr<kiln::sdk::Model> {
        KILN_CHECK_USER(config.json.contains("vocab_size"), "toy config: missing vocab_size");
        return std::make_shared<ToyModel>(config.json.value("vocab_size", 0),
                                          config.json.value("hidden_size", 8), options);
      },
  });
}

} // namespace

KILN_PLUGIN("toy", model, "0.1.0", register_toy)
