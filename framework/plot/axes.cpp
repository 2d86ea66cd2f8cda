#include "plot/axes.h"

#include "plot/font.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace kiln::plot::detail {
namespace {

constexpr int kPad = 14;       // around the panel
constexpr int kTickLength = 5; // outside the frame
constexpr int kTickGap = 6;    // tick mark to label
constexpr int kLabelGap = 10;  // tick labels to axis label, title to plot
constexpr int kLegendInset = 10;

int cap_height(int scale) {
  return kGlyphAscent * scale;
}

// The pixel row or column that holds position `p`, kept inside [first, first + length).
int pixel_at(double p, int first, int length) {
  return std::clamp(static_cast<int>(std::floor(p)), first, first + length - 1);
}

bool inside(double p, int first, int length) {
  return p >= first - 0.5 && p <= first + length + 0.5;
}

} // namespace

double Scale::operator()(double v) const {
  const double t = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo))
                       : (v - lo) / (hi - lo);
  return p_lo + t * (p_hi - p_lo);
}

Rect plot_rect(const Rect& area, const Style& style, const Labels& labels, int y_tick_width,
               int right_overhang) {
  const int s = style.text_scale;
  int left = area.x + kPad + y_tick_width + kTickGap + kTickLength;
  if (!labels.ylabel.empty()) left += text_height(s) + kLabelGap;
  int top = area.y + kPad;
  if (!labels.title.empty()) top += text_height(style.title_scale) + kLabelGap;
  int bottom = area.bottom() - kPad - text_height(s) - kTickGap - kTickLength;
  if (!labels.xlabel.empty()) bottom -= text_height(s) + kLabelGap;
  const int right = area.right() - std::max(kPad, right_overhang + 4);
  return {left, top, std::max(right - left, 8), std::max(bottom - top, 8)};
}

int label_width(const Ticks& ticks, int scale) {
  int width = 0;
  for (const auto& label : ticks.labels) width = std::max(width, text_width(label, scale));
  return width;
}

int tick_count_for(int length, int label_width, int scale) {
  // Room for the label plus about three characters of space between neighbours.
  return std::max(2, length / std::max(label_width + 18 * scale, 40 * scale));
}

void draw_plot_background(Canvas& canvas, const Rect& plot, const Style& style) {
  canvas.fill_rect(plot, style.plot_background);
}

void draw_frame(Canvas& canvas, const Rect& plot, const Style& style) {
  canvas.stroke_rect({plot.x - 1, plot.y - 1, plot.width + 2, plot.height + 2}, style.frame);
}

void draw_y_axis(Canvas& canvas, const Rect& plot, const Scale& y, const Ticks& ticks,
                 const Style& style) {
  const int s = style.text_scale;
  for (const double v : ticks.minor) {
    const double p = y(v);
    if (!inside(p, plot.y, plot.height)) continue;
    canvas.fill_rect({plot.x, pixel_at(p, plot.y, plot.height), plot.width, 1}, style.minor_grid);
  }
  for (size_t i = 0; i < ticks.values.size(); ++i) {
    const double p = y(ticks.values[i]);
    if (!inside(p, plot.y, plot.height)) continue;
    const int row = pixel_at(p, plot.y, plot.height);
    canvas.fill_rect({plot.x, row, plot.width, 1}, style.grid);
    canvas.fill_rect({plot.x - 1 - kTickLength, row, kTickLength, 1}, style.frame);
    canvas.text(plot.x - 1 - kTickLength - kTickGap, row - cap_height(s) / 2, ticks.labels[i],
                style.muted_text, s, Align::kEnd);
  }
}

void draw_x_axis(Canvas& canvas, const Rect& plot, const Scale& x, const Ticks& ticks,
                 const Style& style, bool grid) {
  const int s = style.text_scale;
  int last_end = std::numeric_limits<int>::min();
  for (size_t i = 0; i < ticks.values.size(); ++i) {
    const double p = x(ticks.values[i]);
    if (!inside(p, plot.x, plot.width)) continue;
    const int column = pixel_at(p, plot.x, plot.width);
    if (grid) canvas.fill_rect({column, plot.y, 1, plot.height}, style.grid);
    canvas.fill_rect({column, plot.bottom() + 1, 1, kTickLength}, style.frame);
    const int width = text_width(ticks.labels[i], s);
    if (column - width / 2 < last_end + 4 * s) continue;
    canvas.text(column, plot.bottom() + 1 + kTickLength + kTickGap, ticks.labels[i],
                style.muted_text, s, Align::kCenter);
    last_end = column - width / 2 + width;
  }
}

