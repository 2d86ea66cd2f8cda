// A training run's folder and its checkpoints:
//
//   RUN_DIR/recipe.toml          the resolved recipe of the latest start
//   RUN_DIR/metrics.jsonl        one JSON object per logged step / validation
//   RUN_DIR/backends.json        which kernel ran each op
//   RUN_DIR/LATEST               "checkpoints/step-<N>": the newest complete checkpoint
//   RUN_DIR/checkpoints/step-<N>/
//       config.json, model*.safetensors[, index]   HF layout: transformers loads the folder
//       tokenizer.json, tokenizer_config.json     the tokenizer the run used
//       trainer_state.json                        step, data position, optimizer settings
//       trainer_state.safetensors                 optimizer moments, fp32 masters, RNG states
//
// A checkpoint is written into `step-<N>.partial`, fsync'ed, renamed to `step-<N>`, and only
// then does LATEST move (also by rename). A crash at any point leaves LATEST on the previous
// complete checkpoint; leftover `.partial` folders are removed by the next save.
#pragma once

#include "kiln/nn/module.h"

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace kiln::train {

inline constexpr std::string_view kTrainerStateJson = "trainer_state.json";
inline constexpr std::string_view kTrainerStateTensors = "trainer_state.safetensors";

/// What a checkpoint holds besides the HF model folder.
struct SavedState {
  int64_t step = 0;                          ///< optimizer steps completed
  nlohmann::json json;                       ///< trainer_state.json (step included)
  std::map<std::string, at::Tensor> tensors; ///< trainer_state.safetensors
};

/// The model folder's content.
struct ModelFiles {
  nlohmann::json config;
  nn::NamedTensors tensors; ///< HF names, HF layout
  /// Writes further files (tokenizer, generation_config.json) into the folder being built.
  std::function<void(const std::filesystem::path&)> write_extra;
};

/// Writes RUN_DIR/checkpoints/step-<step>/ as described above and moves LATEST to it, then
/// removes all but the newest `keep` checkpoints (0 keeps all). Returns the folder.
std::filesystem::path save_run_checkpoint(const std::filesystem::path& run_dir, int64_t step,
                                          const ModelFiles& model, const SavedState& state,
                                          int64_t keep, uint64_t max_shard_bytes);

/// The checkpoint LATEST names, or nullopt when there is none. Throws kiln::Error (user) when
/// LATEST names a folder that is missing or incomplete.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& run_dir);

/// Reads trainer_state.json and trainer_state.safetensors of a checkpoint folder. Throws
/// kiln::Error (user) when the folder is not a kiln training checkpoint.
SavedState load_saved_state(const std::filesystem::path& checkpoint);

} // namespace kiln::train
