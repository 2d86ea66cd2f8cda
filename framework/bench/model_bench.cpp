#include "bench/model_bench.h"

#include "bench/profile.h"

#include "core/failure.h"
#include "data/loader.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/model.h"
#include "kiln/sdk/names.h"
#include "train/trainer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <system_error>

namespace kiln::bench {
namespace {

namespace fs = std::filesystem;

std::string quoted_list(const std::vector<std::string>& values) {
  std::string out;
  for (const auto& v : values) out += fmt::format("{}'{}'", out.empty() ? "" : ", ", v);
  return out;
}

// Keys whose values the bench decides itself, so comparing them would compare nothing.
struct ReservedKey {
  std::string_view key; // a key, or a whole section
  std::string_view why;
};
constexpr ReservedKey kReserved[] = {
    {"run.dir", "each setting runs in a temporary folder"},
    {"train.steps", "--steps and --warmup decide how many steps run"},
    {"train.val_every", "it does not validate"},
    {"train.val_steps", "it does not validate"},
    {"train.sample_prompt", "it does not generate a sample"},
    {"train.sample_tokens", "it does not generate a sample"},
    {"checkpoint", "it saves no checkpoint and always starts from the initial weights"},
    {"plugins.dirs", "plugins are loaded once for every setting; pass --plugin FILE instead"},
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// What the bench changes in every setting's recipe: the step count, no validation, sample or
// checkpoint, a fresh start. The LR schedule keeps the length the full run would give it, so
// the steps measured use the learning rates the recipe's own run would.
void apply_bench_changes(recipe::Recipe& r, int64_t total_steps) {
  if (r.optim.schedule_steps == 0) r.optim.schedule_steps = std::max(r.train.steps, total_steps);
  r.train.steps = total_steps;
  r.train.val_every = 0;
  r.train.sample_prompt.clear();
  r.checkpoint.every = 0;
  r.checkpoint.save_final = false;
  r.checkpoint.resume = "none";
}

// "2-cuda.json": the setting's number and its value, with characters other than letters,
// digits, '.', '_' and '-' as '_'.
std::string trace_name(size_t index, const std::string& value) {
  std::string name = fmt::format("{}-", index + 1);
  for (const char c : value) {
    name +=
        std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ? c : '_';
  }
  return name + ".json";
}

recipe::Recipe load_one(const ModelBenchOptions& options, const std::vector<std::string>& overrides,
                        recipe::KeyOrigins& origins) {
  recipe::Recipe r = recipe::load_recipe(options.recipe, overrides, &origins);
  apply_bench_changes(r, options.warmup + options.steps + (options.profile_dir ? 1 : 0));
  recipe::validate(r, origins);
  recipe::check_trainable(r, origins);
  const c10::Device device(r.model.device); // validate() checked the syntax
  KILN_CHECK_USER(!device.is_cuda() || at::hasCUDA(),
                  "model.device = \"{}\": no CUDA device is available here; use \"cpu\"",
                  r.model.device);
  return r;
}

// A folder under the system's temporary directory, removed with everything in it on scope exit.
class ScratchFolder {
 public:
  ScratchFolder() {
    std::string pattern = (fs::temp_directory_path() / "kiln-bench-model-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      internal_error("kiln bench model: cannot create a temporary folder like {} ({})", pattern,
                     std::generic_category().message(errno));
    }
    path_ = pattern;
  }
  ~ScratchFolder() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The backends that ran (in first-use order, "+"-joined) and every resolution that fell back.
void summarise_backends(SettingResult& out) {
  std::vector<std::string> chosen;
  for (const auto& r : sdk::Dispatcher::global().resolved()) {
    size_t begin = 0;
    while (begin <= r.chosen.size()) {
      const size_t end = std::min(r.chosen.find(',', begin), r.chosen.size());
      std::string name = r.chosen.substr(begin, end - begin);
      if (!name.empty() && std::find(chosen.begin(), chosen.end(), name) == chosen.end()) {
        chosen.push_back(std::move(name));
      }
      begin = end + 1;
    }
    if (r.note.find("fell back") != std::string::npos) {
      out.fallbacks.push_back(
          fmt::format("{} ({}, {}): {}", r.op, device_name(r.device), dtype_name(r.dtype), r.note));
    }
  }
  out.ran.clear();
  for (const auto& name : chosen) out.ran += (out.ran.empty() ? "" : "+") + name;
  if (out.ran.empty()) out.ran = "-";
  if (!out.fallbacks.empty()) out.ran += " (fallback)";
}

void compare_with_reference(const SettingResult& first, SettingResult& r) {
  r.speedup = first.tokens_per_s > 0 ? r.tokens_per_s / first.tokens_per_s : 0.0;
  double diff = 0;
  for (size_t i = 0; i < std::min(first.losses.size(), r.losses.size()); ++i) {
    diff = std::max(diff, std::abs(r.losses[i] - first.losses[i]));
  }
  r.loss_max_abs_diff = diff;
  if (!r.first_logits.defined() || !first.first_logits.defined()) {
    r.logits_note = "not compared: no logits";
  } else if (!r.first_ids.sizes().equals(first.first_ids.sizes()) ||
             !r.first_ids.equal(first.first_ids)) {
    r.logits_note =
        "not compared: the first micro-batch differs from the reference's (the key changes the "
        "data or the batching)";
  } else if (!r.first_logits.sizes().equals(first.first_logits.sizes())) {
    r.logits_note = "not compared: the logits' shapes differ";
  } else {
    r.logits = compare_values(r.first_logits, first.first_logits);
    r.logits_note = fmt::format(
        "the last {} positions of the first micro-batch, initial weights, float32 on the host",
        r.first_logits.size(0));
  }
}

nlohmann::json optional_json(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

} // namespace

AbSpec parse_ab(std::string_view text) {
  constexpr std::string_view kForm = "KEY=V1,V2[,...] like backend.default=torch,cuda";
  const size_t equals = text.find('=');
  KILN_CHECK_USER(equals != std::string_view::npos, "--ab '{}': expected {}; found no '='", text,
                  kForm);
  AbSpec ab;
  ab.key = std::string(text.substr(0, equals));
  const bool dotted = ab.key.find('.') != std::string::npos && !ab.key.starts_with('.') &&
                      !ab.key.ends_with('.') && ab.key.find("..") == std::string::npos;
  KILN_CHECK_USER(dotted,
                  "--ab '{}': expected a recipe key like section.key before '=', found '{}'", text,
                  ab.key);
  for (const auto& reserved : kReserved) {
    const bool hit =
        ab.key == reserved.key || (reserved.key.find('.') == std::string_view::npos &&
                                   ab.key.starts_with(fmt::format("{}.", reserved.key)));
    KILN_CHECK_USER(!hit,
                    "--ab {}: kiln bench model sets this key itself ({}); compare another key",
                    ab.key, reserved.why);
  }

  // Split at top-level commas: a list or table value ([a, b], { x = 1 }) or a quoted string may
  // hold commas of its own.
  const std::string_view body = text.substr(equals + 1);
  int depth = 0;
  char quote = 0;
  size_t begin = 0;
  auto add = [&](size_t end) {
    std::string value(body.substr(begin, end - begin));
    KILN_CHECK_USER(!value.empty(), "--ab '{}': value {} is empty; expected {}", text,
                    ab.values.size() + 1, kForm);
    KILN_CHECK_USER(std::find(ab.values.begin(), ab.values.end(), value) == ab.values.end(),
                    "--ab '{}': value '{}' is listed twice", text, value);
    ab.values.push_back(std::move(value));
    begin = end + 1;
  };
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (quote != 0) {
      if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '[' || c == '{') {
      ++depth;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    } else if (c == ',' && depth == 0) {
      add(i);
    }
  }
  add(body.size());
  KILN_CHECK_USER(ab.values.size() >= 2,
                  "--ab '{}': expected at least two values to compare ({}), found {}", text, kForm,
                  quoted_list(ab.values));
  return ab;
}

std::vector<Setting> load_settings(const ModelBenchOptions& options) {
  std::vector<Setting> out;
  for (const auto& value : options.ab.values) {
    std::vector<std::string> overrides = options.overrides;
    overrides.push_back(fmt::format("{}={}", options.ab.key, value));
    Setting s;
    s.value = value;
    try {
      s.recipe = load_one(options, overrides, s.origins);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kUser) throw;
      // The same error without the setting is the recipe's own (or the other overrides'): say it
      // as is. Otherwise the value is to blame.
      try {
        recipe::KeyOrigins base_origins;
        load_one(options, options.overrides, base_origins);
      } catch (const Error& base) {
        if (base.full() == e.full()) throw;
      }
      user_error("--ab {}={}: {}", options.ab.key, value, e.full());
    }
    out.push_back(std::move(s));
  }
  return out;
}

void check_backends(const std::vector<Setting>& settings, const std::string& key) {
  for (const auto& s : settings) {
    try {
      sdk::Dispatcher::global().configure(train::dispatch_config(s.recipe.backend));
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kUser || !key.starts_with("backend.")) throw;
      user_error("--ab {}={}: {}", key, s.value, e.full());
    }
  }
}

