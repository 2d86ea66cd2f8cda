// Model-level A/B testing (`kiln bench model`): the same training steps of one recipe under each
// value of one recipe key (a backend, `backend.ops.NAME`, `train.micro_batch`, ...), with the
// step time, throughput, peak device memory, the loss of every step, and how far the losses and
// the initial logits move from the first setting's.
//
// Every setting runs in this process, one after the other, through train::run: the plugins are
// loaded once and the dispatcher is configured afresh from each setting's [backend] section. The
// runs write into a temporary folder that is removed afterwards, save no checkpoint, skip
// validation and the sample, and start from the recipe's initial weights (model.checkpoint or the
// family's seeded random init) with the same seed and data.
#pragma once

#include "bench/measure.h"
#include "recipe/recipe.h"

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::bench {

/// Positions of the first micro-batch whose logits are compared across settings: the last ones
/// (the forward asks for them with logits_to_keep, so no [T, V] tensor is made; at a real
/// vocabulary of 150k this is 150 MB of float32 on the host per setting).
inline constexpr int64_t kComparedLogitRows = 256;

/// The recipe key compared and its values, in order (the first is the reference).
struct AbSpec {
  std::string key;                 ///< "backend.default", "backend.ops.attention", ...
  std::vector<std::string> values; ///< as override text: "torch", "2", "[a.jsonl, b.jsonl]"
};

/// Splits `--ab KEY=V1,V2,...`. Values are separated by commas outside brackets, braces and
/// quotes, so `data.train=[a.jsonl,b.jsonl],c.jsonl` has two values. Throws a one-line user
/// kiln::Error naming --ab for a missing '=', a key that is not section.key, an empty or repeated
/// value, fewer than two values, and keys the bench sets itself (run.dir, train.steps, validation,
/// sample and checkpoint keys, plugins.dirs).
AbSpec parse_ab(std::string_view text);

struct ModelBenchOptions {
  std::filesystem::path recipe;       ///< the recipe file
  std::vector<std::string> overrides; ///< "section.key=value", applied to every setting first
  AbSpec ab;
  int64_t steps = 10; ///< timed steps
  int64_t warmup = 2; ///< steps run first and not timed (their losses are still compared)
  /// Set: one more step runs after the timed ones under the profiler (bench/profile.h), its
  /// Chrome trace written here as `N-VALUE.json` per setting; not part of the results.
  std::optional<std::filesystem::path> profile_dir;
};

/// One setting's recipe, as it will run (steps, no checkpoints, a run.dir to be replaced).
struct Setting {
  std::string value;
  recipe::Recipe recipe;
  recipe::KeyOrigins origins;
};

/// Loads the recipe once per value (options.overrides, then KEY=value) and applies the bench's
/// own changes; checks that each can train (data files, device). A bad key or value is a
/// one-line user error that names the setting (`--ab model.dtype=fp8: ...`); an error of the
/// recipe itself (the same for every value) is reported as is. Needs no plugins.
std::vector<Setting> load_settings(const ModelBenchOptions& options);

/// Configures the dispatcher with each setting's [backend] section, so that an unknown backend
/// or policy name fails before anything runs (naming the setting). Plugins must be loaded.
void check_backends(const std::vector<Setting>& settings, const std::string& key);

/// What one setting measured, and (for every setting but the reference) how it compares. The
/// reference is the first setting that did not run out of memory.
struct SettingResult {
  std::string value;
  /// Set when the setting ran out of memory: where and the allocator's message. Its timings are
  /// then left at zero and its comparisons unset.
  std::string out_of_memory;
  bool reference = false;      ///< the setting the others compare with
  std::string device;          ///< "cpu", "cuda:0"
  std::string device_name;     ///< "cpu", "NVIDIA H200"
  std::string dtype;           ///< model.dtype
  std::string timer;           ///< "wall clock" or "wall clock (device synchronized per step)"
  std::vector<double> losses;  ///< every step, warm-up included
  std::vector<double> step_ms; ///< every step, warm-up included
  std::vector<int64_t> tokens; ///< input tokens of every step
  double median_step_ms = 0;   ///< over the timed steps
  double min_step_ms = 0;
  double tokens_per_step = 0;          ///< mean input tokens of a timed step
  double tokens_per_s = 0;             ///< tokens_per_step / the median step time
  std::optional<int64_t> peak_bytes;   ///< allocator peak over the timed steps (CUDA only)
  nlohmann::json backends;             ///< train::resolved_backends(): what actually ran
  std::string ran;                     ///< "torch", "cuda+torch", "torch (fallback)"
  std::vector<std::string> fallbacks;  ///< "op (device, dtype): why" of each fallback
  std::string profile;                 ///< the profiled step's costliest ops and kernels
  std::filesystem::path profile_trace; ///< its Chrome trace (empty without profile_dir)
  // vs the reference setting (unset for the reference and for a setting out of memory)
  std::optional<double> speedup;           ///< tokens_per_s / the reference's
  std::optional<double> loss_max_abs_diff; ///< max over steps of |loss - reference's loss|
  std::optional<ErrorStats> logits;        ///< initial logits vs the reference's
  std::string logits_note;                 ///< what was compared, or why nothing was
  // The first micro-batch's ids and the float32 logits of its last kComparedLogitRows positions,
  // with the initial weights, for the comparison.
  at::Tensor first_ids;
  at::Tensor first_logits;
};

/// Runs every setting (see the file comment) in a temporary folder removed afterwards, and fills
/// the comparisons. A run that stops early (a non-finite loss: exit 3; a signal: 128 + N) ends
/// the bench: its code is returned in `exit_code` with the results so far. Errors raised while a
/// setting runs (a strict backend without a kernel, ...) get the setting as context. A setting
/// that runs out of memory is a result (`out_of_memory`, like "OOM" in a benchmark table): the
/// device's cached memory is released and the next setting runs; when every setting runs out of
/// memory, that is a one-line internal kiln::Error naming the first, the step and what to
/// change.
struct ModelBenchResult {
  std::vector<SettingResult> settings;
  int exit_code = 0;
  std::string stopped; ///< which setting stopped, and how, when exit_code != 0
};
ModelBenchResult run_model_bench(const ModelBenchOptions& options,
                                 const std::vector<Setting>& settings);

/// The JSON of `kiln bench model --json`: the recipe, key, steps, and per setting every field of
/// SettingResult (null where a value does not apply) with the resolved backend table.
nlohmann::json to_json(const ModelBenchOptions& options, const ModelBenchResult& result);

} // namespace kiln::bench
