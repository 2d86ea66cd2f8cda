#include "plot/ticks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <stdexcept>

namespace kiln::plot {
namespace {

// Tolerance for values that are meant to be exact multiples but went through floating point.
constexpr double kEps = 1e-9;

int floor_log10(double v) {
  return static_cast<int>(std::floor(std::log10(std::fabs(v)) + kEps));
}

double pow10(int e) {
  return std::pow(10.0, e);
}

std::string fixed(double v, int decimals, const char* suffix = "") {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f%s", decimals, v, suffix);
  return buffer;
}

// "8.10" -> "8.1", "55.0" -> "55"; integers stay as they are.
std::string without_trailing_zeros(std::string text) {
  if (text.find('.') == std::string::npos) return text;
  while (text.back() == '0') text.pop_back();
  if (text.back() == '.') text.pop_back();
  return text;
}

// "1.50e-4" -> "1.5e-4", "1.0e-4" -> "1e-4".
std::string scientific(double v, int decimals) {
  int e = floor_log10(v);
  double mantissa = v / pow10(e);
  if (std::fabs(std::stod(fixed(mantissa, decimals))) >= 10) {
    mantissa /= 10;
    ++e;
  }
  return without_trailing_zeros(fixed(mantissa, decimals)) + "e" + std::to_string(e);
}

constexpr const char* kSuffixes[] = {"", "k", "M", "G", "T"};

// The power of a thousand (1..4) whose suffix prints `magnitude` (>= 1e4).
int thousands(double magnitude) {
  return std::clamp(floor_log10(magnitude) / 3, 1, 4);
}

std::vector<double> multiples(double lo, double hi, std::initializer_list<int> mantissas) {
  std::vector<double> out;
  for (int e = floor_log10(lo); e <= floor_log10(hi); ++e) {
    for (const int m : mantissas) {
      const double v = m * pow10(e);
      if (v >= lo * (1 - kEps) && v <= hi * (1 + kEps)) out.push_back(v);
    }
  }
  return out;
}

std::string log_label(double v) {
  const int e = floor_log10(v);
  if (e >= 4) {
    const int t = thousands(v);
    return fixed(v / pow10(3 * t), std::max(0, 3 * t - e), kSuffixes[t]);
  }
  if (e >= -3) return fixed(v, std::max(0, -e));
  return scientific(v, 0);
}

Ticks labelled_log(std::vector<double> values, std::vector<double> minor) {
  Ticks t;
  t.values = std::move(values);
  t.minor = std::move(minor);
  for (const double v : t.values) t.labels.push_back(log_label(v));
  return t;
}

std::vector<double> without(const std::vector<double>& all, const std::vector<double>& drop) {
  std::vector<double> out;
  for (const double v : all) {
    const bool dropped = std::any_of(drop.begin(), drop.end(), [&](double d) {
      return std::fabs(d - v) <= kEps * std::fabs(v);
    });
    if (!dropped) out.push_back(v);
  }
  return out;
}

} // namespace

std::vector<std::string> tick_labels(std::span<const double> values, double step) {
  double top = 0;
  for (const double v : values) top = std::max(top, std::fabs(v));
  const int step_e = floor_log10(step);
  std::vector<std::string> labels;
  for (const double v : values) {
    if (std::fabs(v) < step * 1e-6) {
      labels.emplace_back("0");
    } else if (top >= 1e4) {
      const int t = thousands(top);
      labels.push_back(fixed(v / pow10(3 * t), std::max(0, 3 * t - step_e), kSuffixes[t]));
    } else if (step_e >= -3) {
      labels.push_back(fixed(v, std::max(0, -step_e)));
    } else {
      labels.push_back(scientific(v, std::max(0, floor_log10(v) - step_e)));
    }
  }
  return labels;
}

Ticks linear_ticks(double lo, double hi, int max_count) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo < hi)) {
    throw std::invalid_argument("plot::linear_ticks: expected finite lo < hi, got [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  max_count = std::max(max_count, 1);
  Ticks t;
  double step = 0;
  // True when the search is over. A longer step can leave no multiple inside a narrow range:
  // then the last step that had some stays, even one over the limit.
  const auto try_step = [&](double candidate) {
    const double first = std::ceil(lo / candidate - kEps);
    const double last = std::floor(hi / candidate + kEps);
    if (last < first) return step > 0;
    t.values.clear();
    for (double i = first; i <= last; ++i) {
      const double v = i * candidate;
      t.values.push_back(std::fabs(v) < candidate * kEps ? 0.0 : v);
    }
    step = candidate;
    return last - first + 1 <= max_count;
  };
  // 10^e <= (hi - lo) / max_count: the first candidate has at least one multiple in range.
  for (int e = floor_log10((hi - lo) / max_count);; ++e) {
    if (try_step(pow10(e)) || try_step(2 * pow10(e)) || try_step(5 * pow10(e))) break;
  }
  t.labels = tick_labels(t.values, step);
  return t;
}

Ticks log_ticks(double lo, double hi, int max_count) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo > 0 && lo < hi)) {
    throw std::invalid_argument("plot::log_ticks: expected finite 0 < lo < hi, got [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  max_count = std::max(max_count, 2);
  const auto count = [](const std::vector<double>& v) { return static_cast<int>(v.size()); };
  const std::vector<double> decades = multiples(lo, hi, {1});
  const std::vector<double> all = multiples(lo, hi, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  if (count(decades) >= 3) {
    if (count(decades) <= max_count) return labelled_log(decades, without(all, decades));
    // Too many decades: label every stride-th power of ten, grid the others.
    const int stride = (count(decades) + max_count - 1) / max_count;
    std::vector<double> kept;
    for (const double v : decades) {
      if (floor_log10(v) % stride == 0) kept.push_back(v);
    }
    return labelled_log(kept, without(decades, kept));
  }
  const std::vector<double> one_two_five = multiples(lo, hi, {1, 2, 5});
  if (count(one_two_five) >= 3 && count(one_two_five) <= max_count)
    return labelled_log(one_two_five, without(all, one_two_five));
  if (count(all) >= 3 && count(all) <= max_count) return labelled_log(all, {});
  if (count(decades) == 2) return labelled_log(decades, without(all, decades));
  return linear_ticks(lo, hi, max_count); // less than a decade with few round values
}

std::string format_value(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  if (value == 0) return "0";
  const double magnitude = std::fabs(value);
  if (magnitude >= 1e4) {
    int t = thousands(magnitude);
    double scaled = value / pow10(3 * t);
    // 999.96k prints as 1000k: move up a suffix instead.
    if (std::fabs(std::stod(fixed(scaled, std::max(0, 2 - floor_log10(scaled))))) >= 1000 &&
        t < 4) {
      ++t;
      scaled /= 1000;
    }
    return without_trailing_zeros(fixed(scaled, std::max(0, 2 - floor_log10(scaled)))) +
           kSuffixes[t];
  }
  if (magnitude >= 1e-3)
    return without_trailing_zeros(fixed(value, std::max(0, 2 - floor_log10(value))));
  return scientific(value, 2);
}

} // namespace kiln::plot