ModelBenchResult run_model_bench(const ModelBenchOptions& options,
                                 const std::vector<Setting>& settings) {
  const ScratchFolder scratch;
  ModelBenchResult result;
  const std::string& key = options.ab.key;
  for (size_t i = 0; i < settings.size(); ++i) {
    const Setting& setting = settings[i];
    recipe::Recipe r = setting.recipe;
    r.run.dir = scratch.path() / fmt::format("setting-{}", i);
    const c10::Device device(r.model.device);

    SettingResult out;
    out.value = setting.value;
    out.device = device.str();
    out.device_name = device_description(device);
    out.dtype = r.model.dtype;
    out.timer = device.is_cpu() ? "wall clock" : "wall clock, device synchronized after each step";

    train::TrainOptions train_options;
    train_options.log_format = train::LogFormat::kQuiet;
    train_options.synchronize_steps = true;
    train_options.before_first_step = [&](sdk::Model& model, const data::MicroBatch& batch) {
      const c10::NoGradGuard no_grad;
      sdk::ForwardInput input;
      input.input_ids = batch.input_ids.to(device);
      input.cu_seqlens = batch.cu_seqlens;
      input.logits_to_keep = kComparedLogitRows;
      const at::Tensor logits = model.forward(input).logits;
      out.first_ids = batch.input_ids.clone();
      out.first_logits = logits.reshape({-1, logits.size(-1)}).to(at::kCPU, at::kFloat).clone();
      if (options.warmup == 0) reset_peak_memory(device);
    };
    // With --profile, one more step runs after the timed ones, under the profiler; it is not
    // part of the results.
    const int64_t last_timed = options.warmup + options.steps;
    std::unique_ptr<Profile> profile;
    train_options.on_step = [&](const train::StepReport& step) {
      if (step.step > last_timed) {
        out.profile = profile->finish(out.profile_trace);
        profile.reset();
        return;
      }
      out.losses.push_back(step.loss);
      out.step_ms.push_back(step.seconds * 1e3);
      out.tokens.push_back(step.tokens);
      if (step.step == options.warmup) reset_peak_memory(device);
      if (step.step == last_timed && options.profile_dir) {
        out.peak_bytes = peak_memory(device);
        out.profile_trace = *options.profile_dir / trace_name(i, setting.value);
        profile = std::make_unique<Profile>(device.is_cuda());
      }
    };

    sdk::Dispatcher::global().configure(train::dispatch_config(r.backend));
    at::manual_seed(static_cast<uint64_t>(r.run.seed));
    fmt::print(stderr, "kiln bench model: setting {}/{}: {}={}: {} steps ({} warm-up) on {}\n",
               i + 1, settings.size(), key, setting.value, r.train.steps, options.warmup,
               out.device);
    train::TrainResult run;
    try {
      run = train::run(r, setting.origins, train_options);
    } catch (const Error& e) {
      throw e.with_context(fmt::format("running --ab {}={}", key, setting.value));
    } catch (const std::exception& e) {
      if (!core::is_out_of_memory(e)) throw;
      profile.reset();
      release_cached_memory(device);
      const auto done = static_cast<int64_t>(out.losses.size()); // steps that finished
      const std::string what =
          fmt::format("{}: {}",
                      done == 0 ? std::string("before the first step")
                                : fmt::format("in step {} of {}", done + 1, r.train.steps),
                      core::one_line_message(e));
      if (done < last_timed) {
        out.out_of_memory = what;
        result.settings.push_back(std::move(out));
        continue;
      }
      // Only the profiled step after the timed ones: the results stand, the profile does not.
      out.profile = "not taken: out of memory " + what + "\n";
      out.profile_trace.clear();
    }
    if (run.exit_code != 0) {
      result.exit_code = run.exit_code;
      result.stopped = fmt::format("--ab {}={}: the run stopped after step {} of {} (exit code {})",
                                   key, setting.value, run.last_step, r.train.steps, run.exit_code);
      return result;
    }
    if (!options.profile_dir) out.peak_bytes = peak_memory(device);
    out.backends = train::resolved_backends();
    summarise_backends(out);

    const auto timed = static_cast<std::ptrdiff_t>(options.warmup);
    const std::vector<double> timed_ms(out.step_ms.begin() + timed, out.step_ms.end());
    out.median_step_ms = median(timed_ms);
    out.min_step_ms = timed_ms.empty() ? 0 : *std::min_element(timed_ms.begin(), timed_ms.end());
    const int64_t timed_tokens =
        std::accumulate(out.tokens.begin() + timed, out.tokens.end(), int64_t{0});
    out.tokens_per_step = static_cast<double>(timed_tokens) /
                          static_cast<double>(std::max<size_t>(1, timed_ms.size()));
    out.tokens_per_s =
        out.median_step_ms > 0 ? out.tokens_per_step / (out.median_step_ms / 1e3) : 0.0;
    result.settings.push_back(std::move(out));
  }

  const auto ran = [](const SettingResult& s) { return s.out_of_memory.empty(); };
  const auto reference = std::find_if(result.settings.begin(), result.settings.end(), ran);
  if (reference == result.settings.end()) {
    const SettingResult& first = result.settings.front();
    throw Error(ErrorKind::kInternal,
                fmt::format("--ab {}={}: out of memory {}; {} (every setting ran out of memory)",
                            key, first.value, first.out_of_memory, core::kOutOfMemoryHint));
  }
  reference->reference = true;
  reference->speedup = 1.0;
  reference->logits_note = "the reference";
  for (auto& s : result.settings) {
    if (s.reference) continue;
    if (ran(s)) {
      compare_with_reference(*reference, s);
    } else {
      s.logits_note = "not compared: out of memory";
    }
  }
  return result;
}

