// kiln-plot: the PNG writer (read back with zlib), the canvas's lines and text, tick
// generation, and charts drawn where their data says.
#include "plot/canvas.h"
#include "plot/figure.h"
#include "plot/font.h"
#include "plot/png.h"
#include "plot/ticks.h"

#include "../support/png_reader.h"
#include "../support/scratch_dir.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace kiln::plot {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<uint8_t> bytes_of(std::string_view text) {
  return {text.begin(), text.end()};
}

std::vector<uint8_t> inflate(const std::vector<uint8_t>& stream, size_t size) {
  std::vector<uint8_t> out(size + 1); // one spare byte: a longer output is caught
  uLongf out_size = static_cast<uLongf>(out.size());
  EXPECT_EQ(::uncompress(out.data(), &out_size, stream.data(), static_cast<uLong>(stream.size())),
            Z_OK);
  out.resize(out_size);
  return out;
}

// The columns (x) where `color` appears in `canvas`, and for each the mean row of those pixels.
std::vector<std::pair<int, double>> trace(const Canvas& canvas, Rgb color) {
  std::vector<std::pair<int, double>> out;
  for (int x = 0; x < canvas.width(); ++x) {
    double sum = 0;
    int n = 0;
    for (int y = 0; y < canvas.height(); ++y) {
      if (canvas.at(x, y) == color) {
        sum += y;
        ++n;
      }
    }
    if (n > 0) out.emplace_back(x, sum / n);
  }
  return out;
}

// ---- checksums and deflate --------------------------------------------------------------------

TEST(PngTest, ChecksumsMatchTheirStandardCheckValues) {
  EXPECT_EQ(crc32(bytes_of("123456789")), 0xCBF43926u); // the CRC-32 catalogue's check value
  EXPECT_EQ(adler32(bytes_of("Wikipedia")), 0x11E60398u);
  EXPECT_EQ(crc32({}), 0u);
  EXPECT_EQ(adler32({}), 1u);
  // Continuing from a partial result equals one pass, and zlib agrees on long input.
  std::vector<uint8_t> big(100000);
  std::mt19937 rng(7);
  for (auto& b : big) b = static_cast<uint8_t>(rng());
  const std::span<const uint8_t> all(big);
  EXPECT_EQ(crc32(all.subspan(40000), crc32(all.first(40000))), crc32(all));
  EXPECT_EQ(adler32(all.subspan(40000), adler32(all.first(40000))), adler32(all));
  EXPECT_EQ(crc32(all), ::crc32(0, big.data(), static_cast<uInt>(big.size())));
  EXPECT_EQ(adler32(all), ::adler32(1, big.data(), static_cast<uInt>(big.size())));
}

TEST(PngTest, ZlibStreamsInflateBackWithZlib) {
  std::mt19937 rng(11);
  std::vector<std::vector<uint8_t>> inputs;
  inputs.push_back({});
  inputs.push_back({42});
  inputs.push_back(std::vector<uint8_t>(70000, 0xFF)); // one long run: matches at distance 1
  std::vector<uint8_t> noise(50000);
  for (auto& b : noise) b = static_cast<uint8_t>(rng());
  inputs.push_back(noise);          // incompressible: all literals, every byte value
  std::vector<uint8_t> far(100000); // repeats 30000 bytes apart: long distances, window edge
  for (size_t i = 0; i < far.size(); ++i)
    far[i] = i < 30000 ? static_cast<uint8_t>(rng()) : far[i - 30000];
  inputs.push_back(far);
  std::vector<uint8_t> window(40000); // exactly 32768 apart: the largest distance deflate has
  for (size_t i = 0; i < window.size(); ++i)
    window[i] = i < 32768 ? static_cast<uint8_t>(rng()) : window[i - 32768];
  inputs.push_back(window);
  std::vector<uint8_t> short_matches(20000); // lengths 3..20 from a small alphabet
  for (auto& b : short_matches) b = static_cast<uint8_t>('a' + rng() % 4);
  inputs.push_back(short_matches);

  for (const auto& input : inputs) {
    const std::vector<uint8_t> stream = zlib_compress(input);
    ASSERT_GE(stream.size(), 6u);
    EXPECT_EQ(stream[0], 0x78);
    EXPECT_EQ(((stream[0] << 8) | stream[1]) % 31, 0) << "zlib header check bits";
    EXPECT_EQ(test::big_endian_u32(stream, stream.size() - 4), adler32(input));
    EXPECT_EQ(inflate(stream, input.size()), input) << "input of " << input.size() << " bytes";
  }
  EXPECT_LT(zlib_compress(inputs[2]).size(), 1000u) << "a run should compress to almost nothing";
}

