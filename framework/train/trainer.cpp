#include "train/trainer.h"

#include "core/model_registry.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "generate/generator.h"
#include "io/checkpoint.h"
#include "io/files.h"
#include "io/tokenizer.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"
#include "kiln/sdk/ops/linear_cross_entropy.h"
#include "train/optimizer.h"
#include "train/run_state.h"
#include "train/schedule.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <fstream>
#include <map>

namespace kiln::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kShardBytes = 5ULL << 30; // HF's default max_shard_size, "5GB"

// ---- signals: SIGINT / SIGTERM ask the loop to save and stop --------------------------------

std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int signal) {
  g_stop_signal.store(signal);
  std::signal(signal, SIG_DFL); // a second one stops at once (the save is atomic anyway)
}

class SignalScope {
 public:
  SignalScope() {
    g_stop_signal.store(0);
    previous_int_ = std::signal(SIGINT, on_stop_signal);
    previous_term_ = std::signal(SIGTERM, on_stop_signal);
  }
  ~SignalScope() {
    std::signal(SIGINT, previous_int_);
    std::signal(SIGTERM, previous_term_);
  }

 private:
  using Handler = void (*)(int);
  Handler previous_int_;
  Handler previous_term_;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// ---- set-up pieces --------------------------------------------------------------------------

c10::Device parse_device(const std::string& text) {
  const c10::Device device(text);
  KILN_CHECK_USER(!device.is_cuda() || at::hasCUDA(),
                  "model.device = \"{}\": no CUDA device is available here; use \"cpu\"", text);
  const auto gpus = static_cast<int64_t>(at::getNumGPUs());
  KILN_CHECK_USER(!device.is_cuda() || !device.has_index() || device.index() < gpus,
                  "model.device = \"{}\": this machine has {} CUDA device(s), cuda:0 to cuda:{}",
                  text, gpus, gpus - 1);
  return device;
}

std::unique_ptr<io::Tokenizer> make_tokenizer(const recipe::Recipe& recipe) {
  const auto& section = recipe.tokenizer;
  fs::path file = section.path;
  if (!file.empty() && fs::is_directory(file)) file /= "tokenizer.json";
  if (file.empty() && section.kind != "byte" && !recipe.model.checkpoint.empty() &&
      fs::exists(recipe.model.checkpoint / "tokenizer.json")) {
    file = recipe.model.checkpoint / "tokenizer.json";
  }
  if (section.kind == "byte" || (section.kind == "auto" && file.empty())) {
    return io::Tokenizer::bytes();
  }
  KILN_CHECK_USER(!file.empty(),
                  "tokenizer.kind = \"hf\" but no tokenizer.json: set tokenizer.path or use a "
                  "model.checkpoint that has one");
  return io::Tokenizer::from_file(file);
}

std::optional<int64_t> eos_token(const json& config, const io::Tokenizer& tokenizer) {
  const auto it = config.find("eos_token_id");
  if (it != config.end()) {
    if (it->is_number_integer()) return it->get<int64_t>();
    if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
      return (*it)[0].get<int64_t>();
    }
  }
  if (auto id = tokenizer.eos_id()) return id; // tokenizer_config.json's eos_token
  for (const char* name : {"<|endoftext|>", "</s>", "<|end_of_text|>"}) {
    if (auto id = tokenizer.token_to_id(name)) return id;
  }
  return std::nullopt;
}

// RNG states of the CPU generator (and CUDA's, when present): saved so that anything random
// after a resume (dropout-like ops, sampling) continues as it would have.
void save_rng(std::map<std::string, at::Tensor>& tensors) {
  tensors["rng/cpu"] = at::detail::getDefaultCPUGenerator().get_state();
}

void restore_rng(const std::map<std::string, at::Tensor>& tensors) {
  if (const auto it = tensors.find("rng/cpu"); it != tensors.end()) {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(it->second.clone());
  }
}

// Rewrites metrics.jsonl keeping only lines of steps <= `step` (a crash may have logged steps
// after the checkpoint the run resumes from).
void truncate_metrics(const fs::path& file, int64_t step) {
  const auto text = io::read_file(file);
  if (!text) return;
  std::string kept;
  size_t begin = 0;
  while (begin < text->size()) {
    size_t end = text->find('\n', begin);
    if (end == std::string::npos) end = text->size();
    const std::string line = text->substr(begin, end - begin);
    begin = end + 1;
    try {
      const json record = json::parse(line);
      if (record.value("step", int64_t{0}) <= step) kept += line + "\n";
    } catch (const json::exception&) {
      // A torn last line of a crashed run: dropped.
    }
  }
  io::replace_file(file, kept);
}

