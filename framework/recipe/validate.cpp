// Every check on values, in one place: the schema's allowed values, then each rule that involves
// one key's format or several keys at once. Types were checked when reading; this runs on any
// Recipe, loaded or built in code.
#include "recipe/diagnostics.h"
#include "recipe/recipe.h"
#include "recipe/schema.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/ops.h"

#include <fmt/format.h>

#include <algorithm>

namespace kiln::recipe {
namespace {

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

bool is_device(std::string_view device) {
  if (device == "cpu" || device == "cuda") return true;
  if (!device.starts_with("cuda:") || device.size() == 5) return false;
  return std::all_of(device.begin() + 5, device.end(), [](char c) { return c >= '0' && c <= '9'; });
}

} // namespace

void validate(Recipe& recipe, const KeyOrigins& origins) {
  // Where a message points: the key's position when load_recipe recorded it, else the file.
  const std::string file = recipe.source.empty() ? std::string("recipe") : recipe.source.string();
  auto where = [&](std::string_view key) -> std::string {
    const auto it = origins.find(key);
    return it != origins.end() ? it->second : file;
  };

  // Allowed values declared in the schema.
  for (const detail::Section& section : detail::schema()) {
    for (const detail::Field& field : section.fields) {
      if (field.choices.empty()) continue;
      const std::string value = field.get(recipe).get<std::string>();
      if (std::find(field.choices.begin(), field.choices.end(), value) != field.choices.end()) {
        continue;
      }
      user_error("{}: {}: expected one of {}; found '{}'{}", where(field.name()), field.name(),
                 detail::join(field.choices), value, detail::did_you_mean(value, field.choices));
    }
  }

  // [run]. The name becomes a directory name, so nothing that could escape or split a path.
  const RunSection& run = recipe.run;
  if (run.name.empty() || run.name == "." || run.name == ".." ||
      !std::all_of(run.name.begin(), run.name.end(), is_name_char)) {
    user_error(
        "{}: run.name: expected letters, digits, '.', '_' or '-' (it names the run directory); "
        "found '{}'",
        where("run.name"), run.name);
  }
  if (recipe.run.dir.empty()) recipe.run.dir = std::filesystem::path("runs") / run.name;

  // [model].
  const ModelSection& model = recipe.model;
  if (!is_device(model.device)) {
    user_error("{}: model.device: expected cpu, cuda or cuda:N (N a GPU index); found '{}'",
               where("model.device"), model.device);
  }
  const bool has_config = !model.config.is_null();
  const bool has_checkpoint = !model.checkpoint.empty();
  if (has_config && !model.config.is_object()) {
    user_error("{}: model.config: expected a table, found JSON {}", where("model.config"),
               model.config.type_name());
  }
  if (has_config && has_checkpoint) {
    user_error(
        "{}: model.checkpoint and [model.config] are mutually exclusive: a checkpoint brings its "
        "own config.json; remove one ([model.config] is at {})",
        where("model.checkpoint"), where("model.config"));
  }
  if (model.family.empty() && !has_checkpoint) {
    user_error(
        "{}: [model] needs a family or a checkpoint: add family = \"glm4_moe\" (or glm_moe_dsa, "
        "nemotron_v3) with a [model.config] table to build from scratch, or checkpoint = "
        "\"path/to/hf_model\" to start from weights",
        has_config ? where("model.config") : file);
  }
  if (!has_checkpoint && !has_config) {
    user_error(
        "{}: model.family '{}' has nothing to build from: add a [model.config] table (an HF "
        "config.json's keys) to build from scratch, or model.checkpoint",
        where("model.family"), model.family);
  }

  if (model.mtp_loss_scale < 0) {
    user_error("{}: model.mtp_loss_scale: expected >= 0, found {}", where("model.mtp_loss_scale"),
               model.mtp_loss_scale);
  }
  if (model.indexer_loss_coef <= 0) {
    user_error("{}: model.indexer_loss_coef: expected > 0, found {}",
               where("model.indexer_loss_coef"), model.indexer_loss_coef);
  }

  // [data], [train], [optim], [checkpoint]: numbers in range, then the rules between keys.
  auto at_least = [&](std::string_view key, int64_t value, int64_t minimum) {
    if (value < minimum) {
      user_error("{}: {}: expected an integer >= {}, found {}", where(key), key, minimum, value);
    }
  };
  const DataSection& data = recipe.data;
  const TrainSection& train = recipe.train;
  at_least("data.seq_len", data.seq_len, 2);
  at_least("train.steps", train.steps, 1);
  at_least("train.global_batch_tokens", train.global_batch_tokens, 0);
  at_least("train.micro_batch", train.micro_batch, 1);
  at_least("train.grad_accum", train.grad_accum, 1);
  at_least("train.val_every", train.val_every, 0);
  at_least("train.val_steps", train.val_steps, 1);
  at_least("train.log_every", train.log_every, 1);
  if (train.global_batch_tokens > 0) {
    const int64_t per_micro = train.micro_batch * data.seq_len;
    if (train.global_batch_tokens % per_micro != 0) {
      user_error(
          "{}: train.global_batch_tokens: expected a multiple of micro_batch * seq_len = {} * {} "
          "= {}, found {}; change it to {} or adjust micro_batch/seq_len",
          where("train.global_batch_tokens"), train.micro_batch, data.seq_len, per_micro,
          train.global_batch_tokens,
          std::max<int64_t>(1, train.global_batch_tokens / per_micro) * per_micro);
    }
    recipe.train.grad_accum = train.global_batch_tokens / per_micro;
  }
  if (!(train.clip_grad >= 0)) {
    user_error("{}: train.clip_grad: expected >= 0 (0 turns clipping off), found {}",
               where("train.clip_grad"), train.clip_grad);
  }
  const OptimSection& optim = recipe.optim;
  if (!(optim.lr > 0)) {
    user_error("{}: optim.lr: expected > 0, found {}", where("optim.lr"), optim.lr);
  }
  if (optim.betas.size() != 2 || !std::all_of(optim.betas.begin(), optim.betas.end(),
                                              [](double b) { return b >= 0 && b < 1; })) {
    user_error("{}: optim.betas: expected two numbers in [0, 1) like [0.9, 0.95], found {}",
               where("optim.betas"), nlohmann::json(optim.betas).dump());
  }
  if (!(optim.eps > 0)) {
    user_error("{}: optim.eps: expected > 0, found {}", where("optim.eps"), optim.eps);
  }
  if (!(optim.weight_decay >= 0)) {
    user_error("{}: optim.weight_decay: expected >= 0, found {}", where("optim.weight_decay"),
               optim.weight_decay);
  }
  at_least("optim.warmup_steps", optim.warmup_steps, 0);
  at_least("optim.schedule_steps", optim.schedule_steps, 0);
  at_least("train.sample_tokens", train.sample_tokens, 0);
  if (!(optim.min_lr >= 0 && optim.min_lr <= optim.lr)) {
    user_error("{}: optim.min_lr: expected between 0 and optim.lr = {}, found {}",
               where("optim.min_lr"), optim.lr, optim.min_lr);
  }
  if (!(optim.decay_fraction > 0 && optim.decay_fraction <= 1)) {
    user_error("{}: optim.decay_fraction: expected in (0, 1], found {}",
               where("optim.decay_fraction"), optim.decay_fraction);
  }
  at_least("checkpoint.every", recipe.checkpoint.every, 0);
  at_least("checkpoint.keep", recipe.checkpoint.keep, 0);
  if (recipe.checkpoint.resume.empty()) {
    user_error("{}: checkpoint.resume: expected auto, none or a checkpoint folder, found ''",
               where("checkpoint.resume"));
  }
  if (recipe.tokenizer.kind == "hf" && recipe.tokenizer.path.empty() && !has_checkpoint) {
    user_error(
        "{}: tokenizer.kind = \"hf\" needs tokenizer.path (an HF tokenizer.json) or a "
        "model.checkpoint that has one",
        where("tokenizer.kind"));
  }
  if (recipe.tokenizer.kind == "byte" && !recipe.tokenizer.path.empty()) {
    user_error(
        "{}: tokenizer.path is set but tokenizer.kind = \"byte\" ignores it; remove the path or "
        "use kind = \"hf\"",
        where("tokenizer.path"));
  }

  // [backend]. Backend names are the plugins' to define: the dispatcher checks them once plugins
  // are loaded. Op names are the SDK's, known now.
  if (recipe.backend.default_backend.empty()) {
    user_error("{}: backend.default: expected a backend name (auto, torch, cuda, ...), found ''",
               where("backend.default"));
  }
  const auto op_views = ops::op_names();
  const std::vector<std::string> op_names(op_views.begin(), op_views.end());
  for (const auto& [op, backend] : recipe.backend.ops) {
    const std::string key = fmt::format("backend.ops.{}", op);
    if (std::find(op_names.begin(), op_names.end(), op) == op_names.end()) {
      const std::string hint = detail::did_you_mean(op, op_names);
      user_error("{}: backend.ops: unknown op '{}'{}", where(key), op,
                 hint.empty() ? fmt::format("; ops: {}", detail::join(op_names)) : hint);
    }
    if (backend.empty()) {
      user_error("{}: {}: expected a backend name (torch, cuda, ...), found ''", where(key), key);
    }
  }

  // [plugins].
  for (size_t i = 0; i < recipe.plugins.dirs.size(); ++i) {
    if (recipe.plugins.dirs[i].empty()) {
      user_error("{}: plugins.dirs[{}]: expected a directory, found ''", where("plugins.dirs"), i);
    }
  }
}

void check_trainable(const Recipe& recipe, const KeyOrigins& origins) {
  const std::string file = recipe.source.empty() ? std::string("recipe") : recipe.source.string();
  auto where = [&](std::string_view key) -> std::string {
    const auto it = origins.find(key);
    return it != origins.end() ? it->second : file;
  };
  const DataSection& data = recipe.data;
  const TrainSection& train = recipe.train;
  if (!data.mock && data.train.empty()) {
    user_error(
        "{}: data.train: no training files; list JSONL files (train = [\"data/train.jsonl\"]) or "
        "set data.mock = true for random tokens",
        where("data.train"));
  }
  if (train.val_every > 0 && data.validation.empty() && !data.mock) {
    user_error(
        "{}: train.val_every = {} but data.validation lists no files; add validation files or "
        "set train.val_every = 0",
        where("train.val_every"), train.val_every);
  }
}

} // namespace kiln::recipe
