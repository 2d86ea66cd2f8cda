// `kiln plot RUN_DIR`: the curves of a run's metrics.jsonl (loss, learning rate, gradient norm,
// throughput) drawn to a PNG.
#include "common.h"

#include "kiln/sdk/error.h"
#include "plot/figure.h"
#include "plot/ticks.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <stdexcept>

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Curve {
  std::vector<double> steps;
  std::vector<double> values;
  bool empty() const { return steps.empty(); }
};

/// What `kiln plot` draws of a run: one curve per metric key.
struct Metrics {
  Curve loss;
  Curve val_loss;
  Curve lr;
  Curve grad_norm;
  Curve tokens_per_s;
  size_t lines = 0;
};

/// The value of `key` in one metrics line: a number, NaN for null (how a trainer writes a
/// non-finite value in JSON), nothing when absent.
std::optional<double> number(const json& line, const char* key, const std::string& where) {
  const auto it = line.find(key);
  if (it == line.end()) return std::nullopt;
  if (it->is_null()) return kNaN;
  KILN_CHECK_USER(it->is_number(), "{}: '{}' should be a number, found {}", where, key, it->dump());
  return it->get<double>();
}

/// Reads metrics.jsonl: one JSON object per line; keys other than the plotted ones are ignored,
/// and so are lines without any plotted key. A last line without its newline that does not
/// parse is being written by a running trainer and is left out.
Metrics read_metrics(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  KILN_CHECK_USER(in.good(), "cannot read {}", file.string());
  Metrics m;
  std::string text;
  while (std::getline(in, text)) {
    ++m.lines;
    const bool complete = !in.eof();
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", file.string(), m.lines);
    json line;
    try {
      line = json::parse(text);
    } catch (const json::parse_error& e) {
      if (!complete) break;
      user_error(
          "{}:{}: not valid JSON; each line of metrics.jsonl is one object like "
          "{{\"step\": 10, \"loss\": 2.5}}",
          where, e.byte);
    }
    KILN_CHECK_USER(line.is_object(), "{}: expected a JSON object, found {}", where,
                    line.type_name());
    const struct {
      const char* key;
      Curve& curve;
    } plotted[] = {{"loss", m.loss},
                   {"val_loss", m.val_loss},
                   {"lr", m.lr},
                   {"grad_norm", m.grad_norm},
                   {"tokens_per_s", m.tokens_per_s}};
    std::optional<double> step;
    for (const auto& [key, curve] : plotted) {
      const std::optional<double> value = number(line, key, where);
      if (!value) continue;
      if (!step) {
        step = number(line, "step", where);
        KILN_CHECK_USER(step && std::isfinite(*step), "{}: '{}' without a numeric 'step'", where,
                        key);
      }
      curve.steps.push_back(*step);
      curve.values.push_back(*value);
    }
  }
  return m;
}

/// The mean of the `window` points centred on each point (fewer at the ends), over the finite
/// ones; NaN points stay NaN. Centred rather than trailing, so the smoothed curve does not lag.
std::vector<double> moving_average(const std::vector<double>& values, size_t window) {
  const size_t n = values.size();
  std::vector<double> sum(n + 1, 0.0); // prefix sums over the finite values
  std::vector<size_t> count(n + 1, 0);
  for (size_t i = 0; i < n; ++i) {
    const bool finite = std::isfinite(values[i]);
    sum[i + 1] = sum[i] + (finite ? values[i] : 0.0);
    count[i + 1] = count[i] + (finite ? 1 : 0);
  }
  std::vector<double> out(n, kNaN);
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) continue;
    const size_t first = i >= (window - 1) / 2 ? i - (window - 1) / 2 : 0;
    const size_t last = std::min(n, i + window / 2 + 1);
    out[i] = (sum[last] - sum[first]) / static_cast<double>(count[last] - count[first]);
  }
  return out;
}

/// The last finite value of a curve and its step.
std::optional<std::pair<double, double>> last_point(const Curve& c) {
  for (size_t i = c.values.size(); i-- > 0;) {
    if (std::isfinite(c.values[i])) return std::pair{c.steps[i], c.values[i]};
  }
  return std::nullopt;
}

std::string run_name(const fs::path& run_dir) {
  const fs::path clean = run_dir.lexically_normal();
  const fs::path name = clean.has_filename() ? clean.filename() : clean.parent_path().filename();
  return name.empty() ? fs::absolute(run_dir).lexically_normal().string() : name.string();
}

} // namespace

