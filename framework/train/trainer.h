// The training loop behind `kiln run`: builds the model, tokenizer and data from a recipe, trains
// with AdamW, validates, logs, checkpoints and resumes. One process, one device; the data and
// step logic already take a rank and world size for data parallelism.
#pragma once

#include "kiln/sdk/dispatch.h"
#include "recipe/recipe.h"
#include "train/progress.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <vector>

namespace kiln::sdk {
class Model;
} // namespace kiln::sdk
namespace kiln::data {
struct MicroBatch;
} // namespace kiln::data

namespace kiln::train {

/// One finished training step, as TrainOptions::on_step sees it.
struct StepReport {
  int64_t step = 0; ///< steps done, this one included (1-based)
  double loss = 0;  ///< token-mean LM loss of the step
  double grad_norm = 0;
  int64_t tokens = 0;  ///< input tokens of the step's micro-batches
  int64_t targets = 0; ///< tokens with a loss
  double seconds = 0;  ///< from drawing the batches to the end of the optimizer update
};

struct TrainOptions {
  LogFormat log_format = LogFormat::kAuto;
  int64_t rank = 0;
  int64_t world = 1;
  /// Wait for the device at the end of every step before taking its time, so a step's seconds
  /// are what it cost the device rather than how long queueing it took (benchmarks; it costs
  /// the overlap of one step's update with the next step's host work).
  bool synchronize_steps = false;
  /// Called once, before the first step this run takes, with the model (its weights as the run
  /// starts) and that step's first micro-batch (on the CPU, as the loader made it). `kiln bench
  /// model` compares the logits of a forward on it across settings. Must not change the model.
  std::function<void(sdk::Model&, const data::MicroBatch&)> before_first_step;
  /// Called after every step's optimizer update (after the metrics line is written).
  std::function<void(const StepReport&)> on_step;
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

/// The dispatcher's configuration a recipe's [backend] section asks for (what `kiln run` passes
/// to sdk::Dispatcher::configure before train::run).
sdk::DispatchConfig dispatch_config(const recipe::BackendSection& backend);

/// The dispatcher's resolutions so far (sdk::Dispatcher::resolved()) as the JSON array a run
/// saves as backends.json: {op, device, dtype, requested, chosen, note} per (op, device, dtype).
nlohmann::json resolved_backends();

} // namespace kiln::train
