// Internal to kiln-plot: the parts LineChart and BarChart share. A panel is laid out as
//
//   +------------------------------------------------+
//   |                 title (bold)                   |
//   | y |  tick  +--------------------------------+  |
//   |   | labels |         plot rectangle         |  |
//   | l |        |  (grid, data, legend inside)   |  |
//   | a |        +--------------------------------+  |
//   | b |           x tick labels                    |
//   | e |              x label                       |
//   +------------------------------------------------+
#pragma once

#include "plot/canvas.h"
#include "plot/chart.h"
#include "plot/ticks.h"

#include <span>
#include <string>
#include <string_view>

namespace kiln::plot::detail {

/// Maps data values to pixel positions along one axis: `lo` to `p_lo`, `hi` to `p_hi`.
struct Scale {
  double lo = 0;
  double hi = 1;
  bool log = false;
  double p_lo = 0;
  double p_hi = 1;
  double operator()(double v) const;
};

struct Labels {
  std::string_view title;
  std::string_view xlabel;
  std::string_view ylabel;
};

/// The plot rectangle inside `area`, leaving room for the labels, `y_tick_width` pixels of y
/// tick labels on the left and `right_overhang` pixels for the last x tick label on the right.
Rect plot_rect(const Rect& area, const Style& style, const Labels& labels, int y_tick_width,
               int right_overhang);

/// The widest label of `ticks` in pixels.
int label_width(const Ticks& ticks, int scale);

/// How many ticks fit along `length` pixels when labels are `label_width` wide.
int tick_count_for(int length, int label_width, int scale);

/// Plot background and frame.
void draw_plot_background(Canvas& canvas, const Rect& plot, const Style& style);
void draw_frame(Canvas& canvas, const Rect& plot, const Style& style);

/// Horizontal grid lines (minor ones lighter), tick marks and labels left of the plot.
void draw_y_axis(Canvas& canvas, const Rect& plot, const Scale& y, const Ticks& ticks,
                 const Style& style);
/// Vertical grid lines (when `grid`), tick marks and labels under the plot; a label that would
/// touch the one before it is left out.
void draw_x_axis(Canvas& canvas, const Rect& plot, const Scale& x, const Ticks& ticks,
                 const Style& style, bool grid = true);

/// Title over the plot, x label under it, y label turned up at the left edge of `area`.
void draw_labels(Canvas& canvas, const Rect& area, const Rect& plot, const Style& style,
                 const Labels& labels);

struct LegendEntry {
  std::string name;
  Rgb color;
  bool box = false; ///< a filled square (bars) rather than a line sample
  double line_width = 2;
  double opacity = 1;
  double marker_radius = 0;
};

/// A legend in the corner of `plot` that covers the fewest of the `avoid` points (top right
/// first among equals). Nothing when `entries` is empty.
void draw_legend(Canvas& canvas, const Rect& plot, std::span<const LegendEntry> entries,
                 std::span<const Point> avoid, const Style& style);

/// A chart without data: its frame and labels, and "no data" in the middle.
void draw_empty(Canvas& canvas, const Rect& area, const Style& style, const Labels& labels);

} // namespace kiln::plot::detail
