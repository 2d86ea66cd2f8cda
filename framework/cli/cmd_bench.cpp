// `kiln bench`: A/B testing of backends. `kiln bench op` measures one op under each requested
// backend (correctness against the float32 torch reference, median time, TFLOP/s, % of peak, peak
// memory); `kiln bench model` runs the same training steps of a recipe under each value of one
// recipe key (step time, tokens/s, peak memory, loss and logit differences; framework/bench).
#include "common.h"
#include "embedded.h"

#include "bench/model_bench.h"
#include "bench/op_bench.h"
#include "core/failure.h"
#include "io/files.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"
#include "plot/figure.h"
#include "recipe/recipe.h"

#include <ATen/Context.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <iostream>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>
#include <system_error>

namespace kiln::cli {
namespace {

std::vector<std::string> split_list(const std::string& text, const char* option) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t end = std::min(text.find(',', pos), text.size());
    std::string item = text.substr(pos, end - pos);
    KILN_CHECK_USER(!item.empty(), "{}: expected comma-separated names like torch,cuda, found '{}'",
                    option, text);
    KILN_CHECK_USER(std::find(out.begin(), out.end(), item) == out.end(),
                    "{}: '{}' is listed twice", option, item);
    out.push_back(std::move(item));
    pos = end + 1;
  }
  return out;
}

// cuda means cuda:0 here (timing and memory statistics name the device).
c10::Device bench_device(const std::string& text) {
  const c10::Device device = parse_device(text);
  return device.is_cuda() && !device.has_index() ? c10::Device(at::kCUDA, 0) : device;
}

std::string fixed(const std::optional<double>& v, int digits) {
  return v ? fmt::format("{:.{}f}", *v, digits) : "-";
}

std::string sci(double v) {
  return fmt::format("{:.3e}", v);
}

std::string tflop(double flops) {
  if (flops <= 0) return "not counted";
  if (flops >= 1e11) return fmt::format("{:.3g} TFLOP", flops / 1e12);
  return fmt::format("{:.3g} GFLOP", flops / 1e9);
}

// Three significant digits below 100 (CPU rates are small), one decimal above.
std::string rate(const std::optional<double>& v) {
  if (!v) return "-";
  return *v >= 100 ? fmt::format("{:.1f}", *v) : fmt::format("{:.3g}", *v);
}

void print_table(const bench::OpSpec& spec, const bench::OpBenchOptions& o,
                 const std::string& device_name, const std::vector<bench::BackendResult>& rows) {
  std::cout << fmt::format("kiln bench op {}  {}  {}  {} ({})\n", spec.name, o.shape.str(),
                           dtype_name(o.dtype), o.device.str(), device_name);
  std::cout << fmt::format("FLOPs (shared/perf.md): fwd {} = {}",
                           tflop(spec.forward_flops(o.shape)), spec.flops_rule);
  if (o.backward && spec.backward_flops != nullptr) {
    std::cout << fmt::format("; bwd {} = {}", tflop(spec.backward_flops(o.shape)),
                             spec.backward_flops_rule);
  }
  std::cout << "\n";
  const std::string timer =
      rows.empty() || rows[0].passes.empty() ? "-" : rows[0].passes[0].timing.timer;
  std::cout << fmt::format(
      "time: median of {} runs after {} warm-up ({}); errors vs the torch "
      "reference in float32 on the same inputs",
      o.steps, o.warmup, timer);
  if (o.backward && spec.backward_flops == nullptr) {
    std::cout << fmt::format("; {} is not differentiable: no bwd", spec.name);
  }
  std::cout << "\n";
  if (spec.integer_output) {
    std::cout << "rows differ: fraction of query rows whose selected set differs from the "
                 "reference; beyond ties: of those, rows with a pick scoring below the "
                 "reference's k-th score (not a near-tie)\n";
  }
  std::cout << "% peak: of 989 TFLOP/s (H100/H200 bf16 datasheet); the JSON also has % of the "
               "measured 798\n\n";

  const char* err1 = spec.integer_output ? "rows differ" : "max abs err";
  const char* err2 = spec.integer_output ? "beyond ties" : "max rel err";
  auto label = [](const bench::BackendResult& r) {
    return r.chosen == r.backend ? r.backend : fmt::format("{}->{}", r.backend, r.chosen);
  };
  size_t width = 8;
  for (const auto& r : rows) width = std::max(width, label(r).size());
  const std::string header =
      fmt::format("{:<{}} {:<5} {:>12} {:>12} {:>11} {:>9} {:>7} {:>10}", "backend", width, "pass",
                  err1, err2, "median ms", "TFLOP/s", "% peak", "peak MiB");
  std::cout << header << "\n" << std::string(header.size(), '-') << "\n";
  for (const auto& r : rows) {
    const std::string name = label(r);
    for (const auto& p : r.passes) {
      std::string e1 = "-", e2 = "-";
      if (p.error) {
        e1 = sci(p.error->max_abs);
        e2 = sci(p.error->max_rel);
      } else if (p.sets && p.sets->rows > 0) {
        const double n = static_cast<double>(p.sets->rows);
        e1 = fmt::format("{:.3f}%", 100.0 * static_cast<double>(p.sets->rows_differ) / n);
        e2 = fmt::format("{:.3f}%",
                         100.0 * static_cast<double>(p.sets->rows_differ_beyond_ties) / n);
      }
      const std::optional<double> mib =
          p.timing.peak_bytes
              ? std::optional<double>(static_cast<double>(*p.timing.peak_bytes) / (1 << 20))
              : std::nullopt;
      std::cout << fmt::format("{:<{}} {:<5} {:>12} {:>12} {:>11.3f} {:>9} {:>7} {:>10}\n", name,
                               width, p.pass, e1, e2, p.timing.median_ms, rate(p.tflops),
                               fixed(p.pct_peak, 1), fixed(mib, 0));
    }
  }
  for (const auto& r : rows) {
    for (const auto& p : r.passes) {
      if (p.nonfinite_runs > 0) {
        std::cout << fmt::format("warning: {} {}: {} run(s) gave non-finite or unwritten output\n",
                                 r.backend, p.pass, p.nonfinite_runs);
      }
    }
  }
}