// ---- PNG files ---------------------------------------------------------------------------------

TEST(PngTest, EncodedCanvasReadsBackPixelForPixel) {
  Canvas canvas(61, 37, {10, 20, 30});
  canvas.fill_rect({5, 5, 20, 10}, {200, 40, 40});
  canvas.line({0, 36}, {60, 0}, {40, 200, 90}, 2.0);
  canvas.text(30, 20, "Loss 3.21", kWhite, 1);
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) { // some noise, so that literals and matches mix
    canvas.blend(
        static_cast<int>(rng() % 61), static_cast<int>(rng() % 37),
        {static_cast<uint8_t>(rng()), static_cast<uint8_t>(rng()), static_cast<uint8_t>(rng())});
  }
  const std::vector<uint8_t> png = encode_png(canvas);
  const test::DecodedPng d = test::decode_png(png); // signature, every CRC, zlib inflate
  EXPECT_EQ(d.width, 61u);
  EXPECT_EQ(d.height, 37u);
  EXPECT_EQ(d.bit_depth, 8);
  EXPECT_EQ(d.color_type, 2);
  EXPECT_EQ(d.compression, 0);
  EXPECT_EQ(d.filter, 0);
  EXPECT_EQ(d.interlace, 0);
  EXPECT_EQ(d.chunks, (std::vector<std::string>{"IHDR", "IDAT", "IEND"}));
  EXPECT_TRUE(std::equal(d.rgb.begin(), d.rgb.end(), canvas.rgb().begin(), canvas.rgb().end()));

  // The stream's Adler-32 is that of the filtered rows (a 0 byte before each row).
  std::vector<uint8_t> raw;
  for (int y = 0; y < 37; ++y) {
    raw.push_back(0);
    const auto row = canvas.rgb().subspan(static_cast<size_t>(y) * 61 * 3, 61 * 3);
    raw.insert(raw.end(), row.begin(), row.end());
  }
  EXPECT_EQ(test::big_endian_u32(d.zlib, d.zlib.size() - 4), adler32(raw));

  // A flipped byte anywhere in a chunk is caught by its CRC.
  std::vector<uint8_t> corrupt = png;
  corrupt[8 + 8 + 3] ^= 1; // inside IHDR's width
  EXPECT_THROW(test::decode_png(corrupt), std::runtime_error);
}

class PngFileTest : public test::ScratchDirTest {};

TEST_F(PngFileTest, SaveIsAtomicAndLeavesNoTemporaryFile) {
  Canvas canvas(8, 4, {1, 2, 3});
  save_png(canvas, "out.png");
  canvas.fill_rect({0, 0, 8, 4}, {9, 9, 9});
  save_png(canvas, "out.png"); // over the old one
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir_))
    names.push_back(entry.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"out.png"});
  const std::string bytes = read_file("out.png");
  const auto d =
      test::decode_png(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  EXPECT_EQ(d.rgb, std::vector<uint8_t>(8 * 4 * 3, 9));
}

TEST_F(PngFileTest, SaveIntoAMissingFolderNamesTheFile) {
  try {
    save_png(Canvas(2, 2), "missing/out.png");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(
        std::string(e.what()).rfind("cannot write missing/out.png: No such file or directory", 0),
        0u)
        << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists("missing"));
}

// ---- canvas ------------------------------------------------------------------------------------

TEST(CanvasTest, HorizontalLineCoversExactlyItsRow) {
  Canvas canvas(100, 60);
  canvas.line({10.5, 30.5}, {90.5, 30.5}, kBlack, 1.0);
  for (int x = 11; x <= 90; ++x) {
    EXPECT_EQ(canvas.at(x, 30), kBlack) << x;
    EXPECT_EQ(canvas.at(x, 29), kWhite) << x;
    EXPECT_EQ(canvas.at(x, 31), kWhite) << x;
  }
  EXPECT_EQ(canvas.at(5, 30), kWhite);
  EXPECT_EQ(canvas.at(95, 30), kWhite);
}

TEST(CanvasTest, DiagonalLineIsAntiAliasedAlongItsPath) {
  Canvas canvas(50, 50);
  canvas.line({0, 0}, {50, 50}, kBlack, 2.0);
  for (int i = 2; i < 46; ++i) {
    EXPECT_EQ(canvas.at(i, i), kBlack) << "on the line at " << i;
    const Rgb edge = canvas.at(i + 1, i);
    EXPECT_LT(edge.r, 255) << "partly covered beside it";
    EXPECT_GT(edge.r, 0) << "but not fully";
    EXPECT_EQ(canvas.at(i + 3, i), kWhite) << "clear further out";
  }
}

