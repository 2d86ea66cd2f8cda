#include "plot/canvas.h"

#include "plot/font.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace kiln::plot {
namespace {

uint8_t lerp(uint8_t a, uint8_t b, double t) {
  return static_cast<uint8_t>(std::lround(a + (static_cast<double>(b) - a) * t));
}

bool finite(Point p) {
  return std::isfinite(p.x) && std::isfinite(p.y);
}

// The pixels under the box [x0, x1] x [y0, y1] (continuous coordinates) that lie in `within`.
// Coordinates far outside are clamped before they become ints.
Rect pixels_under(double x0, double y0, double x1, double y1, const Rect& within) {
  const auto clamp_x = [&](double v) {
    return static_cast<int>(std::clamp(v, 1.0 * within.x, 1.0 * within.right()));
  };
  const auto clamp_y = [&](double v) {
    return static_cast<int>(std::clamp(v, 1.0 * within.y, 1.0 * within.bottom()));
  };
  const int left = clamp_x(std::floor(x0));
  const int top = clamp_y(std::floor(y0));
  return {left, top, clamp_x(std::ceil(x1)) - left, clamp_y(std::ceil(y1)) - top};
}

// Per-pixel ink coverage (0..1) of one shape made of several strokes, kept as the maximum over
// the strokes so that joins and overlaps are painted once.
class Coverage {
 public:
  explicit Coverage(const Rect& area)
      : area_(area), cover_(static_cast<size_t>(area.width) * area.height, 0.0f) {}

  // Pixels whose centre lies within `half_width` of segment a-b are fully covered; coverage
  // falls off linearly to zero half a pixel further out.
  void segment(Point a, Point b, double half_width) {
    const double reach = half_width + 0.5;
    const Rect box = box_around(std::min(a.x, b.x) - reach, std::min(a.y, b.y) - reach,
                                std::max(a.x, b.x) + reach, std::max(a.y, b.y) + reach);
    const double dx = b.x - a.x;
    const double dy = b.y - a.y;
    const double length2 = dx * dx + dy * dy;
    for (int y = box.y; y < box.bottom(); ++y) {
      for (int x = box.x; x < box.right(); ++x) {
        const double px = x + 0.5 - a.x;
        const double py = y + 0.5 - a.y;
        const double t = length2 > 0 ? std::clamp((px * dx + py * dy) / length2, 0.0, 1.0) : 0.0;
        const double distance = std::hypot(px - t * dx, py - t * dy);
        cover(x, y, reach - distance);
      }
    }
  }

  void disc(Point centre, double radius) {
    const double reach = radius + 0.5;
    const Rect box =
        box_around(centre.x - reach, centre.y - reach, centre.x + reach, centre.y + reach);
    for (int y = box.y; y < box.bottom(); ++y) {
      for (int x = box.x; x < box.right(); ++x)
        cover(x, y, reach - std::hypot(x + 0.5 - centre.x, y + 0.5 - centre.y));
    }
  }

  void paint(Canvas& canvas, Rgb color, double alpha) const {
    for (int y = dirty_y0_; y < dirty_y1_; ++y) {
      for (int x = dirty_x0_; x < dirty_x1_; ++x) {
        const float c = cover_[index(x, y)];
        if (c > 0) canvas.blend(x, y, color, alpha * c);
      }
    }
  }

 private:
  Rect box_around(double x0, double y0, double x1, double y1) const {
    return pixels_under(x0, y0, x1, y1, area_);
  }

  size_t index(int x, int y) const {
    return static_cast<size_t>(y - area_.y) * area_.width + (x - area_.x);
  }

  void cover(int x, int y, double amount) {
    if (amount <= 0) return;
    float& c = cover_[index(x, y)];
    c = std::max(c, static_cast<float>(std::min(amount, 1.0)));
    dirty_x0_ = std::min(dirty_x0_, x);
    dirty_y0_ = std::min(dirty_y0_, y);
    dirty_x1_ = std::max(dirty_x1_, x + 1);
    dirty_y1_ = std::max(dirty_y1_, y + 1);
  }

  Rect area_;
  std::vector<float> cover_;
  int dirty_x0_ = area_.right();
  int dirty_y0_ = area_.bottom();
  int dirty_x1_ = area_.x;
  int dirty_y1_ = area_.y;
};

int aligned_start(int anchor, int length, Align align) {
  switch (align) {
    case Align::kStart:
      return anchor;
    case Align::kCenter:
      return anchor - length / 2;
    case Align::kEnd:
      return anchor - length;
  }
  return anchor;
}

// Calls ink(column, row) for every inked font pixel of `text`, columns counted from the start
// of the text.
template <class Ink>
void for_each_ink(std::string_view text, Ink&& ink) {
  int column = 0;
  for (const char c : text) {
    const Glyph& g = glyph(c);
    for (int row = 0; row < kGlyphRows; ++row) {
      for (int i = 0; i < g.width; ++i) {
        if (g.rows[row] & (1u << (kGlyphColumns - 1 - (g.left + i)))) ink(column + i, row);
      }
    }
    column += g.width + 1;
  }
}

} // namespace

Rgb mix(Rgb a, Rgb b, double t) {
  return {lerp(a.r, b.r, t), lerp(a.g, b.g, t), lerp(a.b, b.b, t)};
}