int bench_op(const std::vector<std::string>& args) {
  po::options_description options("bench op options");
  options.add_options()("op", po::value<std::string>()->required(), "op name, e.g. sparse_mla")(
      "backends", po::value<std::string>()->default_value("torch"),
      "comma-separated backends (or policies) to compare")(
      "shape", po::value<std::string>()->default_value(""),
      "KEY=VALUE,... (op defaults otherwise)")(
      "dtype", po::value<std::string>()->default_value("bf16"), "bf16, fp16 or fp32")(
      "backward", po::bool_switch(), "also measure gradients of sum(out * r)")(
      "device", po::value<std::string>()->default_value(at::hasCUDA() ? "cuda" : "cpu"),
      "cpu, cuda or cuda:N (default: cuda when present)")(
      "steps", po::value<int64_t>()->default_value(20), "timed runs (median reported)")(
      "warmup", po::value<int64_t>()->default_value(3), "untimed runs first")(
      "seed", po::value<uint64_t>()->default_value(0), "seed of the random inputs")(
      "json", po::value<std::string>(), "also write one JSON object per backend here");
  options.add(plugin_options());
  const auto vm = parse(args, options, {});

  const auto& spec = bench::find_op(vm["op"].as<std::string>());
  bench::OpBenchOptions o;
  o.shape = bench::resolve_shape(spec, bench::parse_shape(vm["shape"].as<std::string>()));
  const auto dtype = parse_dtype(vm["dtype"].as<std::string>());
  KILN_CHECK_USER(dtype && (*dtype == at::kFloat || *dtype == at::kBFloat16 || *dtype == at::kHalf),
                  "--dtype: expected bf16, fp16 or fp32, found '{}'",
                  vm["dtype"].as<std::string>());
  o.dtype = *dtype;
  o.device = bench_device(vm["device"].as<std::string>());
  o.backward = vm["backward"].as<bool>();
  o.steps = vm["steps"].as<int64_t>();
  o.warmup = vm["warmup"].as<int64_t>();
  o.seed = vm["seed"].as<uint64_t>();
  KILN_CHECK_USER(o.steps >= 1, "--steps: expected >= 1, found {}", o.steps);
  KILN_CHECK_USER(o.warmup >= 0, "--warmup: expected >= 0, found {}", o.warmup);
  const auto backends = split_list(vm["backends"].as<std::string>(), "--backends");

  load_plugins(vm, {});
  for (const auto& b : backends) bench::check_backend(spec, b, o.device);
  bench::check_backend(spec, "torch", o.device); // the reference

  const std::string device_name = bench::device_description(o.device);
  bench::prime_backends(spec, o, backends);
  std::vector<bench::BackendResult> rows;
  for (const auto& b : backends) rows.push_back(bench::bench_backend(spec, o, b));
  print_table(spec, o, device_name, rows);

  if (vm.count("json")) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : rows) out.push_back(bench::to_json(spec, o, device_name, r));
    io::replace_file(vm["json"].as<std::string>(), out.dump(2) + "\n");
    std::cout << fmt::format("\nwrote {}\n", vm["json"].as<std::string>());
  }
  return 0;
}

