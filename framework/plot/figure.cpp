#include "plot/figure.h"

#include "plot/font.h"
#include "plot/png.h"

#include <stdexcept>
#include <string>

namespace kiln::plot {
namespace {

std::string cells(int row, int col, int row_span, int col_span) {
  return "rows " + std::to_string(row) + ".." + std::to_string(row + row_span - 1) + ", columns " +
         std::to_string(col) + ".." + std::to_string(col + col_span - 1);
}

} // namespace

Figure::Figure(int width, int height, int rows, int cols)
    : width_(width), height_(height), rows_(rows), cols_(cols) {
  if (width < 1 || height < 1 || width > 16384 || height > 16384) {
    throw std::invalid_argument("plot::Figure: size must be 1..16384 pixels each way, got " +
                                std::to_string(width) + "x" + std::to_string(height));
  }
  if (rows < 1 || cols < 1) {
    throw std::invalid_argument("plot::Figure: the grid needs at least 1x1 cells, got " +
                                std::to_string(rows) + "x" + std::to_string(cols));
  }
}

Figure& Figure::title(std::string text) {
  title_ = std::move(text);
  return *this;
}

template <class Chart>
Chart& Figure::find_or_add(int row, int col, int row_span, int col_span) {
  if (row < 0 || col < 0 || row_span < 1 || col_span < 1 || row + row_span > rows_ ||
      col + col_span > cols_) {
    throw std::invalid_argument("plot::Figure: panel at " + cells(row, col, row_span, col_span) +
                                " is outside the " + std::to_string(rows_) + "x" +
                                std::to_string(cols_) + " grid");
  }
  for (auto& p : panels_) {
    if (p->row == row && p->col == col && p->row_span == row_span && p->col_span == col_span) {
      if (auto* chart = std::get_if<Chart>(&p->chart)) return *chart;
      throw std::invalid_argument("plot::Figure: the panel at " +
                                  cells(row, col, row_span, col_span) +
                                  " already holds a chart of the other kind");
    }
    const bool apart = row + row_span <= p->row || p->row + p->row_span <= row ||
                       col + col_span <= p->col || p->col + p->col_span <= col;
    if (!apart) {
      throw std::invalid_argument("plot::Figure: panel at " + cells(row, col, row_span, col_span) +
                                  " overlaps the panel at " +
                                  cells(p->row, p->col, p->row_span, p->col_span));
    }
  }
  panels_.push_back(std::make_unique<Panel>(Panel{row, col, row_span, col_span, Chart{}}));
  return std::get<Chart>(panels_.back()->chart);
}

LineChart& Figure::panel(int row, int col, int row_span, int col_span) {
  return find_or_add<LineChart>(row, col, row_span, col_span);
}

BarChart& Figure::bar_panel(int row, int col, int row_span, int col_span) {
  return find_or_add<BarChart>(row, col, row_span, col_span);
}

Canvas Figure::render() const {
  Canvas canvas(width_, height_, style_.background);
  int top = 0;
  if (!title_.empty()) {
    const int scale = style_.figure_title_scale;
    canvas.text(width_ / 2, 14, title_, style_.text, scale, Align::kCenter, true);
    top = 14 + text_height(scale);
  }
  // Cell edges from integer division, so the cells tile the canvas exactly.
  const auto x_at = [&](int col) { return col * width_ / cols_; };
  const auto y_at = [&](int row) { return top + row * (height_ - top) / rows_; };
  for (const auto& p : panels_) {
    const Rect area{x_at(p->col), y_at(p->row), x_at(p->col + p->col_span) - x_at(p->col),
                    y_at(p->row + p->row_span) - y_at(p->row)};
    std::visit([&](const auto& chart) { chart.draw(canvas, area, style_); }, p->chart);
  }
  return canvas;
}

void Figure::save_png(const std::filesystem::path& file) const {
  plot::save_png(render(), file);
}

} // namespace kiln::plot