// The resolved table as `kiln run` prints it once, after the first step: one line per (op,
// device, dtype) with what was asked for, what ran and the policy's notes (its measurements).
std::string backends_table(const fs::path& saved_to) {
  const auto resolved = sdk::Dispatcher::global().resolved();
  std::vector<std::array<std::string, 3>> rows;
  size_t widths[2] = {0, 0};
  for (const auto& r : resolved) {
    rows.push_back(
        {fmt::format("{} {} {}", r.op, c10::DeviceTypeName(r.device, true), dtype_name(r.dtype)),
         fmt::format("{} -> {}", r.requested, r.chosen), r.note});
    widths[0] = std::max(widths[0], rows.back()[0].size());
    widths[1] = std::max(widths[1], rows.back()[1].size());
  }
  std::string out = fmt::format("backends ({}):", saved_to.string());
  for (const auto& [what, choice, note] : rows) {
    out += fmt::format("\n  {:<{}}  {:<{}}", what, widths[0], choice, widths[1]);
    if (!note.empty()) out += fmt::format("  {}", note);
    while (!out.empty() && out.back() == ' ') out.pop_back();
  }
  return out;
}

// A fingerprint of what decides the data order: a resume with different settings continues, but
// says so.
json data_setup(const recipe::Recipe& recipe) {
  json files = json::array();
  for (const auto& file : recipe.data.train) files.push_back(file.string());
  return {{"train", files},
          {"format", recipe.data.format},
          {"seq_len", recipe.data.seq_len},
          {"pack", recipe.data.pack},
          {"shuffle", recipe.data.shuffle},
          {"mock", recipe.data.mock},
          {"micro_batch", recipe.train.micro_batch},
          {"grad_accum", recipe.train.grad_accum},
          {"seed", recipe.run.seed}};
}

// ---- one micro-batch ------------------------------------------------------------------------

// What a step (or a validation) sums over its micro-batches. Kept on the device and read once at
// the end, so that micro-batches queue up without waiting for the host in between.
struct Totals {
  at::Tensor lm_loss_sum;                // fp32 scalar: summed token losses
  std::map<std::string, at::Tensor> aux; // family losses, weighted as back-propagated
  std::map<int64_t, at::Tensor> load;    // tokens per expert, per MoE layer

  static void add(at::Tensor& into, const at::Tensor& value) {
    into = into.defined() ? into + value : value;
  }
};

void forward_backward(sdk::Model& model, const data::MicroBatch& batch, const c10::Device& device,
                      double denominator, double aux_weight, bool backward, Totals& totals) {
  sdk::ForwardInput input;
  input.input_ids = batch.input_ids.to(device);
  input.cu_seqlens = batch.cu_seqlens;
  input.labels = batch.labels.to(device);
  input.compute_logits = false;
  sdk::ForwardOutput output = model.forward(input);
  ops::LinearCrossEntropyArgs args{
      .hidden = output.hidden, .weight = model.lm_head_weight(), .labels = input.labels};
  args.reduction = ops::LossReduction::kSum;
  const at::Tensor lm_sum = ops::linear_cross_entropy(args).loss;
  at::Tensor loss = lm_sum / denominator;
  for (const auto& [name, value] : output.aux_losses) {
    loss = loss + value * aux_weight;
    Totals::add(totals.aux[name], value.detach() * aux_weight);
  }
  if (backward) loss.backward();
  Totals::add(totals.lm_loss_sum, lm_sum.detach());
  for (const auto& [layer, counts] : output.expert_load) {
    Totals::add(totals.load[layer], counts.detach());
  }
}

