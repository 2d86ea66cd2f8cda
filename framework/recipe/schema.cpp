// The schema table (at the bottom) and the codecs that read each C++ member type from TOML.
#include "recipe/schema.h"

#include "kiln/sdk/error.h"

#include <fmt/format.h>

#include <type_traits>

namespace kiln::recipe::detail {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// One codec per member type: its ValueType, how to read it from a TOML node, how to show it as
// JSON. A member of any other type fails to compile in make_field, which is the point.
template <class T>
struct Codec;

template <>
struct Codec<std::string> {
  static constexpr ValueType kType = ValueType::kString;
  static std::string read(const toml::node& node, const ReadContext& ctx, std::string_view path) {
    if (const auto* value = node.as_string()) return value->get();
    ctx.type_error(node, path, "a string");
  }
  static json get(const std::string& value) { return value; }
};

template <>
struct Codec<fs::path> {
  static constexpr ValueType kType = ValueType::kPath;
  static fs::path read(const toml::node& node, const ReadContext& ctx, std::string_view path) {
    return ctx.resolve_path(Codec<std::string>::read(node, ctx, path), node);
  }
  static json get(const fs::path& value) { return value.string(); }
};

template <>
struct Codec<int64_t> {
  static constexpr ValueType kType = ValueType::kInteger;
  static int64_t read(const toml::node& node, const ReadContext& ctx, std::string_view path) {
    if (const auto* value = node.as_integer()) return value->get();
    ctx.type_error(node, path, "an integer");
  }
  static json get(int64_t value) { return value; }
};

template <>
struct Codec<double> {
  static constexpr ValueType kType = ValueType::kFloat;
  static double read(const toml::node& node, const ReadContext& ctx, std::string_view path) {
    if (const auto* value = node.as_floating_point()) return value->get();
    // `lr = 1` is a TOML integer; rejecting it would be pedantry.
    if (const auto* value = node.as_integer()) return static_cast<double>(value->get());
    ctx.type_error(node, path, "a float");
  }
  static json get(double value) { return value; }
};

template <>
struct Codec<bool> {
  static constexpr ValueType kType = ValueType::kBool;
  static bool read(const toml::node& node, const ReadContext& ctx, std::string_view path) {
    if (const auto* value = node.as_boolean()) return value->get();
    ctx.type_error(node, path, "a boolean (true or false)");
  }
  static json get(bool value) { return value; }
};

template <class T>
struct Codec<std::vector<T>> {
  static constexpr ValueType kType =
      std::is_same_v<T, fs::path> ? ValueType::kPathList : ValueType::kStringList;
  static std::vector<T> read(const toml::node& node, const ReadContext& ctx,
                             std::string_view path) {
    const auto* array = node.as_array();
    if (!array) ctx.type_error(node, path, "an array of strings");
    std::vector<T> out;
    for (size_t i = 0; i < array->size(); ++i) {
      out.push_back(Codec<T>::read(*array->get(i), ctx, fmt::format("{}[{}]", path, i)));
    }
    return out;
  }
  static json get(const std::vector<T>& value) {
    json out = json::array();
    for (const T& item : value) out.push_back(Codec<T>::get(item));
    return out;
  }
};

template <>
struct Codec<std::vector<double>> {
  static constexpr ValueType kType = ValueType::kFloatList;
  static std::vector<double> read(const toml::node& node, const ReadContext& ctx,
                                  std::string_view path) {
    const auto* array = node.as_array();
    if (!array) ctx.type_error(node, path, "an array of numbers");
    std::vector<double> out;
    for (size_t i = 0; i < array->size(); ++i) {
      out.push_back(Codec<double>::read(*array->get(i), ctx, fmt::format("{}[{}]", path, i)));
    }
    return out;
  }
  static json get(const std::vector<double>& value) { return value; }
};

json node_to_json(const toml::node& node, const ReadContext& ctx, const std::string& path) {
  switch (node.type()) {
    case toml::node_type::string:
      return node.as_string()->get();
    case toml::node_type::integer:
      return node.as_integer()->get();
    case toml::node_type::floating_point:
      return node.as_floating_point()->get();
    case toml::node_type::boolean:
      return node.as_boolean()->get();
    case toml::node_type::array: {
      json out = json::array();
      const auto& array = *node.as_array();
      for (size_t i = 0; i < array.size(); ++i) {
        out.push_back(node_to_json(*array.get(i), ctx, fmt::format("{}[{}]", path, i)));
      }
      return out;
    }
    case toml::node_type::table: {
      json out = json::object();
      for (const auto& [key, value] : *node.as_table()) {
        const std::string name(key.str());
        out[name] = node_to_json(value, ctx, fmt::format("{}.{}", path, name));
      }
      return out;
    }
    default:
      // Dates and times have no JSON form, and no HF config uses them.
      ctx.type_error(node, path, "a string, number, boolean, array or table");
  }
}

template <>
struct Codec<json> {
  static constexpr ValueType kType = ValueType::kTable;
  static json read(const toml::node& node, const ReadContext& ctx, std::string_view path) {
    if (!node.is_table()) ctx.type_error(node, path, "a table");
    return node_to_json(node, ctx, std::string(path));
  }
  static json get(const json& value) { return value; }
};

template <>
struct Codec<std::map<std::string, std::string>> {
  static constexpr ValueType kType = ValueType::kStringMap;
  static std::map<std::string, std::string> read(const toml::node& node, const ReadContext& ctx,
                                                 std::string_view path) {
    const auto* table = node.as_table();
    if (!table) ctx.type_error(node, path, "a table of name = \"string\" entries");
    std::map<std::string, std::string> out;
    for (const auto& [key, value] : *table) {
      const std::string entry = fmt::format("{}.{}", path, key.str());
      out[std::string(key.str())] = Codec<std::string>::read(value, ctx, entry);
      // Entries are checked by validate() (an unknown op, say): point it at the entry's key.
      ctx.origins->insert_or_assign(entry, ctx.locator->where(key.source(), entry));
    }
    return out;
  }
  static json get(const std::map<std::string, std::string>& value) { return value; }
};

// ---- building the table -------------------------------------------------------------------------

struct KeyOptions {
  std::vector<std::string> choices;
  PathBase path_base = PathBase::kAsWritten;
};

template <class S, class T>
struct Key {
  T S::*member;
  std::string_view name;
  std::string_view doc;
  KeyOptions options;
};

template <class S, class T>
Key<S, T> key(T S::*member, std::string_view name, std::string_view doc, KeyOptions options = {}) {
  return {member, name, doc, std::move(options)};
}

template <class S, class T>
Field make_field(S Recipe::*section, std::string_view section_name, Key<S, T> key) {
  Field field;
  field.section = section_name;
  field.key = key.name;
  field.doc = key.doc;
  field.type = Codec<T>::kType;
  field.choices = std::move(key.options.choices);
  field.path_base = key.options.path_base;
  const auto member = key.member;
  field.read = [section, member](Recipe& recipe, const toml::node& node, const ReadContext& ctx) {
    (recipe.*section).*member = Codec<T>::read(node, ctx, ctx.field->name());
  };
  field.get = [section, member](const Recipe& recipe) {
    return Codec<T>::get((recipe.*section).*member);
  };
  return field;
}

template <class S, class... Ts>
Section section(S Recipe::*member, std::string_view name, std::string_view doc,
                Key<S, Ts>... keys) {
  Section out{name, doc, {}};
  (out.fields.push_back(make_field(member, name, std::move(keys))), ...);
  return out;
}

std::vector<std::string> key_names(const Section& section) {
  std::vector<std::string> out;
  for (const Field& field : section.fields) out.emplace_back(field.key);
  return out;
}

std::vector<std::string> section_names() {
  std::vector<std::string> out;
  for (const Section& section : schema()) out.emplace_back(section.name);
  return out;
}

} // namespace

