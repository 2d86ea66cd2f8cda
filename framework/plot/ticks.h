// Axis ticks and the text of numbers on charts. Linear axes tick at multiples of 1, 2 or 5 times
// a power of ten; log axes at powers of ten, or 1-2-5 / 1..9 multiples of them when the range
// spans too few decades.
#pragma once

#include <span>
#include <string>
#include <vector>

namespace kiln::plot {

struct Ticks {
  std::vector<double> values;      ///< ascending, inside the range
  std::vector<std::string> labels; ///< one per value
  std::vector<double> minor;       ///< unlabelled grid positions (log axes), ascending
};

/// Ticks inside [lo, hi] (lo < hi, both finite) at the multiples of the smallest step
/// 1, 2 or 5 x 10^k that gives at most `max_count` of them (at least 1). Labels share one style
/// chosen by the step: plain decimals ("0.5", "1.0"), k/M/G/T suffixes from 10^4 up ("15.5k"), or
/// scientific below steps of 10^-3 ("1.5e-4"). Throws std::invalid_argument on a bad range.
Ticks linear_ticks(double lo, double hi, int max_count);

/// Ticks inside [lo, hi] (0 < lo < hi) for a log-scaled axis, at most `max_count` labelled ones:
/// powers of ten (every n-th when there are too many), else 1-2-5 multiples, else 1..9 multiples,
/// else linear_ticks. `minor` holds the unlabelled 2..9 multiples between decades.
Ticks log_ticks(double lo, double hi, int max_count);

/// Labels for `values` that are all multiples of `step` (a 1, 2 or 5 x 10^k): see linear_ticks.
std::vector<std::string> tick_labels(std::span<const double> values, double step);

/// A value printed for reading: three significant digits, trailing zeros dropped ("3.21", "8.1",
/// "0.0457", "15.2k", "2.5e-5").
std::string format_value(double value);

} // namespace kiln::plot