// ---- kiln bench model -----------------------------------------------------------------------

namespace fs = std::filesystem;

// Fails now, before any step runs, when FILE could not be written at the end: its folder must
// exist and take a new file (the atomic writers put a temporary file next to the target).
void check_writable(const fs::path& file, const char* option, const char* example) {
  KILN_CHECK_USER(!file.empty() && file.has_filename(), "{} '{}': expected a file path like {}",
                  option, file.string(), example);
  KILN_CHECK_USER(!fs::is_directory(file), "{} {}: is a folder; expected a file path like {}",
                  option, file.string(), example);
  const fs::path folder = file.has_parent_path() ? file.parent_path() : fs::path(".");
  KILN_CHECK_USER(fs::is_directory(folder),
                  "{} {}: folder '{}' does not exist; create it or choose another path", option,
                  file.string(), folder.string());
  const fs::path probe =
      folder / fmt::format(".{}.probe-{}", file.filename().string(), static_cast<long>(::getpid()));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  KILN_CHECK_USER(fd >= 0,
                  "{} {}: cannot create a file in folder '{}' ({}); choose a writable path", option,
                  file.string(), folder.string(), std::generic_category().message(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

int64_t parse_count(const std::string& text, const char* option, int64_t min) {
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  KILN_CHECK_USER(ec == std::errc() && end == text.data() + text.size() && value >= min,
                  "{}: expected an integer >= {}, found '{}'", option, min, text);
  return value;
}

// `--name VALUE` or `--name=VALUE` at args[i] (advancing i past the value), else nullopt.
std::optional<std::string> take_option(const std::vector<std::string>& args, size_t& i,
                                       std::string_view name) {
  const std::string& a = args[i];
  if (a == name) {
    KILN_CHECK_USER(i + 1 < args.size() && !args[i + 1].starts_with("--"),
                    "{}: missing its value; write {} VALUE", name, name);
    return args[++i];
  }
  if (a.size() > name.size() && a.starts_with(name) && a[name.size()] == '=') {
    return a.substr(name.size() + 1);
  }
  return std::nullopt;
}

std::string mib(const std::optional<int64_t>& bytes) {
  return bytes ? fmt::format("{:.0f}", static_cast<double>(*bytes) / (1 << 20)) : "n/a";
}

void print_model_table(const bench::ModelBenchOptions& o, const bench::ModelBenchResult& result) {
  const auto& rows = result.settings;
  std::cout << fmt::format("kiln bench model {}: {} = {}\n", o.recipe.string(), o.ab.key, [&] {
    std::string v;
    for (const auto& r : rows) v += (v.empty() ? "" : " | ") + r.value;
    return v;
  }());
  std::set<std::string> where;
  for (const auto& r : rows) {
    where.insert(fmt::format("{} ({}), {}", r.device, r.device_name, r.dtype));
  }
  std::cout << fmt::format(
      "{} timed steps after {} warm-up per setting ({}); the same seed, data and initial "
      "weights; {}\n",
      o.steps, o.warmup, rows.front().timer,
      where.size() == 1 ? "on " + *where.begin() : std::string("device and dtype per setting"));
  std::cout << fmt::format(
      "median ms: per step; tokens/s: the mean tokens of a timed step over the median time; "
      "speedup: tokens/s over the reference's (the first setting that did not run out of "
      "memory)\n"
      "loss diff: max |loss - the reference's| over all {} steps; logit abs / rel: max |a - b| "
      "and that over max |b|, b the reference's logits of (up to) the last {} positions of the "
      "first micro-batch with the initial weights\n\n",
      o.warmup + o.steps, bench::kComparedLogitRows);

  size_t value_width = 5, ran_width = 3;
  for (const auto& r : rows) {
    value_width = std::max(value_width, r.value.size());
    ran_width = std::max(ran_width, r.ran.size());
  }
  const std::string header =
      fmt::format("{:<{}}  {:<{}} {:>10} {:>11} {:>9} {:>8} {:>10} {:>10} {:>10}", "value",
                  value_width, "ran", ran_width, "median ms", "tokens/s", "peak MiB", "speedup",
                  "loss diff", "logit abs", "logit rel");
  std::cout << header << "\n" << std::string(header.size(), '-') << "\n";
  for (const auto& r : rows) {
    if (!r.out_of_memory.empty()) {
      std::cout << fmt::format("{:<{}}  {:<{}} {:>10}\n", r.value, value_width,
                               r.ran.empty() ? "-" : r.ran, ran_width, "out of memory");
      continue;
    }
    const auto sci_or_dash = [](const std::optional<double>& v) { return v ? sci(*v) : "-"; };
    std::cout << fmt::format(
        "{:<{}}  {:<{}} {:>10.3f} {:>11} {:>9} {:>8} {:>10} {:>10} {:>10}\n", r.value, value_width,
        r.ran, ran_width, r.median_step_ms, rate(r.tokens_per_s), mib(r.peak_bytes),
        r.speedup ? fmt::format("{:.2f}x", *r.speedup) : "-", sci_or_dash(r.loss_max_abs_diff),
        sci_or_dash(r.logits ? std::optional(r.logits->max_abs) : std::nullopt),
        sci_or_dash(r.logits ? std::optional(r.logits->max_rel) : std::nullopt));
  }
  for (const auto& r : rows) {
    if (!r.out_of_memory.empty()) {
      std::cout << fmt::format("note: {}: out of memory {}; {}\n", r.value, r.out_of_memory,
                               core::kOutOfMemoryHint);
    } else if (!r.logits && !r.reference) {
      std::cout << fmt::format("note: {}: logits {}\n", r.value, r.logits_note);
    }
  }
  for (const auto& r : rows) {
    if (r.fallbacks.empty()) continue;
    std::cout << fmt::format(
        "note: {}: {} op(s) fell back to another backend (backend.strict is unset), e.g. {}; the "
        "JSON's backends table lists each\n",
        r.value, r.fallbacks.size(), r.fallbacks.front());
  }

  std::cout << "\nloss per step (* warm-up, not timed)\n";
  std::string line = fmt::format("{:>6}", "step");
  for (const auto& r : rows)
    line += fmt::format("  {:>{}}", r.value, std::max<size_t>(10, r.value.size()));
  std::cout << line << "\n";
  size_t steps = 0;
  for (const auto& r : rows) steps = std::max(steps, r.losses.size());
  for (size_t s = 0; s < steps; ++s) {
    line = fmt::format("{:>5}{}", s + 1, static_cast<int64_t>(s) < o.warmup ? "*" : " ");
    for (const auto& r : rows) {
      const std::string v = s < r.losses.size() ? fmt::format("{:.6f}", r.losses[s]) : "-";
      line += fmt::format("  {:>{}}", v, std::max<size_t>(10, r.value.size()));
    }
    std::cout << line << "\n";
  }
}

// Median step time and tokens/s per setting as bars, and the loss of every step as lines (the
// first setting's drawn wide and pale, so equal curves stay visible on top of each other).
void plot_model_bench(const bench::ModelBenchOptions& o, const bench::ModelBenchResult& result,
                      const fs::path& file) {
  std::vector<std::string> names;
  std::vector<double> ms, rates;
  for (const auto& r : result.settings) {
    names.push_back(r.out_of_memory.empty() ? r.value : r.value + " (out of memory)");
    ms.push_back(r.median_step_ms);
    rates.push_back(r.tokens_per_s);
  }
  plot::Figure fig(1600, 1000, 2, 2);
  fig.title(fmt::format("kiln bench model {}: {}", o.recipe.filename().string(), o.ab.key));
  fig.bar_panel(0, 0)
      .title(fmt::format("median step time ({} steps)", o.steps))
      .ylabel("ms")
      .categories(names)
      .group("median step ms", ms, plot::palette(0));
  fig.bar_panel(0, 1)
      .title("throughput")
      .ylabel("tokens/s")
      .categories(names)
      .group("tokens/s", rates, plot::palette(1));
  plot::LineChart& loss =
      fig.panel(1, 0, 1, 2).title("loss per step").xlabel("step").ylabel("loss");
  for (size_t i = 0; i < result.settings.size(); ++i) {
    const auto& r = result.settings[i];
    std::vector<double> steps(r.losses.size());
    for (size_t s = 0; s < steps.size(); ++s) steps[s] = static_cast<double>(s + 1);
    const plot::LineStyle style = i == 0 ? plot::LineStyle{plot::palette(i), 6.0, 0.35}
                                         : plot::LineStyle{plot::palette(i), 2.0, 1.0};
    loss.line(r.value, steps, r.losses, style);
  }
  try {
    fig.save_png(file);
  } catch (const std::runtime_error& e) {
    user_error("--plot: {}; check that the folder exists and is writable", e.what());
  }
}

int bench_model(const std::vector<std::string>& args) {
  std::vector<std::string> own, override_args;
  std::optional<std::string> ab_text, plot_file, json_file, profile_dir;
  std::string file, steps_text = "10", warmup_text = "2";
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--verbose" || a == "-v") {
      own.push_back(a);
    } else if (auto v = take_option(args, i, "--plugin")) {
      own.push_back("--plugin=" + *v);
    } else if (auto v = take_option(args, i, "--ab")) {
      KILN_CHECK_USER(!ab_text,
                      "--ab is given twice ('{}' and '{}'); kiln bench model compares "
                      "the values of one key",
                      *ab_text, *v);
      ab_text = *v;
    } else if (auto v = take_option(args, i, "--steps")) {
      steps_text = *v;
    } else if (auto v = take_option(args, i, "--warmup")) {
      warmup_text = *v;
    } else if (auto v = take_option(args, i, "--plot")) {
      plot_file = *v;
    } else if (auto v = take_option(args, i, "--json")) {
      json_file = *v;
    } else if (auto v = take_option(args, i, "--profile")) {
      profile_dir = *v;
    } else if (i == 0 && !a.starts_with("-") && a.find('=') == std::string::npos) {
      file = a;
    } else {
      override_args.push_back(a);
    }
  }
  KILN_CHECK_USER(ab_text.has_value(),
                  "kiln bench model: missing --ab KEY=V1,V2 (the recipe key to compare and its "
                  "values), e.g. --ab backend.default=torch,cuda");
  bench::ModelBenchOptions o;
  o.ab = bench::parse_ab(*ab_text);
  o.steps = parse_count(steps_text, "--steps", 1);
  o.warmup = parse_count(warmup_text, "--warmup", 0);
  o.overrides = recipe::parse_override_args(override_args);
  if (plot_file) check_writable(*plot_file, "--plot", "bench.png");
  if (json_file) check_writable(*json_file, "--json", "bench.json");
  if (profile_dir) {
    std::error_code ec;
    fs::create_directories(*profile_dir, ec);
    KILN_CHECK_USER(!ec && fs::is_directory(*profile_dir),
                    "--profile {}: cannot create the folder ({}); pass a writable folder",
                    *profile_dir, ec ? ec.message() : "a file is in the way");
    o.profile_dir = fs::path(*profile_dir);
  }
  const auto vm = parse(own, plugin_options(), {});
  o.recipe = file.empty() ? write_embedded_quickstart() : fs::path(file);

  const auto settings = bench::load_settings(o);
  load_plugins(vm, settings.front().recipe.plugins.dirs);
  bench::check_backends(settings, o.ab.key);

  const auto result = bench::run_model_bench(o, settings);
  if (result.exit_code != 0) {
    std::fflush(stdout);
    std::cerr << fmt::format("error: {}; nothing written\n", result.stopped);
    return result.exit_code;
  }
  std::cout << "\n";
  print_model_table(o, result);
  for (const auto& r : result.settings) {
    if (r.profile_trace.empty() && !r.profile.empty()) { // the profiled step ran out of memory
      std::cout << fmt::format("\nprofile of {}={}: {}", o.ab.key, r.value, r.profile);
    }
    if (r.profile_trace.empty()) continue;
    std::cout << fmt::format("\nprofile of {}={} (step {}, after the timed steps): {}\n{}",
                             o.ab.key, r.value, o.warmup + o.steps + 1, r.profile_trace.string(),
                             r.profile);
  }
  if (json_file) {
    io::replace_file(*json_file, bench::to_json(o, result).dump(2) + "\n");
    std::cout << fmt::format("\nwrote {}\n", *json_file);
  }
  if (plot_file) {
    plot_model_bench(o, result, *plot_file);
    std::cout << fmt::format("{}wrote {}\n", json_file ? "" : "\n", *plot_file);
  }
  return 0;
}

} // namespace