std::string greedy_sample(sdk::Model& model, const io::Tokenizer& tokenizer,
                          const std::string& prompt, int64_t tokens, std::optional<int64_t> eos) {
  const std::vector<int64_t> ids = tokenizer.encode(prompt);
  if (ids.empty()) return prompt;
  generate::GenerationOptions options;
  options.max_new_tokens = tokens;
  if (eos) options.stop_ids = {*eos};
  // The family's cache when it has one; otherwise full forwards.
  options.use_cache = dynamic_cast<sdk::CachedDecoding*>(&model) != nullptr;
  std::vector<int64_t> generated = generate::Generator(model, options).generate({ids}).tokens[0];
  if (eos && !generated.empty() && generated.back() == *eos) generated.pop_back();
  return prompt + tokenizer.decode(generated);
}

// Blocks until the work queued on `device` is done (the CPU runs synchronously).
void wait_for(const c10::Device& device) {
  if (device.is_cpu()) return;
  const auto* impl = c10::impl::getDeviceGuardImpl(device.type());
  impl->synchronizeDevice(device.has_index() ? device.index() : impl->getDevice().index());
}

} // namespace

sdk::DispatchConfig dispatch_config(const recipe::BackendSection& backend) {
  sdk::DispatchConfig config;
  config.default_backend = backend.default_backend;
  config.ops.insert(backend.ops.begin(), backend.ops.end());
  config.strict = backend.strict;
  return config;
}

json resolved_backends() {
  json out = json::array();
  for (const auto& r : sdk::Dispatcher::global().resolved()) {
    out.push_back({{"op", r.op},
                   {"device", c10::DeviceTypeName(r.device, /*lower_case=*/true)},
                   {"dtype", dtype_name(r.dtype)},
                   {"requested", r.requested},
                   {"chosen", r.chosen},
                   {"note", r.note}});
  }
  return out;
}