// The schema. Order is to_toml's order; a key's default is its member initializer in recipe.h.
// Doc lines are printed as comments by to_toml (`kiln recipe show`), so they speak to users.
const std::vector<Section>& schema() {
  static const std::vector<Section> kSchema = {
      section(&Recipe::run, "run", "The run: its name, output directory and seed.",
              key(&RunSection::name, "name",
                  "Names the run and its directory: letters, digits, '.', '_' and '-'."),
              key(&RunSection::dir, "dir",
                  "Output directory; default runs/<name>. A relative path starts at the current "
                  "directory at run time."),
              key(&RunSection::seed, "seed", "Seeds every random number generator of the run.")),
      section(&Recipe::model, "model",
              "The model: a family built from [model.config], or an HF checkpoint.",
              key(&ModelSection::family, "family",
                  "Model family plugin (glm4_moe, glm_moe_dsa, nemotron_v3); optional with a "
                  "checkpoint, whose config.json names it."),
              key(&ModelSection::checkpoint, "checkpoint",
                  "HF model directory (config.json + *.safetensors) to start from; excludes "
                  "[model.config]. A relative path starts at the current directory."),
              key(&ModelSection::config, "config",
                  "HF config (config.json's keys) of a model built from scratch; excludes "
                  "checkpoint."),
              key(&ModelSection::dtype, "dtype", "Parameter and compute dtype.",
                  {.choices = {"float32", "bfloat16"}}),
              key(&ModelSection::device, "device", "Where the model runs: cpu, cuda or cuda:N."),
              key(&ModelSection::activation_checkpointing, "activation_checkpointing",
                  "Recompute each block's activations in backward: less memory, same gradients."),
              key(&ModelSection::mtp_loss_scale, "mtp_loss_scale",
                  "Weight of the multi-token-prediction loss; 0 leaves the MTP layers out."),
              key(&ModelSection::indexer_loss, "indexer_loss",
                  "DSA indexer training loss: none, or kl (DeepSeek-V3.2's KL to the attention).",
                  {.choices = {"none", "kl"}}),
              key(&ModelSection::indexer_loss_coef, "indexer_loss_coef",
                  "Weight of the indexer loss.")),
      section(&Recipe::tokenizer, "tokenizer", "How text becomes token ids.",
              key(&TokenizerSection::kind, "kind",
                  "byte (built in: one id per byte), hf (an HF tokenizer.json), or auto: hf when "
                  "a path is given or the checkpoint has a tokenizer.json, else byte.",
                  {.choices = {"auto", "byte", "hf"}}),
              key(&TokenizerSection::path, "path",
                  "HF tokenizer.json or its folder; a relative path starts at the recipe file's "
                  "directory.",
                  {.path_base = PathBase::kFileDir})),
      section(
          &Recipe::data, "data", "Training and validation data and how it is batched.",
          key(&DataSection::train, "train",
              "JSONL files to train on; relative paths start at the recipe file's directory.",
              {.path_base = PathBase::kFileDir}),
          key(&DataSection::validation, "validation",
              "JSONL files for the validation loss; relative paths as for train.",
              {.path_base = PathBase::kFileDir}),
          key(&DataSection::format, "format",
              "text: {\"text\"}; prompt_completion: {\"prompt\", \"completion\"}; chat: "
              "{\"messages\": [{\"role\", \"content\"}]}.",
              {.choices = {"text", "prompt_completion", "chat"}}),
          key(&DataSection::seq_len, "seq_len", "Tokens per sequence."),
          key(&DataSection::pack, "pack",
              "Pack whole documents into each micro-batch (attention never crosses them); "
              "false: one document per sequence."),
          key(&DataSection::answer_only_loss, "answer_only_loss",
              "prompt_completion and chat: loss only on completion and assistant tokens."),
          key(&DataSection::drop_overlong, "drop_overlong",
              "Drop examples longer than seq_len (false: truncate them). Text documents are "
              "always split into seq_len pieces."),
          key(&DataSection::shuffle, "shuffle", "Shuffle the documents each epoch (by run.seed)."),
          key(&DataSection::add_eos, "add_eos",
              "End each document with the tokenizer's end-of-text token, when it has one."),
          key(&DataSection::mock, "mock",
              "Random tokens instead of files (benchmarks); train and validation unused.")),
      section(&Recipe::train, "train", "The training loop.",
              key(&TrainSection::steps, "steps", "Optimizer steps."),
              key(&TrainSection::global_batch_tokens, "global_batch_tokens",
                  "Tokens per optimizer step; sets grad_accum = this / (micro_batch * seq_len). "
                  "0: use grad_accum."),
              key(&TrainSection::micro_batch, "micro_batch",
                  "Sequences of seq_len tokens per forward pass."),
              key(&TrainSection::grad_accum, "grad_accum",
                  "Micro-batches whose gradients add up to one step."),
              key(&TrainSection::val_every, "val_every",
                  "Validate every this many steps (and at the end); 0: never."),
              key(&TrainSection::val_steps, "val_steps", "Micro-batches per validation."),
              key(&TrainSection::clip_grad, "clip_grad",
                  "Clip the global gradient norm to this; 0: no clipping."),
              key(&TrainSection::log_every, "log_every", "Log every this many steps."),
              key(&TrainSection::sample_prompt, "sample_prompt",
                  "After training, print a greedy continuation of this text (\"\": none)."),
              key(&TrainSection::sample_tokens, "sample_tokens", "Tokens in that sample.")),
      section(
          &Recipe::optim, "optim", "The optimizer and learning-rate schedule.",
          key(&OptimSection::name, "name", "Optimizer.", {.choices = {"adamw"}}),
          key(&OptimSection::lr, "lr", "Peak learning rate."),
          key(&OptimSection::betas, "betas", "Adam's beta1 and beta2."),
          key(&OptimSection::eps, "eps", "Adam's epsilon."),
          key(&OptimSection::weight_decay, "weight_decay",
              "Decoupled weight decay of matrices; 1-D parameters (biases, norm weights) get "
              "none."),
          key(&OptimSection::schedule, "schedule",
              "Learning rate after warm-up: cosine or linear decay to min_lr, constant, or wsd "
              "(warm-up, stable, decay over the last decay_fraction of steps).",
              {.choices = {"cosine", "linear", "constant", "wsd"}}),
          key(&OptimSection::warmup_steps, "warmup_steps", "Steps of linear warm-up from 0 to lr."),
          key(&OptimSection::min_lr, "min_lr", "Learning rate at the end of the decay."),
          key(&OptimSection::decay_fraction, "decay_fraction",
              "wsd: fraction of the steps spent decaying."),
          key(&OptimSection::schedule_steps, "schedule_steps",
              "Steps the schedule spans; 0: train.steps. Fix it to stop early and resume "
              "later on the same curve.")),
      section(&Recipe::checkpoint, "checkpoint", "Saving and resuming.",
              key(&CheckpointSection::every, "every",
                  "Save every this many steps; 0: only at the end."),
              key(&CheckpointSection::keep, "keep", "Newest checkpoints to keep; 0 keeps all."),
              key(&CheckpointSection::resume, "resume",
                  "auto: continue from the run directory's LATEST checkpoint if there is one; "
                  "none: start fresh; or a checkpoint folder (step-N) to continue from."),
              key(&CheckpointSection::save_final, "save_final", "Save after the last step."),
              key(&CheckpointSection::format, "format",
                  "hf: HF layout (config.json + safetensors) loadable by transformers.",
                  {.choices = {"hf"}})),
      section(&Recipe::backend, "backend",
              "Kernel selection: per-op override > default backend > the auto policy.",
              key(&BackendSection::default_backend, "default",
                  "Backend for every op not listed in [backend.ops]; auto picks the fastest "
                  "eligible kernel."),
              key(&BackendSection::ops, "ops",
                  "Per-op backend, op = \"backend\"; ops by their SDK names (rms_norm, "
                  "attention, ...)."),
              key(&BackendSection::strict, "strict",
                  "true: a missing kernel is an error instead of a fallback to another backend.")),
      section(&Recipe::plugins, "plugins", "Where to find plugins besides the defaults.",
              key(&PluginsSection::dirs, "dirs",
                  "Plugin directories; a relative entry starts at the directory of the recipe "
                  "file that lists it.",
                  {.path_base = PathBase::kFileDir})),
  };
  return kSchema;
}

