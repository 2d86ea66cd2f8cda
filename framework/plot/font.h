// The built-in bitmap font: one 5x9 cell per printable ASCII character (32..126), drawn at an
// integer scale. Rows 0..6 hold capitals and digits (the baseline is under row 6), rows 7..8 the
// descenders of g, j, p, q, y and the comma. Letters are proportional; digits share one width so
// that tick labels line up.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace kiln::plot {

inline constexpr int kGlyphColumns = 5;
inline constexpr int kGlyphRows = 9;
/// Rows from the top of a line of text to its baseline (the bottom of a capital).
inline constexpr int kGlyphAscent = 7;

struct Glyph {
  std::array<uint8_t, kGlyphRows> rows{}; ///< bit (4 - column) set = ink; column 0 leftmost
  int left = 0;                           ///< first column drawn
  int width = 0;                          ///< columns drawn from `left`; the advance adds one
};

/// The glyph of `c`; characters outside 32..126 draw as '?'.
const Glyph& glyph(char c);

/// Width in pixels of `text` drawn at `scale` (no trailing spacing column).
int text_width(std::string_view text, int scale);

/// Height in pixels of a line of text at `scale`, descenders included.
inline int text_height(int scale) {
  return kGlyphRows * scale;
}

} // namespace kiln::plot
