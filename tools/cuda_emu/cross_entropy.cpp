// cross_entropy.cu's launchers on the CPU (tools/cuda_emu/run cross_entropy [CASE]) against a
// float64 reference over the same bf16 logits:
//   lse:  lse within 1e-5 (relative to max(1, |lse|)), -inf for a row of -inf; loss = lse -
//         logit[label] within the same, 0 at ignore_index, NaN for a label outside the chunk;
//   grad: (exp(x - lse) - onehot) * row_scale within one bf16 rounding plus 1e-6 of the row's
//         largest |gradient| (the kernel rounds float32 values once), all zeros where row_scale
//         is 0; columns are vocabulary entries col0 + c, labels inside and outside the chunk.
// Layouts: 16-byte vectors (cols and row stride multiples of 8), odd widths, row strides wider
// than the row, a start that is not 16-byte aligned (the element-wise path), rows of 20,000.
#include "bf16.h"
#include "device.cuh"
#include "kernel.inc" // cross_entropy.cu as `run` rewrote it

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using namespace kiln::backends::cuda;
using emu_bf16::from_bf16;
using emu_bf16::to_bf16;

namespace {

struct Case {
  const char* name;
  int rows, cols, ld, offset; // offset: elements before row 0 in the buffer
  bool minus_inf;             // some -inf logits, and one row all -inf
};

constexpr Case kCases[] = {
    {"vectors 3x40", 3, 40, 40, 0, false},
    {"odd width 3x37", 3, 37, 37, 0, false},
    {"row stride 72 > 64", 4, 64, 72, 0, false},
    {"unaligned start", 2, 64, 64, 1, false},
    {"wide rows 2x20000", 2, 20000, 20000, 0, false},
    {"wide odd 2x5003", 2, 5003, 5003, 0, false},
    {"-inf logits 4x128", 4, 128, 128, 0, true},
};
constexpr int64_t kIgnore = -100;
constexpr int64_t kCol0 = 1000; // the grad launches' first vocabulary entry

struct Buffer {
  std::vector<uint16_t> data;
  const Case& cs;
  uint16_t* row(int r) { return data.data() + cs.offset + int64_t(r) * cs.ld; }
  double at(int r, int c) const { return from_bf16(data[cs.offset + int64_t(r) * cs.ld + c]); }
};

Buffer make_logits(const Case& cs, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 3.f);
  Buffer b{std::vector<uint16_t>(cs.offset + int64_t(cs.rows) * cs.ld + 8, to_bf16(NAN)), cs};
  for (int r = 0; r < cs.rows; ++r) {
    for (int c = 0; c < cs.cols; ++c) {
      float v = nd(rng);
      if (cs.minus_inf && (r == cs.rows - 1 || c % 3 == 0)) v = -INFINITY;
      b.row(r)[c] = to_bf16(v);
    }
  }
  return b;
}

double lse_ref(const Buffer& b, int r) {
  double m = -INFINITY;
  for (int c = 0; c < b.cs.cols; ++c) m = std::max(m, b.at(r, c));
  if (m == -INFINITY) return m;
  double s = 0;
  for (int c = 0; c < b.cs.cols; ++c) s += std::exp(b.at(r, c) - m);
  return m + std::log(s);
}

bool close(double got, double want) {
  if (std::isinf(want)) return got == want;
  return std::abs(got - want) <= 1e-5 * std::max(1.0, std::abs(want));
}