Rect Rect::intersect(const Rect& other) const {
  const int left = std::max(x, other.x);
  const int top = std::max(y, other.y);
  const int w = std::min(right(), other.right()) - left;
  const int h = std::min(bottom(), other.bottom()) - top;
  return {left, top, std::max(w, 0), std::max(h, 0)};
}

Canvas::Canvas(int width, int height, Rgb background) : width_(width), height_(height) {
  if (width < 1 || height < 1 || width > 16384 || height > 16384) {
    throw std::invalid_argument("plot::Canvas: size must be 1..16384 pixels each way, got " +
                                std::to_string(width) + "x" + std::to_string(height));
  }
  pixels_.resize(static_cast<size_t>(width) * height * 3);
  for (size_t i = 0; i < pixels_.size(); i += 3) {
    pixels_[i] = background.r;
    pixels_[i + 1] = background.g;
    pixels_[i + 2] = background.b;
  }
}

Rgb Canvas::at(int x, int y) const {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) {
    throw std::out_of_range("plot::Canvas::at(" + std::to_string(x) + ", " + std::to_string(y) +
                            ") outside a " + std::to_string(width_) + "x" +
                            std::to_string(height_) + " canvas");
  }
  const size_t i = (static_cast<size_t>(y) * width_ + x) * 3;
  return {pixels_[i], pixels_[i + 1], pixels_[i + 2]};
}

void Canvas::blend(int x, int y, Rgb color, double alpha) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_ || !(alpha > 0)) return;
  const double t = std::min(alpha, 1.0);
  const size_t i = (static_cast<size_t>(y) * width_ + x) * 3;
  pixels_[i] = lerp(pixels_[i], color.r, t);
  pixels_[i + 1] = lerp(pixels_[i + 1], color.g, t);
  pixels_[i + 2] = lerp(pixels_[i + 2], color.b, t);
}

void Canvas::fill_rect(const Rect& r, Rgb color, double alpha) {
  const Rect area = r.intersect(bounds());
  for (int y = area.y; y < area.bottom(); ++y) {
    for (int x = area.x; x < area.right(); ++x) blend(x, y, color, alpha);
  }
}

void Canvas::stroke_rect(const Rect& r, Rgb color, int thickness) {
  const int t = std::min({thickness, r.width, r.height});
  if (t <= 0) return;
  fill_rect({r.x, r.y, r.width, t}, color);
  fill_rect({r.x, r.bottom() - t, r.width, t}, color);
  fill_rect({r.x, r.y + t, t, r.height - 2 * t}, color);
  fill_rect({r.right() - t, r.y + t, t, r.height - 2 * t}, color);
}

void Canvas::polyline(std::span<const Point> points, Rgb color, double width, double alpha,
                      const Rect& clip) {
  // The mask covers only the pixels the line can reach.
  const double half_width = width / 2;
  const double reach = half_width + 1;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  double x0 = kInf, y0 = kInf, x1 = -kInf, y1 = -kInf;
  for (const Point& p : points) {
    if (!finite(p)) continue;
    x0 = std::min(x0, p.x);
    y0 = std::min(y0, p.y);
    x1 = std::max(x1, p.x);
    y1 = std::max(y1, p.y);
  }
  if (x0 > x1) return;
  const Rect area =
      pixels_under(x0 - reach, y0 - reach, x1 + reach, y1 + reach, clip.intersect(bounds()));
  if (area.empty()) return;
  Coverage coverage(area);
  for (size_t i = 0; i < points.size(); ++i) {
    if (!finite(points[i])) continue;
    const Point next = i + 1 < points.size() ? points[i + 1] : points[i];
    coverage.segment(points[i], finite(next) ? next : points[i], half_width);
  }
  coverage.paint(*this, color, alpha);
}

void Canvas::line(Point a, Point b, Rgb color, double width) {
  const Point points[] = {a, b};
  polyline(points, color, width, 1.0, bounds());
}

void Canvas::disc(Point centre, double radius, Rgb color, double alpha, const Rect& clip) {
  if (!finite(centre)) return;
  const double reach = radius + 1;
  const Rect area = pixels_under(centre.x - reach, centre.y - reach, centre.x + reach,
                                 centre.y + reach, clip.intersect(bounds()));
  if (area.empty()) return;
  Coverage coverage(area);
  coverage.disc(centre, radius);
  coverage.paint(*this, color, alpha);
}

void Canvas::text(int x, int y, std::string_view text, Rgb color, int scale, Align align,
                  bool bold) {
  const int left = aligned_start(x, text_width(text, scale), align);
  const int thick = bold ? scale + 1 : scale;
  for_each_ink(text, [&](int column, int row) {
    fill_rect({left + column * scale, y + row * scale, thick, scale}, color);
  });
}

void Canvas::text_up(int x, int y, std::string_view text, Rgb color, int scale, Align align,
                     bool bold) {
  // Along the text runs upwards from `bottom`; down the glyph runs rightwards from `x`.
  const int length = text_width(text, scale);
  const int bottom = y - aligned_start(0, length, align);
  const int thick = bold ? scale + 1 : scale;
  for_each_ink(text, [&](int column, int row) {
    fill_rect({x + row * scale, bottom - (column + 1) * scale - (thick - scale), scale, thick},
              color);
  });
}

} // namespace kiln::plot
