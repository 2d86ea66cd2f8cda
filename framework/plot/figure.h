// A figure: a grid of chart panels on one canvas, saved as PNG.
//
//   plot::Figure fig(1600, 1000, 2, 2);
//   fig.title("run 7");
//   fig.panel(0, 0, 1, 2).title("loss").xlabel("step").line("train", steps, loss);
//   fig.panel(1, 0).title("grad norm").log_y().line("", steps, grad_norm);
//   fig.bar_panel(1, 1).categories({"fwd", "bwd"}).group("torch", ms);
//   fig.save_png("plot.png");
#pragma once

#include "plot/canvas.h"
#include "plot/chart.h"

#include <filesystem>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace kiln::plot {

class Figure {
 public:
  /// A `width` x `height` pixel figure split into `rows` x `cols` equal cells. Throws
  /// std::invalid_argument on a size the canvas refuses or a grid under 1x1.
  Figure(int width, int height, int rows = 1, int cols = 1);

  /// A title over the whole figure.
  Figure& title(std::string text);
  Style& style() { return style_; }

  /// The line chart covering cells [row, row + row_span) x [col, col + col_span), made on first
  /// call; later calls with the same cell return it. References stay valid for the figure's
  /// life. Throws std::invalid_argument for cells outside the grid or overlapping another
  /// panel, and when the cell holds a bar chart.
  LineChart& panel(int row, int col, int row_span = 1, int col_span = 1);
  /// The same for a bar chart.
  BarChart& bar_panel(int row, int col, int row_span = 1, int col_span = 1);

  /// Draws every panel; cells without one stay blank.
  Canvas render() const;
  /// render() written as PNG, atomically (see plot::save_png).
  void save_png(const std::filesystem::path& file) const;

 private:
  struct Panel {
    int row, col, row_span, col_span;
    std::variant<LineChart, BarChart> chart;
  };
  template <class Chart>
  Chart& find_or_add(int row, int col, int row_span, int col_span);

  int width_;
  int height_;
  int rows_;
  int cols_;
  std::string title_;
  Style style_;
  std::vector<std::unique_ptr<Panel>> panels_;
};

} // namespace kiln::plot
