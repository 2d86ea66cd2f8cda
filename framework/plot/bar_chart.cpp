#include "plot/axes.h"
#include "plot/chart.h"
#include "plot/font.h"
#include "plot/ticks.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace kiln::plot {
namespace {

constexpr double kGroupFraction = 0.8; // of a category's slot; the rest separates categories

// `text` cut to at most `width` pixels, ending in ".." when cut.
std::string fitted(const std::string& text, int width, int scale) {
  if (text_width(text, scale) <= width) return text;
  std::string cut = text;
  while (!cut.empty() && text_width(cut + "..", scale) > width) cut.pop_back();
  return cut.empty() ? "" : cut + "..";
}

} // namespace

BarChart& BarChart::categories(std::vector<std::string> names) {
  if (!groups_.empty()) {
    throw std::invalid_argument(
        "plot::BarChart::categories: set the categories before adding groups");
  }
  categories_ = std::move(names);
  return *this;
}

BarChart& BarChart::group(std::string name, std::span<const double> values,
                          std::optional<Rgb> color) {
  if (values.size() != categories_.size()) {
    throw std::invalid_argument("plot::BarChart::group('" + name +
                                "'): " + std::to_string(values.size()) + " values for " +
                                std::to_string(categories_.size()) + " categories");
  }
  const Rgb c = color.value_or(palette(groups_.size()));
  groups_.push_back({std::move(name), {values.begin(), values.end()}, c});
  return *this;
}

BarChart& BarChart::value_labels(bool on) {
  value_labels_ = on;
  return *this;
}

void BarChart::draw(Canvas& canvas, const Rect& area, const Style& style) const {
  const int s = style.text_scale;
  const detail::Labels labels{title_, xlabel_, ylabel_};
  double lo = 0;
  double hi = 0;
  bool any = false;
  for (const auto& g : groups_) {
    for (const double v : g.values) {
      if (!std::isfinite(v)) continue;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      any = true;
    }
  }
  if (!any) {
    detail::draw_empty(canvas, area, style, labels);
    return;
  }
  if (lo == hi) hi = 1;
  // Room for the value labels beyond the longest bars.
  const double span = hi - lo;
  if (hi > 0) hi += 0.12 * span;
  if (lo < 0) lo -= 0.12 * span;

  const Rect first = detail::plot_rect(area, style, labels, 0, 0);
  const Ticks y_ticks = linear_ticks(lo, hi, std::max(2, first.height / (text_height(s) * 3)));
  const Rect plot = detail::plot_rect(area, style, labels, detail::label_width(y_ticks, s), 0);
  const detail::Scale y{lo, hi, false, 1.0 * plot.bottom(), 1.0 * plot.y};

  detail::draw_plot_background(canvas, plot, style);
  detail::draw_y_axis(canvas, plot, y, y_ticks, style);

  const size_t n = categories_.size();
  const double slot = static_cast<double>(plot.width) / n;
  const double bar = slot * kGroupFraction / static_cast<double>(groups_.size());
  // Category names under the slots' centres, as x tick labels without grid lines.
  Ticks names;
  for (size_t c = 0; c < n; ++c) {
    names.values.push_back(static_cast<double>(c));
    names.labels.push_back(fitted(categories_[c], static_cast<int>(slot) - 2 * s, s));
  }
  const detail::Scale x{-0.5, n - 0.5, false, 1.0 * plot.x, 1.0 * plot.right()};
  detail::draw_x_axis(canvas, plot, x, names, style, false);

  // Value labels stay over their own bar, two font columns clear of the neighbours' (a lone
  // group may use its whole slot), all at one size: the text size if every label fits, else
  // half of it; a label that still does not fit is left out.
  const double room = groups_.size() > 1 ? bar - 4 * s : slot - 4 * s;
  int value_scale = s;
  for (const auto& g : groups_) {
    for (const double v : g.values) {
      if (std::isfinite(v) && text_width(format_value(v), s) > room) value_scale = 1;
    }
  }

  const int base = static_cast<int>(std::lround(y(0)));
  std::vector<Point> occupied;
  for (size_t c = 0; c < n; ++c) {
    for (size_t k = 0; k < groups_.size(); ++k) {
      const double v = groups_[k].values[c];
      if (!std::isfinite(v)) continue;
      const double left = plot.x + c * slot + slot * (1 - kGroupFraction) / 2 + k * bar;
      const int x0 = static_cast<int>(std::lround(left)) + (groups_.size() > 1 ? 1 : 0);
      const int x1 = std::max(x0 + 1, static_cast<int>(std::lround(left + bar)) - 1);
      const int end = static_cast<int>(std::lround(y(v)));
      const Rect r{x0, std::min(base, end), x1 - x0, std::max(std::abs(end - base), 1)};
      canvas.fill_rect(r.intersect(plot), groups_[k].color);
      for (int py = r.y; py <= r.bottom(); py += 6) {
        for (int px = r.x; px <= r.right(); px += 6) occupied.push_back({1.0 * px, 1.0 * py});
      }
      const std::string text = format_value(v);
      if (!value_labels_ || text_width(text, value_scale) > room) continue;
      const int cap = kGlyphAscent * value_scale;
      const int top = v >= 0 ? r.y - 4 - cap : r.bottom() + 4;
      canvas.text((x0 + x1) / 2, top, text, style.muted_text, value_scale, Align::kCenter);
      occupied.push_back({(x0 + x1) / 2.0, top + cap / 2.0});
    }
  }
  if (lo < 0) canvas.fill_rect({plot.x, base, plot.width, 1}, style.frame);

  std::vector<detail::LegendEntry> legend;
  for (const auto& g : groups_) {
    if (!g.name.empty()) legend.push_back({g.name, g.color, true});
  }
  detail::draw_frame(canvas, plot, style);
  detail::draw_legend(canvas, plot, legend, occupied, style);
  detail::draw_labels(canvas, area, plot, style, labels);
}

} // namespace kiln::plot
