// A recipe is the TOML file that decides what a kiln run does. This header is its typed, validated
// form and the entry points that produce it: load (with `extends` and CLI overrides), re-validate,
// and print back as TOML. The keys, their types, defaults and docs are described once, in
// schema.cpp; this header only holds the structs the rest of kiln reads.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace kiln::recipe {

/// [run]: what the run is called, where it writes, how it is seeded.
struct RunSection {
  std::string name = "kiln";
  /// Default runs/<name> (filled in by validate()). A relative path is kept as written: it is
  /// taken from the current directory at run time.
  std::filesystem::path dir;
  int64_t seed = 0;

  bool operator==(const RunSection&) const = default;
};

/// [model]: which model family, from a checkpoint or from scratch, in which dtype and device.
struct ModelSection {
  std::string family;
  /// HF model directory (config.json + safetensors); kept as written.
  std::filesystem::path checkpoint;
  /// The [model.config] table as JSON (an HF config.json for a model built from scratch); null
  /// when the recipe has none.
  nlohmann::json config;
  std::string dtype = "float32"; ///< "float32" | "bfloat16"
  std::string device = "cpu";    ///< "cpu" | "cuda" | "cuda:N"
  bool activation_checkpointing = false;
  double mtp_loss_scale = 0.0;       ///< 0: MTP layers not trained
  std::string indexer_loss = "none"; ///< "none" | "kl" (DSA indexer training loss)
  double indexer_loss_coef = 1.0;

  bool operator==(const ModelSection&) const = default;
};

/// [backend]: which kernel backend runs each op.
struct BackendSection {
  std::string default_backend = "auto";   ///< TOML key `default`
  std::map<std::string, std::string> ops; ///< [backend.ops] op = "backend"
  bool strict = false;

  bool operator==(const BackendSection&) const = default;
};

/// [plugins]: extra plugin directories, searched after --plugin and KILN_PLUGIN_PATH.
struct PluginsSection {
  /// Absolute: relative entries are resolved against the directory of the recipe file that wrote
  /// them (a recipe and its plugins move together), override entries against the current directory.
  std::vector<std::filesystem::path> dirs;

  bool operator==(const PluginsSection&) const = default;
};

/// [tokenizer]: how text becomes ids.
struct TokenizerSection {
  std::string kind = "auto";  ///< "auto" | "byte" | "hf"
  std::filesystem::path path; ///< an HF tokenizer.json (or its folder); absolute once loaded

  bool operator==(const TokenizerSection&) const = default;
};

/// [data]: the training and validation text, its format and how it is batched.
struct DataSection {
  std::vector<std::filesystem::path> train;      ///< JSONL files; absolute once loaded
  std::vector<std::filesystem::path> validation; ///< JSONL files; absolute once loaded
  std::string format = "text";                   ///< "text" | "prompt_completion" | "chat"
  int64_t seq_len = 2048;
  bool pack = true;
  bool answer_only_loss = true;
  bool drop_overlong = true;
  bool shuffle = true;
  bool add_eos = true;
  bool mock = false;

  bool operator==(const DataSection&) const = default;
};

/// [train]: how many steps, how big, how often to validate and log.
struct TrainSection {
  int64_t steps = 100;
  int64_t global_batch_tokens = 0; ///< 0: micro_batch * grad_accum * seq_len
  int64_t micro_batch = 1;         ///< sequences of seq_len tokens per forward
  int64_t grad_accum = 1;
  int64_t val_every = 0; ///< 0: no validation during training
  int64_t val_steps = 10;
  double clip_grad = 1.0; ///< 0: no clipping
  int64_t log_every = 1;
  std::string sample_prompt; ///< after training, greedy-generate from this ("" = no sample)
  int64_t sample_tokens = 64;

  bool operator==(const TrainSection&) const = default;
};

/// [optim]: the optimizer and its learning-rate schedule.
struct OptimSection {
  std::string name = "adamw";
  double lr = 3e-4;
  std::vector<double> betas = {0.9, 0.95};
  double eps = 1e-8;
  double weight_decay = 0.1;
  std::string schedule = "cosine"; ///< "cosine" | "linear" | "constant" | "wsd"
  int64_t warmup_steps = 0;
  double min_lr = 0.0;
  double decay_fraction = 0.1; ///< wsd: the last fraction of steps that decays
  int64_t schedule_steps = 0;  ///< the schedule's length; 0: train.steps

  bool operator==(const OptimSection&) const = default;
};

/// [checkpoint]: when to save, how many to keep, where to resume from.
struct CheckpointSection {
  int64_t every = 0;           ///< 0: only the final one
  int64_t keep = 3;            ///< newest checkpoints kept; 0 keeps all
  std::string resume = "auto"; ///< "auto" | "none" | a checkpoint folder
  bool save_final = true;
  std::string format = "hf";

  bool operator==(const CheckpointSection&) const = default;
};

/// A loaded, validated recipe.
struct Recipe {
  RunSection run;
  ModelSection model;
  TokenizerSection tokenizer;
  DataSection data;
  TrainSection train;
  OptimSection optim;
  CheckpointSection checkpoint;
  BackendSection backend;
  PluginsSection plugins;
  /// The file load_recipe was given, as given (empty for a recipe built in code).
  std::filesystem::path source;

  bool operator==(const Recipe&) const = default;
};

/// Where each key of a loaded recipe was set, for messages: "section.key" (and, for tables of
/// named entries, "backend.ops.<op>") -> "file:line:col" or "override '--section.key'".
using KeyOrigins = std::map<std::string, std::string, std::less<>>;

/// Loads FILE, applies its `extends` chain, then CLI overrides ("section.key=value", later ones
/// win), and validates everything. Throws kiln::Error (kUser) with file:line:col on any problem.
/// `origins_out`, when given, receives where each key was set (for check_trainable's messages).
Recipe load_recipe(const std::filesystem::path& file, std::span<const std::string> overrides = {},
                   KeyOrigins* origins_out = nullptr);

/// Parses CLI override tokens: "--section.key value", "--section.key=value",
/// "--set section.key=value", "section.key=value". Returns "section.key=value" strings, in order.
/// Checks syntax only (keys are checked against the schema by load_recipe). Throws kiln::Error
/// (kUser) on malformed tokens.
std::vector<std::string> parse_override_args(std::span<const std::string> args);

/// The resolved recipe as TOML: every section and key in schema order, defaults included, each
/// with its doc line as a comment. load_recipe on the output yields an equal Recipe (but source).
std::string to_toml(const Recipe& recipe);

/// Fills derived defaults (run.dir = runs/<name>), then runs every value and cross-field check.
/// Errors point at origins[key] when known, else at recipe.source. load_recipe calls it; call it
/// again after changing a Recipe in code. Throws kiln::Error (kUser).
void validate(Recipe& recipe, const KeyOrigins& origins = {});

/// The checks that only training needs (`kiln run`): training files (or mock data), validation
/// files when val_every is set. A recipe that only names a model passes validate() but not this.
void check_trainable(const Recipe& recipe, const KeyOrigins& origins = {});

} // namespace kiln::recipe
