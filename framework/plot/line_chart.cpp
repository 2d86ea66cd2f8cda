#include "plot/axes.h"
#include "plot/chart.h"
#include "plot/font.h"
#include "plot/ticks.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace kiln::plot {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Tableau's ten categorical colours: distinct in hue and lightness, and readable on white.
constexpr std::array<Rgb, 10> kPalette = {{{31, 119, 180},
                                           {255, 127, 14},
                                           {44, 160, 44},
                                           {214, 39, 40},
                                           {148, 103, 189},
                                           {140, 86, 75},
                                           {227, 119, 194},
                                           {127, 127, 127},
                                           {188, 189, 34},
                                           {23, 190, 207}}};

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  bool empty() const { return lo > hi; }
  void add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
};

// Widens [lo, hi] by `fraction` of its span on each side (in log10 space for log axes); a
// single value becomes a range around it.
Range padded(Range r, double fraction, bool log) {
  if (log) {
    double lo = std::log10(r.lo);
    double hi = std::log10(r.hi);
    if (hi - lo < 1e-9) {
      lo -= 0.5;
      hi += 0.5;
    }
    const double pad = (hi - lo) * fraction;
    return {std::pow(10.0, lo - pad), std::pow(10.0, hi + pad)};
  }
  if (r.hi - r.lo <= 1e-12 * std::max(1.0, std::fabs(r.hi))) {
    const double half = r.lo == 0 ? 1.0 : std::fabs(r.lo) * 0.1;
    return {r.lo - half, r.hi + half};
  }
  const double pad = (r.hi - r.lo) * fraction;
  return {r.lo - pad, r.hi + pad};
}

} // namespace

Rgb palette(size_t i) {
  return kPalette[i % kPalette.size()];
}

LineChart& LineChart::log_y(bool on) {
  log_y_ = on;
  return *this;
}

LineChart& LineChart::line(std::string name, std::span<const double> xs, std::span<const double> ys,
                           LineStyle style) {
  if (xs.size() != ys.size()) {
    throw std::invalid_argument("plot::LineChart::line('" + name +
                                "'): " + std::to_string(xs.size()) + " x values but " +
                                std::to_string(ys.size()) + " y values");
  }
  if (!style.color) style.color = palette(series_.size());
  series_.push_back({std::move(name), {xs.begin(), xs.end()}, {ys.begin(), ys.end()}, style});
  return *this;
}

void LineChart::draw(Canvas& canvas, const Rect& area, const Style& style) const {
  const int s = style.text_scale;
  const detail::Labels labels{title_, xlabel_, ylabel_};
  const auto usable = [&](double x, double y) {
    return std::isfinite(x) && std::isfinite(y) && (!log_y_ || y > 0);
  };
  Range xr;
  Range yr;
  for (const auto& series : series_) {
    for (size_t i = 0; i < series.xs.size(); ++i) {
      if (!usable(series.xs[i], series.ys[i])) continue;
      xr.add(series.xs[i]);
      yr.add(series.ys[i]);
    }
  }
  if (xr.empty()) {
    detail::draw_empty(canvas, area, style, labels);
    return;
  }
  xr = padded(xr, 0.02, false);
  yr = padded(yr, 0.05, log_y_);

  // The y ticks depend only on the plot's height; their labels' width then fixes the left edge,
  // and the x labels' width the right edge.
  const Rect first = detail::plot_rect(area, style, labels, 0, 0);
  const int y_count = std::max(2, first.height / (text_height(s) * 3));
  const Ticks y_ticks =
      log_y_ ? log_ticks(yr.lo, yr.hi, y_count) : linear_ticks(yr.lo, yr.hi, y_count);
  const int y_width = detail::label_width(y_ticks, s);
  Rect plot = detail::plot_rect(area, style, labels, y_width, 0);
  Ticks x_ticks = linear_ticks(xr.lo, xr.hi, detail::tick_count_for(plot.width, 0, s));
  int x_width = detail::label_width(x_ticks, s);
  plot = detail::plot_rect(area, style, labels, y_width, x_width / 2);
  x_ticks = linear_ticks(xr.lo, xr.hi, detail::tick_count_for(plot.width, x_width, s));

  const detail::Scale x{xr.lo, xr.hi, false, 1.0 * plot.x, 1.0 * plot.right()};
  const detail::Scale y{yr.lo, yr.hi, log_y_, 1.0 * plot.bottom(), 1.0 * plot.y};

  detail::draw_plot_background(canvas, plot, style);
  detail::draw_y_axis(canvas, plot, y, y_ticks, style);
  detail::draw_x_axis(canvas, plot, x, x_ticks, style);

  std::vector<Point> occupied; // where the data lies, for the legend to avoid
  std::vector<detail::LegendEntry> legend;
  for (const auto& series : series_) {
    const LineStyle& ls = series.style;
    std::vector<Point> path; // NaN points break it
    size_t run = 0;          // points since the last break
    const auto end_run = [&] {
      if (run == 1) // a lone point: a dot big enough to see
        canvas.disc(path.back(), std::max(ls.width / 2 + 0.5, 2.0), *ls.color, ls.opacity, plot);
      run = 0;
    };
    for (size_t i = 0; i < series.xs.size(); ++i) {
      if (!usable(series.xs[i], series.ys[i])) {
        end_run();
        path.push_back({kNaN, kNaN});
        continue;
      }
      const Point p{x(series.xs[i]), y(series.ys[i])};
      if (run > 0) { // points every few pixels along the segment
        const Point& q = path.back();
        const int steps = static_cast<int>(std::hypot(p.x - q.x, p.y - q.y) / 6);
        for (int k = 1; k < steps; ++k) {
          const double t = static_cast<double>(k) / steps;
          occupied.push_back({q.x + t * (p.x - q.x), q.y + t * (p.y - q.y)});
        }
      }
      occupied.push_back(p);
      path.push_back(p);
      ++run;
    }
    end_run();
    canvas.polyline(path, *ls.color, ls.width, ls.opacity, plot);
    if (ls.marker_radius > 0) {
      for (const Point& p : path) canvas.disc(p, ls.marker_radius, *ls.color, ls.opacity, plot);
    }
    if (!series.name.empty())
      legend.push_back({series.name, *ls.color, false, ls.width, ls.opacity, ls.marker_radius});
  }

  detail::draw_frame(canvas, plot, style);
  detail::draw_legend(canvas, plot, legend, occupied, style);
  detail::draw_labels(canvas, area, plot, style, labels);
}

} // namespace kiln::plot
