// An RGB raster to draw charts on: anti-aliased lines and discs, filled rectangles and text in
// the built-in font. Coordinates are pixels from the top-left corner; pixel (i, j) covers
// [i, i+1) x [j, j+1), so a 1-pixel line through its centre runs along i + 0.5. Everything is
// clipped to the canvas (and to a given rectangle where a call takes one).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace kiln::plot {

struct Rgb {
  uint8_t r = 0;
  uint8_t g = 0;
  uint8_t b = 0;
  friend bool operator==(const Rgb&, const Rgb&) = default;
};

inline constexpr Rgb kWhite{255, 255, 255};
inline constexpr Rgb kBlack{0, 0, 0};

/// `a` moved a fraction `t` (0..1) of the way to `b`.
Rgb mix(Rgb a, Rgb b, double t);

/// An axis-aligned rectangle of whole pixels: columns [x, x + width), rows [y, y + height).
struct Rect {
  int x = 0;
  int y = 0;
  int width = 0;
  int height = 0;
  int right() const { return x + width; }
  int bottom() const { return y + height; }
  bool empty() const { return width <= 0 || height <= 0; }
  /// The part of this rectangle inside `other`.
  Rect intersect(const Rect& other) const;
};

struct Point {
  double x = 0;
  double y = 0;
};

enum class Align { kStart, kCenter, kEnd };

class Canvas {
 public:
  /// Throws std::invalid_argument unless 1 <= width, height <= 16384.
  Canvas(int width, int height, Rgb background = kWhite);

  int width() const noexcept { return width_; }
  int height() const noexcept { return height_; }
  Rect bounds() const noexcept { return {0, 0, width_, height_}; }
  /// The pixel at (x, y); throws std::out_of_range outside the canvas.
  Rgb at(int x, int y) const;
  /// Pixels as r, g, b bytes, row by row from the top; width * height * 3 bytes.
  std::span<const uint8_t> rgb() const noexcept { return pixels_; }

  /// Paints `color` over pixel (x, y) with opacity `alpha` (0..1); outside the canvas: nothing.
  void blend(int x, int y, Rgb color, double alpha = 1.0);
  void fill_rect(const Rect& r, Rgb color, double alpha = 1.0);
  /// The outline of `r`, `thickness` pixels wide, inside `r`.
  void stroke_rect(const Rect& r, Rgb color, int thickness = 1);

  /// An anti-aliased polyline `width` pixels wide with round joins, painted once with opacity
  /// `alpha` (overlapping segments do not darken each other), clipped to `clip`. A non-finite
  /// point breaks the line; a point alone between breaks is a dot `width` across.
  void polyline(std::span<const Point> points, Rgb color, double width, double alpha,
                const Rect& clip);
  void line(Point a, Point b, Rgb color, double width = 1.0);
  /// An anti-aliased filled disc, clipped to `clip`.
  void disc(Point centre, double radius, Rgb color, double alpha, const Rect& clip);

  /// Text in the built-in font at `scale` (1 = 5x7 capitals). `x` is the left edge, centre or
  /// right edge by `align`; `y` is the top of the line. `bold` doubles every stroke.
  void text(int x, int y, std::string_view text, Rgb color, int scale = 1,
            Align align = Align::kStart, bool bold = false);
  /// Text turned 90 degrees counter-clockwise (read bottom to top). `x` is the left edge of the
  /// turned line (where the tops of the letters are); `y` places the text along its length: its
  /// bottom end, centre or top end by `align`.
  void text_up(int x, int y, std::string_view text, Rgb color, int scale = 1,
               Align align = Align::kCenter, bool bold = false);

 private:
  int width_;
  int height_;
  std::vector<uint8_t> pixels_;
};

} // namespace kiln::plot