const Section* find_section(std::string_view name) {
  for (const Section& section : schema()) {
    if (section.name == name) return &section;
  }
  return nullptr;
}

const Field* Section::find(std::string_view key) const {
  for (const Field& field : fields) {
    if (field.key == key) return &field;
  }
  return nullptr;
}

std::string Field::name() const {
  return fmt::format("{}.{}", section, key);
}

std::string_view Field::expected() const {
  switch (type) {
    case ValueType::kString:
    case ValueType::kPath:
      return "a string";
    case ValueType::kInteger:
      return "an integer";
    case ValueType::kFloat:
      return "a float";
    case ValueType::kBool:
      return "a boolean (true or false)";
    case ValueType::kStringList:
    case ValueType::kPathList:
      return "an array of strings";
    case ValueType::kFloatList:
      return "an array of numbers";
    case ValueType::kTable:
      return "a table";
    case ValueType::kStringMap:
      return "a table of name = \"string\" entries";
  }
  return "a value";
}

void ReadContext::type_error(const toml::node& node, std::string_view key_path,
                             std::string_view expected) const {
  user_error("{}: {}: expected {}, found {}", where(node, key_path), key_path, expected,
             type_name(node));
}

std::filesystem::path ReadContext::resolve_path(const std::string& text,
                                                const toml::node& node) const {
  fs::path path(text);
  if (field->path_base == PathBase::kAsWritten || text.empty() || path.is_absolute()) return path;
  // Absolute, so that to_toml's output means the same wherever it is saved. A node made from
  // override text has no file: the current directory applies.
  const auto& file = node.source().path;
  const fs::path base = file ? fs::path(*file).parent_path() : fs::path();
  return fs::absolute(base / path).lexically_normal();
}