nlohmann::json to_json(const ModelBenchOptions& options, const ModelBenchResult& result) {
  nlohmann::json settings = nlohmann::json::array();
  for (const auto& s : result.settings) {
    settings.push_back({
        {"value", s.value},
        {"out_of_memory",
         s.out_of_memory.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.out_of_memory)},
        {"ran", s.ran},
        {"fallback", !s.fallbacks.empty()},
        {"fallbacks", s.fallbacks},
        {"device", s.device},
        {"device_name", s.device_name},
        {"dtype", s.dtype},
        {"timer", s.timer},
        {"median_step_ms", s.median_step_ms},
        {"min_step_ms", s.min_step_ms},
        {"tokens_per_step", s.tokens_per_step},
        {"tokens_per_s", s.tokens_per_s},
        {"peak_mib", s.peak_bytes ? nlohmann::json(static_cast<double>(*s.peak_bytes) / (1 << 20))
                                  : nlohmann::json(nullptr)},
        {"speedup", optional_json(s.speedup)},
        {"loss_max_abs_diff", optional_json(s.loss_max_abs_diff)},
        {"logits_max_abs_diff",
         s.logits ? nlohmann::json(s.logits->max_abs) : nlohmann::json(nullptr)},
        {"logits_max_rel_diff",
         s.logits ? nlohmann::json(s.logits->max_rel) : nlohmann::json(nullptr)},
        {"logits_compared", s.logits_note},
        {"losses", s.losses},
        {"step_ms", s.step_ms},
        {"tokens", s.tokens},
        {"backends", s.backends},
        {"profile_trace", s.profile_trace.empty() ? nlohmann::json(nullptr)
                                                  : nlohmann::json(s.profile_trace.string())},
    });
  }
  return {{"recipe", options.recipe.string()},
          {"overrides", options.overrides},
          {"key", options.ab.key},
          {"values", options.ab.values},
          {"steps", options.steps},
          {"warmup", options.warmup},
          {"settings", settings}};
}

} // namespace kiln::bench
