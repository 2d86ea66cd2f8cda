// `kiln bench`: A/B testing of backends. `kiln bench op` measures one op under each requested
// backend (correctness against the float32 torch reference, median time, TFLOP/s, % of peak, peak
// memory); `kiln bench model` (whole training steps) is not written yet.
#include "common.h"

#include "bench/op_bench.h"
#include "io/files.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/Context.h>
#include <fmt/format.h>

#include <iostream>

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

} // namespace

void usage_bench() {
  std::cout
      << "usage: kiln bench op --op OP [--backends torch,cuda] [--shape K=V,...]\n"
         "                     [--dtype bf16|fp16|fp32] [--backward] [--device cpu|cuda]\n"
         "                     [--steps N] [--warmup N] [--seed N] [--json FILE]\n"
         "       kiln bench model ...   (not written yet)\n\n"
         "Measures OP under each backend, forced with backend.strict = true: the error of its\n"
         "output against the torch reference run in float32 on the same (upcast) random\n"
         "inputs, the median time (CUDA events on a GPU, wall clock on the CPU), TFLOP/s by\n"
         "shared/perf.md's conventions, % of the bf16 peak, and peak device memory. Ops and\n"
         "their shape keys (defaults: GLM-5):\n";
  for (const auto& spec : bench::op_specs()) {
    std::string keys;
    for (const auto& [k, v] : spec.keys) {
      keys += fmt::format("{}{}={}", keys.empty() ? "" : ",", k,
                          v == 0 ? std::string("T") : std::to_string(v));
    }
    std::cout << fmt::format("  {:<13} {}\n", spec.name, keys);
  }
  std::cout << "--backward adds the gradients of sum(out * r) (r random) w.r.t. the floating\n"
               "inputs: the backward pass alone is timed. indexer_topk compares selected sets.\n\n"
            << plugin_options();
}

int cmd_bench(const std::vector<std::string>& args) {
  KILN_CHECK_USER(!args.empty(),
                  "kiln bench: expected a subcommand: op or model (see `kiln help "
                  "bench`)");
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "op") return bench_op(rest);
  KILN_CHECK_USER(args[0] != "model",
                  "kiln bench model: not written yet (issue 8); use `kiln bench op` for one op");
  user_error("kiln bench: unknown subcommand '{}'; expected op or model", args[0]);
}

} // namespace kiln::cli
