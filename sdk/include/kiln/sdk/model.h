// The model-family interface: what a model plugin registers and what the host builds from it.
#pragma once

#include "kiln/sdk/export.h"
#include "kiln/sdk/weights.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kiln::sdk {

/// A model's configuration as HF writes it (`config.json`), plus where it came from.
struct ModelConfig {
  nlohmann::json json;          ///< the parsed config.json (unknown fields kept)
  std::filesystem::path source; ///< the file it came from, empty for inline configs
};

/// How the host wants the model built.
struct ModelOptions {
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  c10::ScalarType dtype = c10::ScalarType::Float;
  uint64_t seed = 0; ///< for random initialisation
};

/// Inputs of a causal-LM forward pass.
/// BSHD: `input_ids` int64 [B, S]. THD (packed): `input_ids` int64 [T] with `cu_seqlens` int32
/// [N + 1] (document boundaries; attention never crosses them).
struct ForwardInput {
  at::Tensor input_ids;
  at::Tensor position_ids;    ///< optional; [B, S] or [T]; defaults to 0.. per sequence/document
  at::Tensor cu_seqlens;      ///< optional; THD only
  int64_t logits_to_keep = 0; ///< 0: logits for every position; k: only the last k
};

/// Outputs of a forward pass.
struct ForwardOutput {
  at::Tensor logits; ///< [B, S', V] or [T', V] (S'/T' = logits_to_keep or all), HF's dtype
  at::Tensor hidden; ///< final normed hidden states [B, S, H] or [T, H] (input of the LM head)
  std::map<std::string, at::Tensor> extra; ///< family-specific outputs (e.g. MTP logits)
};

/// A built model. Owned by whoever created it (the host holds it in a shared_ptr); its code lives
/// in the plugin, which stays loaded for the process lifetime.
class KILN_SDK_API Model {
 public:
  virtual ~Model();
  /// The family's registry name.
  virtual std::string family() const = 0;
  virtual ForwardOutput forward(const ForwardInput& input) = 0;
  /// Trainable parameters keyed by a stable name (HF names where one tensor maps to one HF
  /// tensor; stacked expert tensors get the module path). The tensors are the live parameters
  /// (shared storage), not copies.
  virtual std::vector<std::pair<std::string, at::Tensor>> named_parameters() = 0;

  /// Copies every weight from `source` by its HF checkpoint name, converting dtypes by HF's rules.
  /// Missing, unexpected or wrongly shaped tensors are a kiln::Error that lists them.
  virtual void load_weights(const WeightSource& source) = 0;

  /// The weights in the exact HF hub layout (per-expert tensors, HF names, HF dtypes), in a stable
  /// order. Tensors may share storage with the parameters; the caller must not modify them.
  virtual std::vector<std::pair<std::string, at::Tensor>> state_dict() = 0;

  /// The gradients of the parameters after a backward pass, in the same layout and names as
  /// state_dict(); tensors without a gradient (buffers, unused parameters) are left out.
  virtual std::vector<std::pair<std::string, at::Tensor>> gradients() = 0;

  /// The config.json to save beside state_dict() (HF keys, unknown input keys kept).
  virtual nlohmann::json config_json() const = 0;

  /// The LM head weight [V, H] (for chunked losses that never build [T, V] logits).
  virtual at::Tensor lm_head_weight() = 0;
};

/// A model family as a plugin registers it. The registry copies it and keeps it for the process
/// lifetime; `create` may be called many times, from the host's thread.
struct ModelFamily {
  std::string name;                       ///< permanent registry name, e.g. "glm4_moe"
  std::vector<std::string> aliases;       ///< older names still accepted
  std::vector<std::string> architectures; ///< HF `architectures` entries, e.g. "Glm4MoeForCausalLM"
  std::vector<std::string> model_types;   ///< HF `model_type` values, e.g. "glm4_moe"
  std::string description;                ///< one line for `kiln plugins`
  /// Builds a model with random initialisation from a config. Throws kiln::Error on a bad config.
  std::function<std::shared_ptr<Model>(const ModelConfig&, const ModelOptions&)> create;
};

} // namespace kiln::sdk