void draw_labels(Canvas& canvas, const Rect& area, const Rect& plot, const Style& style,
                 const Labels& labels) {
  const int s = style.text_scale;
  if (!labels.title.empty()) {
    canvas.text(plot.x + plot.width / 2, area.y + kPad, labels.title, style.text, style.title_scale,
                Align::kCenter, true);
  }
  if (!labels.xlabel.empty()) {
    canvas.text(plot.x + plot.width / 2, area.bottom() - kPad - text_height(s), labels.xlabel,
                style.text, s, Align::kCenter);
  }
  if (!labels.ylabel.empty()) {
    canvas.text_up(area.x + kPad, plot.y + plot.height / 2, labels.ylabel, style.text, s,
                   Align::kCenter);
  }
}

void draw_legend(Canvas& canvas, const Rect& plot, std::span<const LegendEntry> entries,
                 std::span<const Point> avoid, const Style& style) {
  if (entries.empty()) return;
  const int s = style.text_scale;
  const int pad = 5 * s;
  const int row = text_height(s) + 3 * s;
  const int sample = 13 * s;
  int name_width = 0;
  for (const auto& e : entries) name_width = std::max(name_width, text_width(e.name, s));
  const int width = pad + sample + 4 * s + name_width + pad;
  const int height = pad + static_cast<int>(entries.size()) * row - 3 * s + pad - 2 * s;

  const int left = plot.x + kLegendInset;
  const int right = plot.right() - kLegendInset - width;
  const int top = plot.y + kLegendInset;
  const int bottom = plot.bottom() - kLegendInset - height;
  const std::array<Rect, 4> corners = {
      Rect{right, top, width, height}, Rect{left, top, width, height},
      Rect{right, bottom, width, height}, Rect{left, bottom, width, height}};
  Rect box = corners[0];
  long fewest = std::numeric_limits<long>::max();
  for (const Rect& c : corners) {
    const long covered = std::count_if(avoid.begin(), avoid.end(), [&](const Point& p) {
      return p.x >= c.x - 4 && p.x <= c.right() + 4 && p.y >= c.y - 4 && p.y <= c.bottom() + 4;
    });
    if (covered < fewest) {
      fewest = covered;
      box = c;
    }
  }

  canvas.fill_rect(box, kWhite, 0.9);
  canvas.stroke_rect(box, mix(style.frame, kWhite, 0.4));
  for (size_t i = 0; i < entries.size(); ++i) {
    const LegendEntry& e = entries[i];
    const int text_top = box.y + pad + static_cast<int>(i) * row;
    const double middle = text_top + cap_height(s) / 2.0;
    const int x = box.x + pad;
    if (e.box) {
      canvas.fill_rect({x + (sample - cap_height(s)) / 2, text_top, cap_height(s), cap_height(s)},
                       e.color);
    } else {
      const Point ends[] = {{x + 0.0, middle}, {x + 1.0 * sample, middle}};
      canvas.polyline(ends, e.color, e.line_width, e.opacity, box);
      if (e.marker_radius > 0)
        canvas.disc({x + sample / 2.0, middle}, e.marker_radius, e.color, e.opacity, box);
    }
    canvas.text(x + sample + 4 * s, text_top, e.name, style.text, s);
  }
}

void draw_empty(Canvas& canvas, const Rect& area, const Style& style, const Labels& labels) {
  const Rect plot = plot_rect(area, style, labels, 0, 0);
  draw_plot_background(canvas, plot, style);
  draw_frame(canvas, plot, style);
  canvas.text(plot.x + plot.width / 2, plot.y + (plot.height - cap_height(style.text_scale)) / 2,
              "no data", style.muted_text, style.text_scale, Align::kCenter);
  draw_labels(canvas, area, plot, style, labels);
}

} // namespace kiln::plot::detail
