// `kiln plot RUN_DIR` as a user runs it: the PNG it writes from a run's metrics.jsonl, and its
// one-line errors.
#include "plot/chart.h"

#include "../support/png_reader.h"
#include "../support/run_kiln.h"
#include "../support/scratch_dir.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <string>

namespace {

using kiln::test::run_kiln;

// A run of `steps` steps in the shape `kiln run` logs it: a metrics line per step with keys
// `kiln plot` ignores among them, a validation line every 50 steps.
std::string metrics_lines(int steps, bool everything) {
  std::string text;
  for (int step = 1; step <= steps; ++step) {
    const double loss = 2.0 + 8.0 * std::exp(-step / 60.0) + 0.1 * std::sin(step * 0.7);
    if (everything) {
      text += fmt::format(
          "{{\"step\": {}, \"loss\": {}, \"lr\": {}, \"grad_norm\": {}, \"tokens\": {}, "
          "\"tokens_per_s\": {}, \"time_s\": {}, \"aux/mtp\": 0.5, \"moe/load\": [1, 2]}}\n",
          step, loss, 3e-4 * std::min(1.0, step / 20.0), 1.0 + 5.0 * std::exp(-step / 40.0),
          4096 * step, 15000 + 300 * std::cos(step * 0.3), 0.25 * step);
    } else {
      text += fmt::format("{{\"step\": {}, \"loss\": {}}}\n", step, loss);
    }
    if (everything && step % 50 == 0)
      text += fmt::format("{{\"step\": {}, \"val_loss\": {}}}\n", step, loss + 0.1);
  }
  return text;
}

kiln::test::DecodedPng read_png(const std::string& bytes) {
  return kiln::test::decode_png(
      std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

size_t pixels_of(const kiln::test::DecodedPng& png, kiln::plot::Rgb color) {
  size_t n = 0;
  for (size_t i = 0; i + 2 < png.rgb.size(); i += 3)
    n += png.rgb[i] == color.r && png.rgb[i + 1] == color.g && png.rgb[i + 2] == color.b;
  return n;
}

class PlotCliTest : public kiln::test::ScratchDirTest {};

TEST_F(PlotCliTest, DrawsEveryCurveARunLogged) {
  std::string text = metrics_lines(300, true);
  text += "{\"step\": 301, \"loss\": null, \"lr\": 0.0003}\n"; // a non-finite loss: a gap
  text += "{\"event\": \"checkpoint\", \"path\": \"ckpt/301\"}\n";
  write_file("run/metrics.jsonl", text);
  const auto r = run_kiln("plot run");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "run/plot.png\n");
  const auto png = read_png(read_file("run/plot.png"));
  EXPECT_EQ(png.width, 1600u);
  EXPECT_EQ(png.height, 1000u) << "the loss on top, three panels under it";
  // Each curve in its palette colour: train loss, validation, lr, grad norm, tokens/s.
  for (size_t i = 0; i < 5; ++i)
    EXPECT_GT(pixels_of(png, kiln::plot::palette(i)), 200u) << "series colour " << i;
}

TEST_F(PlotCliTest, LossOnlyRunGetsOnePanelWhereAsked) {
  write_file("run/metrics.jsonl", metrics_lines(100, false));
  write_file("out/.keep", "");
  const auto r = run_kiln("plot run --out out/loss.png --smooth 10");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "out/loss.png\n");
  EXPECT_FALSE(std::filesystem::exists("run/plot.png"));
  const auto png = read_png(read_file("out/loss.png"));
  EXPECT_EQ(png.width, 1600u);
  EXPECT_EQ(png.height, 600u);
  EXPECT_EQ(pixels_of(png, kiln::plot::palette(1)), 0u) << "no validation curve";
}

TEST_F(PlotCliTest, HalfWrittenLastLineOfARunningTrainerIsLeftOut) {
  write_file("run/metrics.jsonl", metrics_lines(20, false) + "{\"step\": 21, \"lo");
  const auto r = run_kiln("plot run");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(std::filesystem::exists("run/plot.png"));
}

TEST_F(PlotCliTest, MissingRunFolderSaysWhatToDo) {
  const auto r = run_kiln("plot nowhere");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out,
            "error: run folder nowhere does not exist; run `kiln run RECIPE` first, or "
            "pass the folder it wrote\n");
}

TEST_F(PlotCliTest, FolderWithoutMetricsSaysWhatToDo) {
  write_file("run/config.toml", "");
  const auto r = run_kiln("plot run");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out,
            "error: run has no metrics.jsonl; run `kiln run RECIPE` first, or pass the "
            "folder of a run that logged metrics\n");
}

TEST_F(PlotCliTest, BadJsonLineIsNamedByFileLineAndColumn) {
  write_file("run/metrics.jsonl",
             "{\"step\": 1, \"loss\": 3.0}\n\n{\"step\": 3, \"loss\": }\n{\"step\": 4}\n");
  const auto r = run_kiln("plot run");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out,
            "error: run/metrics.jsonl:3:21: not valid JSON; each line of metrics.jsonl is "
            "one object like {\"step\": 10, \"loss\": 2.5}\n");
  EXPECT_FALSE(std::filesystem::exists("run/plot.png"));
}

TEST_F(PlotCliTest, WrongTypesAreNamedByLine) {
  write_file("run/metrics.jsonl", "{\"step\": 1, \"loss\": \"3.0\"}\n");
  auto r = run_kiln("plot run");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out, "error: run/metrics.jsonl:1: 'loss' should be a number, found \"3.0\"\n");

  write_file("run/metrics.jsonl", "{\"step\": 1, \"loss\": 3.0}\n[1, 2]\n");
  r = run_kiln("plot run");
  EXPECT_EQ(r.out, "error: run/metrics.jsonl:2: expected a JSON object, found array\n");

  write_file("run/metrics.jsonl", "{\"loss\": 3.0}\n");
  r = run_kiln("plot run");
  EXPECT_EQ(r.out, "error: run/metrics.jsonl:1: 'loss' without a numeric 'step'\n");
}

TEST_F(PlotCliTest, RunWithoutTrainingLossSaysSo) {
  write_file("run/metrics.jsonl", "{\"step\": 10, \"val_loss\": 3.0}\n{\"step\": 20, \"lr\": 1}\n");
  const auto r = run_kiln("plot run");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out,
            "error: run/metrics.jsonl: no training loss in 2 lines (expected lines like "
            "{\"step\": 10, \"loss\": 2.5}); run `kiln run RECIPE` and plot once it has "
            "logged a step\n");
}

TEST_F(PlotCliTest, UnwritableOutputIsAUserError) {
  write_file("run/metrics.jsonl", metrics_lines(5, false));
  const auto r = run_kiln("plot run --out missing/plot.png");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out.rfind("error: cannot write missing/plot.png: No such file or directory", 0), 0u)
      << r.out;
}

TEST_F(PlotCliTest, ArgumentsAreChecked) {
  auto r = run_kiln("plot");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out,
            "error: kiln plot: expected RUN_DIR, the folder of a run (see `kiln help "
            "plot`)\n");
  r = run_kiln("plot run --smooth -3");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out, "error: --smooth: expected a window of 0 (off) or more steps, found -3\n");
  r = run_kiln("help plot");
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out.rfind("usage: kiln plot RUN_DIR [--out FILE.png] [--smooth N]", 0), 0u) << r.out;
}

} // namespace