void usage_plot() {
  std::cout
      << "usage: kiln plot RUN_DIR [--out FILE.png] [--smooth N]\n\n"
         "Draws the curves of RUN_DIR/metrics.jsonl (written by `kiln run`) to a PNG:\n"
         "loss by step (train, and validation where recorded), learning rate, gradient\n"
         "norm (log scale) and tokens/s when the run recorded them. Prints the PNG's path.\n\n"
         "  --out FILE.png  where to write it (default RUN_DIR/plot.png)\n"
         "  --smooth N      also draw the train loss averaged over N points (centred)\n";
}

int cmd_plot(const std::vector<std::string>& args) {
  po::options_description options("plot options");
  options.add_options()("run-dir", po::value<std::string>(), "the run's folder")(
      "out", po::value<std::string>(), "PNG to write (default RUN_DIR/plot.png)")(
      "smooth", po::value<int>()->default_value(0), "moving-average window for the loss");
  po::positional_options_description positional;
  positional.add("run-dir", 1);
  const auto vm = parse(args, options, positional);
  KILN_CHECK_USER(vm.count("run-dir"),
                  "kiln plot: expected RUN_DIR, the folder of a run "
                  "(see `kiln help plot`)");
  const fs::path run_dir = vm["run-dir"].as<std::string>();
  const int smooth = vm["smooth"].as<int>();
  KILN_CHECK_USER(smooth >= 0, "--smooth: expected a window of 0 (off) or more steps, found {}",
                  smooth);

  KILN_CHECK_USER(fs::exists(run_dir),
                  "run folder {} does not exist; run `kiln run RECIPE` first, or pass the "
                  "folder it wrote",
                  run_dir.string());
  KILN_CHECK_USER(fs::is_directory(run_dir),
                  "{} is not a folder; pass the run's folder (the one holding metrics.jsonl)",
                  run_dir.string());
  const fs::path file = run_dir / "metrics.jsonl";
  KILN_CHECK_USER(fs::exists(file),
                  "{} has no metrics.jsonl; run `kiln run RECIPE` first, or pass the folder of a "
                  "run that logged metrics",
                  run_dir.string());
  const Metrics m = read_metrics(file);
  const auto last = last_point(m.loss);
  KILN_CHECK_USER(last.has_value(),
                  "{}: no training loss in {} lines (expected lines like {{\"step\": 10, "
                  "\"loss\": 2.5}}); run `kiln run RECIPE` and plot once it has logged a step",
                  file.string(), m.lines);
  const fs::path out =
      vm.count("out") ? fs::path(vm["out"].as<std::string>()) : run_dir / "plot.png";

  // The loss across the top; the other curves the run recorded side by side under it.
  std::vector<std::pair<const Curve*, const char*>> lower;
  if (!m.lr.empty()) lower.emplace_back(&m.lr, "learning rate");
  if (!m.grad_norm.empty()) lower.emplace_back(&m.grad_norm, "gradient norm");
  if (!m.tokens_per_s.empty()) lower.emplace_back(&m.tokens_per_s, "throughput");
  const int cols = std::max<int>(1, static_cast<int>(lower.size()));
  plot::Figure fig(1600, lower.empty() ? 600 : 1000, lower.empty() ? 1 : 2, cols);
  fig.title(fmt::format("{}: step {:g}, loss {}", run_name(run_dir), last->first,
                        plot::format_value(last->second)));

  plot::LineChart& loss = fig.panel(0, 0, 1, cols).title("loss").xlabel("step").ylabel("loss");
  const plot::Rgb train = plot::palette(0);
  if (smooth > 1) {
    loss.line("train", m.loss.steps, m.loss.values, {train, 1.5, 0.3});
    loss.line(fmt::format("train, mean of {}", smooth), m.loss.steps,
              moving_average(m.loss.values, static_cast<size_t>(smooth)), {train, 2.0});
  } else {
    loss.line("train", m.loss.steps, m.loss.values, {train});
  }
  if (!m.val_loss.empty()) {
    const double marker = m.val_loss.steps.size() <= 60 ? 4.0 : 0.0;
    loss.line("validation", m.val_loss.steps, m.val_loss.values,
              {plot::palette(1), 2.0, 1.0, marker});
  }
  for (size_t i = 0; i < lower.size(); ++i) {
    const auto& [curve, title] = lower[i];
    plot::LineChart& chart = fig.panel(1, static_cast<int>(i)).title(title).xlabel("step");
    if (curve == &m.grad_norm) chart.log_y();
    if (curve == &m.tokens_per_s) chart.ylabel("tokens/s");
    chart.line("", curve->steps, curve->values, {plot::palette(2 + i)});
  }

  try {
    fig.save_png(out);
  } catch (const std::runtime_error& e) {
    user_error("{}; check that the folder exists and is writable", e.what());
  }
  std::cout << out.string() << "\n";
  return 0;
}

} // namespace kiln::cli