std::string unknown_key_message(const Section& section, std::string_view key) {
  const std::vector<std::string> keys = key_names(section);
  if (auto near = nearest(key, keys)) {
    return fmt::format("unknown key '{}.{}' (did you mean '{}.{}'?)", section.name, key,
                       section.name, *near);
  }
  // A key under the wrong header ("seed" in [model]) is likelier than a typo this far off.
  for (const Section& other : schema()) {
    if (other.find(key)) {
      return fmt::format("unknown key '{}.{}' (did you mean '{}.{}'?)", section.name, key,
                         other.name, key);
    }
  }
  return fmt::format("unknown key '{}.{}'; valid keys in [{}]: {}", section.name, key, section.name,
                     join(keys));
}

std::string unknown_top_level_message(std::string_view key, bool is_table) {
  const std::vector<std::string> sections = section_names();
  if (is_table) {
    if (auto near = nearest(key, sections)) {
      return fmt::format("unknown section '{}' (did you mean '{}'?)", key, *near);
    }
    return fmt::format("unknown section '{}'; valid sections: {}", key, join(sections));
  }
  for (const Section& section : schema()) {
    if (section.find(key)) {
      return fmt::format("unknown key '{}' (did you mean '{}.{}'? keys go under a [section])", key,
                         section.name, key);
    }
  }
  return fmt::format(
      "unknown key '{}' outside any section; keys go under a [section] ({}), only '{}' stands "
      "alone",
      key, join(sections), kExtendsKey);
}

std::string unknown_dotted_key_message(std::string_view dotted) {
  std::vector<std::string> all;
  for (const Section& section : schema()) {
    for (const Field& field : section.fields) all.push_back(field.name());
  }
  if (auto near = nearest(dotted, all)) {
    return fmt::format("unknown key '{}' (did you mean '{}'?)", dotted, *near);
  }
  const auto dot = dotted.find('.');
  if (const Section* section = find_section(dotted.substr(0, dot))) {
    return unknown_key_message(*section, dotted.substr(dot + 1));
  }
  return fmt::format("unknown key '{}'; valid sections: {}", dotted, join(section_names()));
}

} // namespace kiln::recipe::detail