bool check_lse(const Case& cs, uint32_t seed) {
  std::mt19937 rng(seed);
  const Buffer b = make_logits(cs, rng);
  Buffer work = b;
  std::vector<int64_t> labels(cs.rows);
  for (int r = 0; r < cs.rows; ++r) labels[r] = rng() % cs.cols;
  if (cs.rows > 1) labels[1] = kIgnore;
  if (cs.rows > 2) labels[2] = cs.cols; // outside the chunk: NaN
  std::vector<float> lse(cs.rows, 12345.f), loss(cs.rows, 12345.f);
  CrossEntropyRowsParams p;
  p.logits = work.row(0);
  p.labels = labels.data();
  p.lse = lse.data();
  p.loss = loss.data();
  p.ld = cs.ld;
  p.rows = cs.rows;
  p.cols = cs.cols;
  p.ignore_index = kIgnore;
  if (launch_cross_entropy_lse(p, nullptr) != cudaSuccess) {
    printf("%-22s lse: launch failed\n", cs.name);
    return false;
  }
  bool ok = work.data == b.data; // read only
  double worst = 0;
  for (int r = 0; r < cs.rows; ++r) {
    const double want = lse_ref(b, r);
    ok &= close(lse[r], want);
    if (std::isfinite(want)) worst = std::max(worst, std::abs(lse[r] - want));
    if (labels[r] == kIgnore) {
      ok &= loss[r] == 0.f;
    } else if (labels[r] >= cs.cols) {
      ok &= std::isnan(loss[r]);
    } else {
      const double want_loss = want - b.at(r, int(labels[r]));
      ok &= std::isnan(want_loss) ? std::isnan(loss[r]) : close(loss[r], want_loss);
    }
  }
  printf("%-22s lse  max err %.2e  %s\n", cs.name, worst, ok ? "OK" : "FAIL");
  return ok;
}

bool check_grad(const Case& cs, uint32_t seed) {
  std::mt19937 rng(seed);
  const Buffer b = make_logits(cs, rng);
  Buffer work = b;
  std::vector<int64_t> labels(cs.rows);
  std::vector<float> lse(cs.rows), scale(cs.rows);
  for (int r = 0; r < cs.rows; ++r) {
    // Labels inside the chunk for most rows, before or after it for some, ignored for one.
    labels[r] = kCol0 + int64_t(rng() % (cs.cols + 100)) - 50;
    lse[r] = static_cast<float>(lse_ref(b, r) + 0.5); // another chunk's entries add to it
    scale[r] = 0.25f + float(r);
  }
  if (cs.rows > 1) labels[1] = kIgnore, scale[1] = 0.f;
  if (cs.rows > 2) labels[2] = kCol0 + cs.cols / 2;
  if (cs.minus_inf) lse[cs.rows - 1] = 0.f; // the all -inf row: zeros, then minus the one-hot
  CrossEntropyRowsParams p;
  p.logits = work.row(0);
  p.labels = labels.data();
  p.lse = lse.data();
  p.row_scale = scale.data();
  p.ld = cs.ld;
  p.rows = cs.rows;
  p.cols = cs.cols;
  p.col0 = kCol0;
  p.ignore_index = kIgnore;
  if (launch_cross_entropy_grad(p, nullptr) != cudaSuccess) {
    printf("%-22s grad: launch failed\n", cs.name);
    return false;
  }
  bool ok = true;
  double worst = 0;
  for (int r = 0; r < cs.rows; ++r) {
    double row_max = 0;
    std::vector<double> want(cs.cols);
    for (int c = 0; c < cs.cols; ++c) {
      const double hit = labels[r] == kCol0 + c ? 1.0 : 0.0;
      want[c] = scale[r] == 0.f ? 0.0 : (std::exp(b.at(r, c) - double(lse[r])) - hit) * scale[r];
      row_max = std::max(row_max, std::abs(want[c]));
    }
    for (int c = 0; c < cs.cols; ++c) {
      const double got = work.at(r, c);
      const double err = std::abs(got - want[c]);
      worst = std::max(worst, row_max > 0 ? err / row_max : err);
      ok &= err <= std::abs(want[c]) * 0x1p-8 + 1e-6 * row_max;
    }
  }
  // Outside the rows' columns the buffer is untouched.
  for (size_t i = 0; i < work.data.size(); ++i) {
    const int64_t rel = int64_t(i) - cs.offset;
    const bool inside = rel >= 0 && rel / cs.ld < cs.rows && rel % cs.ld < cs.cols;
    if (!inside) ok &= work.data[i] == b.data[i];
  }
  printf("%-22s grad max err/row max %.2e  %s\n", cs.name, worst, ok ? "OK" : "FAIL");
  return ok;
}

} // namespace

int main(int argc, char** argv) {
  const int only = argc > 1 ? atoi(argv[1]) : -1;
  bool all = true;
  for (int i = 0; i < int(std::size(kCases)); ++i) {
    if (only >= 0 && only != i) continue;
    all &= check_lse(kCases[i], 11 + i);
    all &= check_grad(kCases[i], 101 + i);
  }
  return all ? 0 : 1;
}