void usage_bench() {
  std::cout
      << "usage: kiln bench op --op OP [--backends torch,cuda] [--shape K=V,...]\n"
         "                     [--dtype bf16|fp16|fp32] [--backward] [--device cpu|cuda]\n"
         "                     [--steps N] [--warmup N] [--seed N] [--json FILE]\n"
         "       kiln bench model [RECIPE] --ab KEY=V1,V2[,...] [--steps N] [--warmup N]\n"
         "                     [--plot FILE.png] [--json FILE] [--profile DIR]\n"
         "                     [--section.key VALUE]...\n\n"
         "kiln bench op measures OP under each backend, forced with backend.strict = true: the\n"
         "error of its output against the torch reference run in float32 on the same (upcast)\n"
         "random inputs, the median time (CUDA events on a GPU, wall clock on the CPU), TFLOP/s\n"
         "by shared/perf.md's conventions, % of the bf16 peak, and peak device memory. Ops and\n"
         "their shape keys (defaults: GLM-5):\n";
  for (const auto& spec : bench::op_specs()) {
    std::string keys;
    for (const auto& [k, v] : spec.keys) {
      keys += fmt::format("{}{}={}", keys.empty() ? "" : ",", k,
                          v == 0 ? std::string("T") : std::to_string(v));
    }
    std::cout << fmt::format("  {:<13} {}\n", spec.name, keys);
  }
  std::cout
      << "--backward adds the gradients of sum(out * r) (r random) w.r.t. the floating\n"
         "inputs: the backward pass alone (bwd), then the forward under autograd and the\n"
         "backward together (f+b: a kernel that computes gradients in its forward pass\n"
         "shows its cost there). indexer_topk compares selected sets.\n\n"
         "kiln bench model trains RECIPE (default: the embedded quickstart) for --warmup\n"
         "(default 2) + --steps (default 10) steps once per value of the recipe key KEY (any\n"
         "key `kiln run` takes as an override: backend.default, backend.ops.NAME,\n"
         "backend.strict, train.micro_batch, model.dtype, ...), all in this process with the\n"
         "same seed, data and initial weights, the dispatcher configured afresh for each. It\n"
         "prints per value: the backends that ran (`torch (fallback)` when a requested one\n"
         "had no kernel), the median step time after the warm-up (the device synchronized\n"
         "each step), tokens/s, peak device memory (CUDA allocator; n/a on the CPU), the\n"
         "speedup over the first value, the largest loss difference from the first value\n"
         "over the steps, the largest logit difference on the first batch with the initial\n"
         "weights, and the loss of every step. --json FILE writes all of it with each\n"
         "setting's resolved backend table; --plot FILE.png draws step time, tokens/s and\n"
         "the loss curves. --profile DIR runs one more step per value under the LibTorch\n"
         "profiler (not part of the results) and prints its costliest ops and GPU kernels;\n"
         "the Chrome traces (with input shapes) go to DIR/N-VALUE.json;\n"
         "tools/bench/trace_kernels.py lists a trace's kernels by the op and shapes that\n"
         "launched them. Nothing is written to run folders: the\n"
         "runs use a temporary folder, save no checkpoint, and skip validation and samples.\n"
         "  kiln bench model recipes/x.toml --ab backend.default=torch,cuda --steps 10\n\n"
      << plugin_options();
}

int cmd_bench(const std::vector<std::string>& args) {
  KILN_CHECK_USER(!args.empty(),
                  "kiln bench: expected a subcommand: op or model (see `kiln help "
                  "bench`)");
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "op") return bench_op(rest);
  if (args[0] == "model") return bench_model(rest);
  user_error("kiln bench: unknown subcommand '{}'; expected op or model", args[0]);
}

} // namespace kiln::cli