TEST(CanvasTest, OverlappingSegmentsOfOnePolylineBlendOnce) {
  Canvas canvas(40, 20);
  const Point back_and_forth[] = {{5, 10.5}, {35, 10.5}, {5, 10.5}};
  canvas.polyline(back_and_forth, kBlack, 1.0, 0.5, canvas.bounds());
  EXPECT_EQ(canvas.at(20, 10), (Rgb{128, 128, 128})); // half of white, once
}

TEST(CanvasTest, ClipKeepsLinesInside) {
  Canvas canvas(40, 40);
  const Point across[] = {{0, 20.5}, {40, 20.5}};
  canvas.polyline(across, kBlack, 1.0, 1.0, {10, 0, 20, 40});
  EXPECT_EQ(canvas.at(9, 20), kWhite);
  EXPECT_EQ(canvas.at(10, 20), kBlack);
  EXPECT_EQ(canvas.at(29, 20), kBlack);
  EXPECT_EQ(canvas.at(30, 20), kWhite);
}

TEST(CanvasTest, TextDrawsGlyphsAtTheirPlace) {
  EXPECT_EQ(text_width("A", 1), 5);
  EXPECT_EQ(text_width("1", 1), 5) << "digits are tabular";
  EXPECT_EQ(text_width("l", 1), 3) << "letters are proportional";
  EXPECT_EQ(text_width("AA", 2), 22);
  EXPECT_EQ(&glyph('\x7f'), &glyph('?'));

  Canvas canvas(30, 20);
  canvas.text(3, 2, "T", kBlack, 2); // T: a full top bar, then a centre stem
  for (int x = 3; x < 13; ++x) EXPECT_EQ(canvas.at(x, 2), kBlack) << x;
  EXPECT_EQ(canvas.at(7, 10), kBlack);
  EXPECT_EQ(canvas.at(3, 10), kWhite);
  EXPECT_EQ(canvas.at(13, 2), kWhite);

  Canvas turned(20, 30);
  turned.text_up(2, 3, "T", kBlack, 2, Align::kEnd); // reads bottom to top; the bar on the left
  for (int y = 3; y < 13; ++y) EXPECT_EQ(turned.at(2, y), kBlack) << y;
  EXPECT_EQ(turned.at(10, 7), kBlack);
  EXPECT_EQ(turned.at(10, 3), kWhite);
}

// ---- ticks -------------------------------------------------------------------------------------

TEST(TicksTest, LinearTicksAreRoundMultiples) {
  auto t = linear_ticks(0, 1000, 6);
  EXPECT_EQ(t.values, (std::vector<double>{0, 200, 400, 600, 800, 1000}));
  EXPECT_EQ(t.labels, (std::vector<std::string>{"0", "200", "400", "600", "800", "1000"}));

  t = linear_ticks(0.3, 3.7, 8);
  EXPECT_EQ(t.labels, (std::vector<std::string>{"0.5", "1.0", "1.5", "2.0", "2.5", "3.0", "3.5"}));

  t = linear_ticks(-1, 1, 5);
  EXPECT_EQ(t.labels, (std::vector<std::string>{"-1.0", "-0.5", "0", "0.5", "1.0"}));

  t = linear_ticks(0, 3e-4, 6); // a learning rate
  EXPECT_EQ(t.labels, (std::vector<std::string>{"0", "1e-4", "2e-4", "3e-4"}));

  t = linear_ticks(0, 3e-4, 7);
  EXPECT_EQ(t.labels,
            (std::vector<std::string>{"0", "5e-5", "1e-4", "1.5e-4", "2e-4", "2.5e-4", "3e-4"}));

  t = linear_ticks(13900, 16600, 6); // tokens/s
  EXPECT_EQ(t.labels,
            (std::vector<std::string>{"14.0k", "14.5k", "15.0k", "15.5k", "16.0k", "16.5k"}));

  t = linear_ticks(0, 2.5e6, 6);
  EXPECT_EQ(t.labels, (std::vector<std::string>{"0", "0.5M", "1.0M", "1.5M", "2.0M", "2.5M"}));

  t = linear_ticks(0.51, 0.99, 1); // no multiple of 0.5 inside: the 0.2 ticks stay
  EXPECT_EQ(t.labels, (std::vector<std::string>{"0.6", "0.8"}));

  for (int count = 2; count <= 12; ++count) {
    t = linear_ticks(3.7, 1234.5, count);
    EXPECT_LE(static_cast<int>(t.values.size()), count);
    EXPECT_GE(t.values.size(), 1u);
    for (const double v : t.values) EXPECT_TRUE(v >= 3.7 && v <= 1234.5) << v;
  }
  EXPECT_THROW(linear_ticks(1, 1, 5), std::invalid_argument);
  EXPECT_THROW(linear_ticks(0, kNaN, 5), std::invalid_argument);
}

