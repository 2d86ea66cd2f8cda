// The training loop behind `kiln run`: builds the model, tokenizer and data from a recipe, trains
// with AdamW, validates, logs, checkpoints and resumes. One process, one device; the data and
// step logic already take a rank and world size for data parallelism.
#pragma once

#include "recipe/recipe.h"
#include "train/progress.h"

#include <cstdint>
#include <filesystem>
#include <vector>

namespace kiln::train {

struct TrainOptions {
  LogFormat log_format = LogFormat::kAuto;
  int64_t rank = 0;
  int64_t world = 1;
};

struct TrainResult {
  std::filesystem::path run_dir;
  int64_t first_step = 0;     ///< steps already done when this run started (resume)
  int64_t last_step = 0;      ///< steps done when it stopped
  std::vector<double> losses; ///< training loss of each step this run took
  std::vector<double> val_losses;
  std::string sample; ///< the generated sample, when train.sample_prompt is set
  /// 0: done; 3: stopped on a non-finite loss or gradient; 128 + N: stopped by signal N after
  /// saving a checkpoint.
  int exit_code = 0;
};

/// Runs the recipe (plugins must be loaded and the dispatcher configured). Throws kiln::Error
/// for user errors (bad data, a checkpoint that does not fit, ...).
TrainResult run(const recipe::Recipe& recipe, const recipe::KeyOrigins& origins,
                const TrainOptions& options);

} // namespace kiln::train