TrainResult run(const recipe::Recipe& recipe, const recipe::KeyOrigins& origins,
                const TrainOptions& options) {
  recipe::check_trainable(recipe, origins);
  const c10::Device device = parse_device(recipe.model.device);
  const auto dtype = parse_dtype(recipe.model.dtype);
  KILN_CHECK_USER(dtype.has_value(), "model.dtype: unknown dtype '{}'", recipe.model.dtype);
  TrainResult result;
  result.run_dir = recipe.run.dir;
  const fs::path& run_dir = result.run_dir;
  fs::create_directories(run_dir);

  // Where to continue from.
  std::optional<fs::path> resume_from;
  const std::string& resume = recipe.checkpoint.resume;
  if (resume == "auto") {
    resume_from = latest_checkpoint(run_dir);
  } else if (resume != "none") {
    resume_from = fs::path(resume);
    KILN_CHECK_USER(fs::is_directory(*resume_from),
                    "checkpoint.resume = \"{}\": no such checkpoint folder", resume);
  } else if (const auto existing = latest_checkpoint(run_dir)) {
    user_error(
        "{} already has checkpoints (LATEST = {}); checkpoint.resume = \"none\" would mix two runs "
        "in one folder: use resume = \"auto\" to continue, or another run.name / run.dir",
        run_dir.string(), existing->filename().string());
  }
  SavedState saved;
  if (resume_from) saved = load_saved_state(*resume_from);
  const int64_t total_steps = recipe.train.steps;
  result.first_step = saved.step;
  result.last_step = saved.step;
  if (saved.step >= total_steps) {
    fmt::print(stderr, "{}: already at step {} of train.steps = {}; nothing to do\n",
               resume_from->string(), saved.step, total_steps);
    return result;
  }

  // The model.
  const bool from_checkpoint = !recipe.model.checkpoint.empty();
  const json config =
      from_checkpoint ? io::read_config(recipe.model.checkpoint) : recipe.model.config;
  const std::string config_where =
      from_checkpoint ? (recipe.model.checkpoint / "config.json").string() : "[model.config]";
  const auto& registry = core::ModelRegistry::global();
  const auto& family = recipe.model.family.empty() ? registry.find_for_config(config, config_where)
                                                   : registry.find(recipe.model.family);
  sdk::ModelOptions model_options;
  model_options.device = device;
  model_options.dtype = *dtype;
  model_options.seed = static_cast<uint64_t>(recipe.run.seed);
  model_options.activation_checkpointing = recipe.model.activation_checkpointing;
  model_options.mtp_loss_scale = recipe.model.mtp_loss_scale;
  model_options.indexer_loss = recipe.model.indexer_loss;
  model_options.indexer_loss_coef = recipe.model.indexer_loss_coef;
  auto model = family.family.create(
      {.json = config,
       .source = from_checkpoint ? recipe.model.checkpoint / "config.json" : fs::path()},
      model_options);
  if (resume_from) {
    model->load_weights(io::CheckpointReader(*resume_from));
  } else if (from_checkpoint) {
    model->load_weights(io::CheckpointReader(recipe.model.checkpoint));
  }
  const int64_t vocab = config.value("vocab_size", int64_t{0});

  // Tokenizer and data.
  const auto tokenizer = make_tokenizer(recipe);
  KILN_CHECK_USER(tokenizer->vocab_size() <= vocab,
                  "the tokenizer has {} ids but the model's vocab_size is {}: every id must have "
                  "an embedding; use a matching tokenizer or a larger vocab_size",
                  tokenizer->vocab_size(), vocab);
  const auto format = data::parse_format(recipe.data.format);
  data::EncodeOptions encode{.format = *format,
                             .seq_len = recipe.data.seq_len,
                             .answer_only_loss = recipe.data.answer_only_loss,
                             .drop_overlong = recipe.data.drop_overlong,
                             .family = family.family.name};
  const auto eos = eos_token(config, *tokenizer);
  if (recipe.data.add_eos) encode.eos_id = eos;
  data::LoaderOptions loader_options{.micro_batch = recipe.train.micro_batch,
                                     .seq_len = recipe.data.seq_len,
                                     .pack = recipe.data.pack,
                                     .shuffle = recipe.data.shuffle,
                                     .seed = static_cast<uint64_t>(recipe.run.seed),
                                     .rank = options.rank,
                                     .world = options.world};
  data::LoaderState loader_state;
  if (resume_from) {
    loader_state = data::LoaderState::from_json(saved.json.value("data", json::object()));
    if (saved.json.value("data_setup", json()) != data_setup(recipe)) {
      fmt::print(stderr,
                 "warning: the data settings differ from the checkpoint's; the data order "
                 "continues from its saved position but will not match the original run\n");
    }
  }
  data::Corpus train_corpus, val_corpus;
  std::unique_ptr<data::Loader> train_loader;
  std::unique_ptr<data::MockLoader> mock_loader;
  if (recipe.data.mock) {
    mock_loader = std::make_unique<data::MockLoader>(vocab, loader_options, loader_state);
  } else {
    train_corpus = data::Corpus::load(recipe.data.train, *tokenizer, encode);
    train_loader = std::make_unique<data::Loader>(train_corpus, loader_options, loader_state);
    if (!recipe.data.validation.empty()) {
      val_corpus = data::Corpus::load(recipe.data.validation, *tokenizer, encode);
    }
  }
  auto next_batch = [&] { return mock_loader ? mock_loader->next() : train_loader->next(); };
  auto loader_position = [&] {
    return (mock_loader ? mock_loader->state() : train_loader->state()).to_json();
  };

  // Optimizer and schedule.
  AdamW optimizer(model->named_parameters(), {.beta1 = recipe.optim.betas[0],
                                              .beta2 = recipe.optim.betas[1],
                                              .eps = recipe.optim.eps,
                                              .weight_decay = recipe.optim.weight_decay});
  if (resume_from) {
    optimizer.load_state(saved.tensors, saved.step, resume_from->string());
    restore_rng(saved.tensors);
  }
  const Schedule schedule{
      .kind = parse_schedule(recipe.optim.schedule),
      .lr = recipe.optim.lr,
      .min_lr = recipe.optim.min_lr,
      .warmup_steps = recipe.optim.warmup_steps,
      .total_steps = recipe.optim.schedule_steps > 0 ? recipe.optim.schedule_steps : total_steps,
      .decay_fraction = recipe.optim.decay_fraction};

  // The run folder.
  io::replace_file(run_dir / "recipe.toml", recipe::to_toml(recipe));
  const fs::path metrics_file = run_dir / "metrics.jsonl";
  if (resume_from) {
    truncate_metrics(metrics_file, saved.step);
  } else {
    io::replace_file(metrics_file, "");
  }
  std::ofstream metrics(metrics_file, std::ios::app);
  auto record = [&](const json& line) { metrics << line.dump() << "\n" << std::flush; };

  Progress progress(options.log_format, total_steps, saved.step);
  progress.message(fmt::format(
      "kiln run {}: {} ({} parameters, {} on {}), {} steps{}", recipe.run.name, family.family.name,
      [&] {
        int64_t n = 0;
        for (const auto& [name, p] : model->named_parameters()) n += p.numel();
        return n;
      }(),
      recipe.model.dtype, device.str(), total_steps,
      resume_from ? fmt::format(", resuming at step {} from {}", saved.step, resume_from->string())
                  : std::string()));
  if (!recipe.data.mock) {
    progress.message(
        fmt::format("data: {} training documents, {} tokens ({} tokenizer){}", train_corpus.size(),
                    train_corpus.total_tokens(), tokenizer->kind(),
                    train_corpus.dropped()
                        ? fmt::format(", {} dropped as longer than seq_len", train_corpus.dropped())
                        : std::string()));
  }

  auto save = [&](int64_t step) {
    SavedState state;
    state.json = {{"step", step},
                  {"data", loader_position()},
                  {"data_setup", data_setup(recipe)},
                  {"optimizer", {{"name", "adamw"}, {"steps", optimizer.steps()}}},
                  {"family", family.family.name},
                  {"last_loss", result.losses.empty() ? json() : json(result.losses.back())}};
    for (auto& [name, tensor] : optimizer.state()) state.tensors[name] = tensor;
    save_rng(state.tensors);
    ModelFiles files{.config = model->config_json(), .tensors = model->state_dict()};
    files.write_extra = [&](const fs::path& folder) {
      tokenizer->save(folder);
      const fs::path generation = recipe.model.checkpoint / "generation_config.json";
      if (from_checkpoint && fs::exists(generation)) {
        fs::copy_file(generation, folder / "generation_config.json");
      }
    };
    const fs::path where =
        save_run_checkpoint(run_dir, step, files, state, recipe.checkpoint.keep, kShardBytes);
    progress.message(fmt::format("saved {}", where.string()));
  };

  auto validate = [&](int64_t step) {
    if (val_corpus.size() == 0 && !recipe.data.mock) return;
    c10::NoGradGuard no_grad;
    Totals totals;
    int64_t targets = 0;
    if (recipe.data.mock) {
      data::LoaderOptions mock_options = loader_options;
      mock_options.seed = loader_options.seed ^ 0x5eedULL;
      data::MockLoader val(vocab, mock_options);
      for (int64_t i = 0; i < recipe.train.val_steps; ++i) {
        const auto batch = val.next();
        forward_backward(*model, batch, device, 1.0, 0.0, false, totals);
        targets += batch.num_targets;
      }
    } else {
      data::LoaderOptions val_options = loader_options;
      val_options.shuffle = false;
      val_options.single_epoch = true;
      data::Loader val(val_corpus, val_options);
      for (int64_t i = 0; i < recipe.train.val_steps; ++i) {
        const auto batch = val.next();
        if (batch.num_tokens == 0) break;
        forward_backward(*model, batch, device, 1.0, 0.0, false, totals);
        targets += batch.num_targets;
      }
    }
    const double val_loss =
        targets > 0 ? totals.lm_loss_sum.item<double>() / static_cast<double>(targets) : 0.0;
    result.val_losses.push_back(val_loss);
    const json line = {{"step", step}, {"val_loss", val_loss}, {"val_tokens", targets}};
    record(line);
    progress.event(line);
  };

  // The loop.
  SignalScope signals;
  const auto run_start = std::chrono::steady_clock::now();
  // backends.json: written (and its table printed) after the first step, when every op of a
  // training step has been resolved; written again on the way out when later work (validation,
  // the sample, a new shape the `auto` policy measured) changed it.
  json backends_written; // what the file holds (null: nothing yet)
  const fs::path backends_file = run_dir / "backends.json";
  const auto write_backends = [&] {
    json now = resolved_backends();
    if (now == backends_written) return;
    io::replace_file(backends_file, now.dump(2) + "\n");
    if (backends_written.is_null()) {
      progress.message(backends_table(backends_file));
    } else {
      size_t changed = 0;
      for (const auto& entry : now) {
        changed += std::find(backends_written.begin(), backends_written.end(), entry) ==
                   backends_written.end();
      }
      progress.message(
          fmt::format("backends: {} updated, {} of its {} entries new or changed "
                      "since the first step",
                      backends_file.string(), changed, now.size()));
    }
    backends_written = std::move(now);
  };
  int64_t step = saved.step;
  while (step < total_steps) {
    const auto step_start = std::chrono::steady_clock::now();
    const double lr = schedule.at(step);
    std::vector<data::MicroBatch> batches;
    int64_t targets = 0, tokens = 0;
    for (int64_t i = 0; i < recipe.train.grad_accum; ++i) {
      batches.push_back(next_batch());
      targets += batches.back().num_targets;
      tokens += batches.back().num_tokens;
    }
    if (step == saved.step && options.before_first_step) {
      options.before_first_step(*model, batches.front());
    }
    Totals totals;
    const double denominator = std::max<int64_t>(1, targets);
    for (const auto& batch : batches) {
      forward_backward(*model, batch, device, denominator,
                       1.0 / static_cast<double>(batches.size()), true, totals);
    }
    const double loss = totals.lm_loss_sum.item<double>() / denominator; // the step's one wait
    const double grad_norm = optimizer.grad_norm();
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      optimizer.zero_grad();
      progress.finish();
      const auto latest = latest_checkpoint(run_dir);
      fmt::print(stderr,
                 "error: step {}: loss {}, gradient norm {}: not finite, so the run stopped "
                 "before the update. {}; lower optim.lr, raise optim.warmup_steps or check the "
                 "data, then rerun to resume\n",
                 step + 1, loss, grad_norm,
                 latest ? fmt::format("The last good checkpoint is {}", latest->string())
                        : std::string("No checkpoint was saved yet"));
      write_backends();
      result.exit_code = 3;
      return result;
    }
    const double clip = recipe.train.clip_grad;
    const double scale = clip > 0 && grad_norm > clip ? clip / (grad_norm + 1e-6) : 1.0;
    optimizer.step(lr, scale);
    optimizer.zero_grad();
    ++step;
    result.losses.push_back(loss);
    result.last_step = step;

    if (options.synchronize_steps) wait_for(device);
    const double seconds = seconds_since(step_start);
    json line = {{"step", step},
                 {"loss", loss},
                 {"lr", lr},
                 {"grad_norm", grad_norm},
                 {"tokens", tokens},
                 {"targets", targets},
                 {"tokens_per_s", static_cast<double>(tokens) / std::max(seconds, 1e-9)},
                 {"step_s", seconds},
                 {"time_s", seconds_since(run_start)}};
    for (const auto& [name, value] : totals.aux) line["aux/" + name] = value.item<double>();
    if (!totals.load.empty()) {
      double worst = 0;
      for (const auto& [layer, counts] : totals.load) {
        const at::Tensor c = counts.to(at::kCPU, at::kDouble);
        const double mean = c.mean().item<double>();
        const double ratio = mean > 0 ? c.max().item<double>() / mean : 0.0;
        line[fmt::format("moe/max_over_mean/layer.{}", layer)] = ratio;
        worst = std::max(worst, ratio);
      }
      line["moe/max_over_mean"] = worst;
    }
    record(line);
    progress.step(line, step % recipe.train.log_every == 0 || step == total_steps);
    if (options.on_step) {
      options.on_step({.step = step,
                       .loss = loss,
                       .grad_norm = grad_norm,
                       .tokens = tokens,
                       .targets = targets,
                       .seconds = seconds});
    }
    if (backends_written.is_null()) write_backends();

    const bool last = step == total_steps;
    if (recipe.train.val_every > 0 && (step % recipe.train.val_every == 0 || last)) validate(step);
    const bool periodic = recipe.checkpoint.every > 0 && step % recipe.checkpoint.every == 0;
    if (periodic || (last && recipe.checkpoint.save_final)) save(step);
    if (const int signal = g_stop_signal.load(); signal != 0 && !last) {
      if (!periodic) save(step);
      progress.message(fmt::format(
          "stopped by signal {} after step {}; rerun the same command to continue", signal, step));
      write_backends();
      result.exit_code = 128 + signal;
      return result;
    }
  }
  progress.finish();
  if (!recipe.train.sample_prompt.empty() && recipe.train.sample_tokens > 0) {
    result.sample = greedy_sample(*model, *tokenizer, recipe.train.sample_prompt,
                                  recipe.train.sample_tokens, eos);
    progress.message(fmt::format("sample: {}", result.sample));
  }
  write_backends();
  return result;
}

} // namespace kiln::train