TEST(TicksTest, LogTicksPickDecadesOrRoundMultiples) {
  auto t = log_ticks(0.3, 20, 6);
  EXPECT_EQ(t.labels, (std::vector<std::string>{"0.5", "1", "2", "5", "10", "20"}));
  EXPECT_EQ(t.minor.size(), 12u); // 0.3 0.4 0.6 0.7 0.8 0.9 3 4 6 7 8 9
  for (const double v : t.minor) EXPECT_TRUE(v >= 0.3 && v <= 20) << v;

  t = log_ticks(0.05, 2000, 6);
  EXPECT_EQ(t.labels, (std::vector<std::string>{"0.1", "1", "10", "100", "1000"}));

  t = log_ticks(1e-6, 1e3, 5); // ten decades: every second one labelled
  EXPECT_EQ(t.labels, (std::vector<std::string>{"1e-6", "1e-4", "0.01", "1", "100"}));
  EXPECT_EQ(t.minor, (std::vector<double>{1e-5, 1e-3, 0.1, 10, 1000}));

  t = log_ticks(2e4, 3e6, 6);
  EXPECT_EQ(t.labels, (std::vector<std::string>{"100k", "1M"}));

  t = log_ticks(1.2, 1.8, 5); // no round value: linear ticks
  EXPECT_EQ(t.labels, (std::vector<std::string>{"1.2", "1.4", "1.6", "1.8"}));

  EXPECT_THROW(log_ticks(0, 1, 5), std::invalid_argument);
  EXPECT_THROW(log_ticks(2, 1, 5), std::invalid_argument);
}

TEST(TicksTest, ValuesPrintWithThreeSignificantDigits) {
  EXPECT_EQ(format_value(3.2149), "3.21");
  EXPECT_EQ(format_value(8.1), "8.1");
  EXPECT_EQ(format_value(55), "55");
  EXPECT_EQ(format_value(0.045671), "0.0457");
  EXPECT_EQ(format_value(-1234), "-1234");
  EXPECT_EQ(format_value(15234), "15.2k");
  EXPECT_EQ(format_value(999960), "1M");
  EXPECT_EQ(format_value(2.5e-5), "2.5e-5");
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(kNaN), "nan");
}

// ---- charts ------------------------------------------------------------------------------------

TEST(LineChartTest, SeriesIsDrawnAlongItsData) {
  Figure fig(400, 300);
  const Rgb red{220, 0, 0};
  const std::vector<double> xs = {0, 5, 10};
  fig.panel(0, 0).title("t").xlabel("x").ylabel("y").line("", xs, std::vector<double>{0, 5, 10},
                                                          {red, 3.0}); // no legend
  const Canvas canvas = fig.render();
  const auto path = trace(canvas, red);
  ASSERT_GT(path.size(), 200u) << "the line spans most of the width";
  const auto& [x0, y0] = path.front();
  const auto& [x1, y1] = path.back();
  EXPECT_GT(y0, y1 + 150) << "rising: rows grow downwards";
  EXPECT_GT(x0, 40) << "right of the y labels";
  EXPECT_LT(x1, 390) << "inside the right margin";
  for (const auto& [x, y] : path) {
    const double expected = y0 + (y1 - y0) * (x - x0) / (x1 - x0);
    EXPECT_NEAR(y, expected, 2.5) << "column " << x;
  }
}

TEST(LineChartTest, NaNLeavesAGap) {
  Figure fig(400, 300);
  const Rgb red{220, 0, 0};
  const std::vector<double> xs = {0, 1, 2, 3, 4, 5, 6};
  fig.panel(0, 0).line("", xs, std::vector<double>{1, 1, 1, kNaN, 1, 1, 1}, {red});
  const auto path = trace(fig.render(), red);
  ASSERT_FALSE(path.empty());
  int gap = 0; // the widest run of columns without the line between its first and last
  for (size_t i = 1; i < path.size(); ++i) gap = std::max(gap, path[i].first - path[i - 1].first);
  const int span = path.back().first - path.front().first;
  EXPECT_GT(gap, span / 6 * 2 - 6) << "steps 2..4 (two of six) are not connected";
}

