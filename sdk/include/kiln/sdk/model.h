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
  /// Recompute each block's activations in backward instead of keeping them (recipe
  /// `[model] activation_checkpointing`); gradients must be unchanged. See kiln/nn/checkpoint.h.
  bool activation_checkpointing = false;
  /// Weight of the multi-token-prediction loss (`[model] mtp_loss_scale`); 0 = MTP layers are not
  /// run. A family without MTP layers rejects a non-zero value.
  double mtp_loss_scale = 0.0;
  /// The DSA indexer's training loss (`[model] indexer_loss`: "none" | "kl") and its weight
  /// (`[model] indexer_loss_coef`). A family without an indexer rejects anything but "none".
  std::string indexer_loss = "none";
  double indexer_loss_coef = 0.0;
};

/// Inputs of a causal-LM forward pass.
/// BSHD: `input_ids` int64 [B, S]. THD (packed): `input_ids` int64 [T] with `cu_seqlens` int32
/// [N + 1] (document boundaries; attention never crosses them).
struct ForwardInput {
  at::Tensor input_ids;
  at::Tensor position_ids;    ///< optional; [B, S] or [T]; defaults to 0.. per sequence/document
  at::Tensor cu_seqlens;      ///< optional; THD only
  int64_t logits_to_keep = 0; ///< 0: logits for every position; k: only the last k
  /// false: skip the LM head (training computes its loss from `hidden` with a chunked kernel).
  bool compute_logits = true;
  /// Optional, training only: int64 targets shaped like input_ids, already shifted (labels[t] is
  /// the token to predict at position t; -100 = ignored). Families with their own losses (MTP)
  /// read them; the LM loss itself is the caller's.
  at::Tensor labels;
  /// Family-specific inputs by name, e.g. state a pipeline stage receives from the previous one
  /// (glm_moe_dsa: "topk_indices", the running IndexShare selection). Each family's README lists
  /// the keys it reads; others are ignored.
  std::map<std::string, at::Tensor> extra;
};

/// Outputs of a forward pass.
struct ForwardOutput {
  at::Tensor logits; ///< [B, S', V] or [T', V] (S'/T' = logits_to_keep or all), HF's dtype
  at::Tensor hidden; ///< final normed hidden states [B, S, H] or [T, H] (input of the LM head)
  /// Losses the family adds to the LM loss, by name ("mtp", "indexer_kl"), scalar fp32 tensors
  /// already multiplied by their recipe coefficients. The trainer adds them to the loss it
  /// back-propagates and logs each one.
  std::map<std::string, at::Tensor> aux_losses;
  /// Tokens routed to each expert, per MoE layer (layer index -> int64 [E], no gradient): the
  /// trainer's load statistics.
  std::map<int64_t, at::Tensor> expert_load;
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
