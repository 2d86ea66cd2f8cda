// The two kinds of chart a Figure panel holds: LineChart (named series of (x, y) points) and
// BarChart (groups of bars over named categories). Each draws itself into a rectangle of a
// canvas: title, axis labels, ticks with grid lines, the data, a legend.
#pragma once

#include "plot/canvas.h"

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace kiln::plot {

/// Colours and text sizes shared by every panel of a figure.
struct Style {
  int text_scale = 2;  ///< tick labels, legends, axis labels (2 = 10x14-pixel capitals)
  int title_scale = 2; ///< panel titles, drawn bold
  int figure_title_scale = 3;
  Rgb background = kWhite;
  Rgb plot_background = {252, 252, 253};
  Rgb grid = {226, 228, 232};
  Rgb minor_grid = {241, 242, 245};
  Rgb frame = {150, 154, 160};
  Rgb text = {33, 37, 41};
  Rgb muted_text = {88, 94, 102}; ///< tick labels, bar values
};

/// The i-th colour of the series palette (ten well-separated colours, then round again).
Rgb palette(size_t i);

struct LineStyle {
  std::optional<Rgb> color; ///< default: palette(index of the series in its chart)
  double width = 2.0;       ///< pixels
  double opacity = 1.0;
  double marker_radius = 0; ///< > 0: a disc of this radius at every point
};

/// The title and axis labels every chart has; setters return the chart for chaining.
template <class Chart>
class Labelled {
 public:
  Chart& title(std::string text) { return set(title_, std::move(text)); }
  Chart& xlabel(std::string text) { return set(xlabel_, std::move(text)); }
  Chart& ylabel(std::string text) { return set(ylabel_, std::move(text)); }

 protected:
  std::string title_;
  std::string xlabel_;
  std::string ylabel_;

 private:
  Chart& set(std::string& field, std::string text) {
    field = std::move(text);
    return static_cast<Chart&>(*this);
  }
};

class LineChart : public Labelled<LineChart> {
 public:
  /// A log10 y axis; points with y <= 0 are left out like NaN.
  LineChart& log_y(bool on = true);
  /// Adds a series; `xs` and `ys` are copied and must have the same length (else
  /// std::invalid_argument). A point whose x or y is NaN or infinite breaks the line in two.
  /// An empty `name` keeps the series out of the legend.
  LineChart& line(std::string name, std::span<const double> xs, std::span<const double> ys,
                  LineStyle style = {});

  /// Draws the chart into `area` of `canvas`. A chart without any drawable point says "no data".
  void draw(Canvas& canvas, const Rect& area, const Style& style) const;

 private:
  struct Series {
    std::string name;
    std::vector<double> xs;
    std::vector<double> ys;
    LineStyle style;
  };
  bool log_y_ = false;
  std::vector<Series> series_;
};

class BarChart : public Labelled<BarChart> {
 public:
  /// The names along the x axis, one slot each; set before any group.
  BarChart& categories(std::vector<std::string> names);
  /// One bar per category (NaN: no bar), drawn side by side with the other groups' bars in each
  /// slot. Throws std::invalid_argument unless values.size() equals the number of categories.
  BarChart& group(std::string name, std::span<const double> values,
                  std::optional<Rgb> color = std::nullopt);
  /// Prints each bar's value over it (default on; left out where a bar is too narrow).
  BarChart& value_labels(bool on = true);

  void draw(Canvas& canvas, const Rect& area, const Style& style) const;

 private:
  struct Group {
    std::string name;
    std::vector<double> values;
    Rgb color;
  };
  std::vector<std::string> categories_;
  std::vector<Group> groups_;
  bool value_labels_ = true;
};

} // namespace kiln::plot