TEST(LineChartTest, LogScaleMakesExponentialsStraight) {
  Figure fig(400, 300);
  const Rgb red{220, 0, 0};
  std::vector<double> xs;
  std::vector<double> ys;
  for (int i = 0; i <= 30; ++i) {
    xs.push_back(i);
    ys.push_back(std::pow(10.0, i / 10.0));
  }
  ys[0] = 0; // not drawable on a log axis: left out
  fig.panel(0, 0).log_y().line("", xs, ys, {red, 3.0});
  const auto path = trace(fig.render(), red);
  ASSERT_GT(path.size(), 200u);
  const auto& [x0, y0] = path.front();
  const auto& [x1, y1] = path.back();
  for (const auto& [x, y] : path)
    EXPECT_NEAR(y, y0 + (y1 - y0) * (x - x0) / (x1 - x0), 2.5) << "column " << x;
}

TEST(LineChartTest, EmptyChartSaysNoData) {
  Figure fig(300, 200);
  fig.panel(0, 0).title("nothing").line("a", std::vector<double>{}, std::vector<double>{});
  const Canvas canvas = fig.render();
  bool text = false;
  for (int y = 80; y < 130 && !text; ++y) {
    for (int x = 100; x < 220 && !text; ++x) text = canvas.at(x, y) == Style{}.muted_text;
  }
  EXPECT_TRUE(text) << "'no data' in the middle";
  EXPECT_THROW(fig.panel(0, 0).line("bad", std::vector<double>{1, 2}, std::vector<double>{1}),
               std::invalid_argument);
}

TEST(BarChartTest, BarHeightsFollowTheirValues) {
  Figure fig(600, 400);
  const Rgb blue{0, 0, 200};
  const Rgb green{0, 180, 0};
  const std::vector<double> torch = {10, 20, 40};
  const std::vector<double> cuda = {5, 40, kNaN};
  fig.bar_panel(0, 0)
      .title("step time")
      .ylabel("ms")
      .categories({"forward", "backward", "optimizer"})
      .group("torch", torch, blue)
      .group("cuda", cuda, green);
  const Canvas canvas = fig.render();

  // Each bar: a run of columns of its colour; its height at the middle column.
  const auto bars = [&](Rgb color) {
    std::vector<int> heights;
    int start = -1;
    for (int x = 0; x <= canvas.width(); ++x) {
      int height = 0;
      for (int y = 0; x < canvas.width() && y < canvas.height(); ++y)
        height += canvas.at(x, y) == color;
      if (height > 20 && start < 0) start = x;
      if (height <= 20 && start >= 0) {
        const int middle = (start + x) / 2;
        int h = 0;
        for (int y = 0; y < canvas.height(); ++y) h += canvas.at(middle, y) == color;
        heights.push_back(h);
        start = -1;
      }
    }
    return heights;
  };
  const std::vector<int> t = bars(blue);
  const std::vector<int> c = bars(green);
  ASSERT_EQ(t.size(), 3u);
  ASSERT_EQ(c.size(), 2u) << "NaN: no bar";
  EXPECT_NEAR(t[1], 2 * t[0], 2);
  EXPECT_NEAR(t[2], 4 * t[0], 3);
  EXPECT_NEAR(c[0], t[0] / 2.0, 2);
  EXPECT_NEAR(c[1], t[2], 1);

  EXPECT_THROW(BarChart().categories({"a", "b"}).group("x", std::vector<double>{1}),
               std::invalid_argument);
}

TEST(FigureTest, PanelsAreCheckedAgainstTheGrid) {
  Figure fig(800, 600, 2, 3);
  LineChart& top = fig.panel(0, 0, 1, 3);
  EXPECT_EQ(&fig.panel(0, 0, 1, 3), &top) << "the same cell gives the same chart";
  EXPECT_THROW(fig.panel(0, 1), std::invalid_argument) << "overlaps the top panel";
  EXPECT_THROW(fig.bar_panel(0, 0, 1, 3), std::invalid_argument) << "holds a line chart";
  EXPECT_THROW(fig.panel(2, 0), std::invalid_argument) << "outside";
  EXPECT_THROW(fig.panel(1, 2, 1, 2), std::invalid_argument) << "runs past the right edge";
  fig.bar_panel(1, 2);
  const Canvas canvas = fig.render();
  EXPECT_EQ(canvas.width(), 800);
  EXPECT_EQ(canvas.height(), 600);
  EXPECT_THROW(Figure(0, 10), std::invalid_argument);
  EXPECT_THROW(Figure(10, 10, 0, 1), std::invalid_argument);
}

} // namespace
} // namespace kiln::plot
