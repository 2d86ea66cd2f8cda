// rms_norm.cu's launchers on the CPU (tools/cuda_emu/run rms_norm [CASE]) against a float64
// reference on the same bf16 inputs: rstd within 1e-5 (relative), y within one bf16 rounding of
// the reference's double rounding (bf16(bf16(x rstd) w)), dx and d_weight within 1e-2 of their
// largest magnitude (bf16 outputs of float32 sums). The emulator's device has 2 SMs holding one
// CTA each, so both kernels loop over rows (more rows than CTAs) and the backward's weight
// gradient adds two partial rows; no rows gives a zero weight gradient.
#include "bf16.h"
#include "device.cuh"
#include "kernel.inc" // rms_norm.cu as `run` rewrote it

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using namespace kiln::backends::cuda;
using emu_bf16::from_bf16;
using emu_bf16::to_bf16;

namespace {

double round_bf16(double d) {
  return from_bf16(to_bf16(static_cast<float>(d)));
}

struct Case {
  const char* name;
  int rows, dim, x_pad, dy_pad; // row strides dim + pad
};

constexpr Case kCases[] = {
    {"one warp, dim 16", 3, 16, 0, 0},      {"dim 40 (5 vectors)", 5, 40, 8, 0},
    {"dim 2688 (Nemotron)", 3, 2688, 0, 8}, {"dim 6144 (GLM-5)", 3, 6144, 16, 16},
    {"dim 8192 (largest)", 2, 8192, 0, 0},  {"no rows", 0, 64, 0, 0},
};
constexpr float kEps = 1e-5f;

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

bool run(const Case& cs, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  const int64_t x_row = cs.dim + cs.x_pad, dy_row = cs.dim + cs.dy_pad;
  std::vector<uint16_t> x(std::max<int64_t>(cs.rows * x_row, 1)),
      dy(std::max<int64_t>(cs.rows * dy_row, 1));
  std::vector<uint16_t> w(cs.dim);
  for (auto& v : x) v = to_bf16(static_cast<float>(2.0 * nd(rng)));
  for (auto& v : dy) v = to_bf16(static_cast<float>(nd(rng)));
  for (auto& v : w) v = to_bf16(static_cast<float>(1.0 + 0.5 * nd(rng)));
  const int64_t n_out = std::max<int64_t>(int64_t(cs.rows) * cs.dim, 1);
  std::vector<uint16_t> y(n_out, 0x7fc0), dx(n_out, 0x7fc0), dw(cs.dim, 0x7fc0);
  std::vector<float> rstd(std::max(cs.rows, 1), NAN);

  RmsNormParams p;
  p.x = x.data();
  p.weight = w.data();
  p.y = y.data();
  p.rstd = rstd.data();
  p.dy = dy.data();
  p.dx = dx.data();
  p.d_weight = dw.data();
  p.rows = cs.rows;
  p.x_row = x_row;
  p.dy_row = dy_row;
  p.dim = cs.dim;
  p.eps = kEps;
  p.partial_rows = rms_norm_bwd_ctas(p);
  std::vector<float> partial(std::max<int64_t>(int64_t(p.partial_rows) * cs.dim, 1), NAN);
  p.d_weight_partial = partial.data();
  if (launch_rms_norm_fwd(p, nullptr) != cudaSuccess ||
      launch_rms_norm_bwd(p, nullptr) != cudaSuccess) {
    printf("%-24s launch failed\n", cs.name);
    return false;
  }

  bool ok = true;
  double rstd_err = 0, y_err = 0;
  std::vector<double> dx_ref(n_out, 0.0), dw_ref(cs.dim, 0.0);
  for (int r = 0; r < cs.rows; ++r) {
    double squares = 0;
    for (int c = 0; c < cs.dim; ++c) squares += std::pow(from_bf16(x[r * x_row + c]), 2);
    const double rs = 1.0 / std::sqrt(squares / cs.dim + kEps);
    rstd_err = std::max(rstd_err, std::abs(rstd[r] - rs) / rs);
    double dot = 0;
    std::vector<double> n(cs.dim), dn(cs.dim);
    for (int c = 0; c < cs.dim; ++c) {
      n[c] = from_bf16(x[r * x_row + c]) * rs;
      const double want = round_bf16(round_bf16(n[c]) * from_bf16(w[c]));
      const double got = from_bf16(y[int64_t(r) * cs.dim + c]);
      const double err = std::abs(got - want);
      y_err = std::max(y_err, err / std::max(std::abs(want), 1e-30));
      ok &= err <= std::abs(want) * 0x1p-7; // one bf16 step apart at most
      const double g = from_bf16(dy[r * dy_row + c]);
      dn[c] = g * from_bf16(w[c]);
      dot += dn[c] * n[c];
      dw_ref[c] += g * round_bf16(n[c]);
    }
    for (int c = 0; c < cs.dim; ++c)
      dx_ref[int64_t(r) * cs.dim + c] = rs * (dn[c] - n[c] * dot / cs.dim);
  }
  ok &= rstd_err <= 1e-5;
  const double dx_max = max_abs(dx_ref), dw_max = max_abs(dw_ref);
  double dx_err = 0, dw_err = 0;
  for (int64_t i = 0; i < int64_t(cs.rows) * cs.dim; ++i)
    dx_err = std::max(dx_err, std::abs(from_bf16(dx[i]) - dx_ref[i]));
  for (int c = 0; c < cs.dim; ++c)
    dw_err = std::max(dw_err, std::abs(from_bf16(dw[c]) - dw_ref[c]));
  ok &= dx_err <= 1e-2 * dx_max && dw_err <= 1e-2 * std::max(dw_max, 1e-30);
  if (cs.rows == 0) ok &= dw_max == 0 && dw_err == 0;
  printf("%-24s rstd %.1e  y %.1e  dx %.1e  dw %.1e (relative)  %s\n", cs.name, rstd_err, y_err,
         dx_max > 0 ? dx_err / dx_max : dx_err, dw_max > 0 ? dw_err / dw_max : dw_err,
         ok ? "OK" : "FAIL");
  return ok;
}

} // namespace

int main(int argc, char** argv) {
  const int only = argc > 1 ? atoi(argv[1]) : -1;
  bool all = true;
  for (int i = 0; i < int(std::size(kCases)); ++i)
    if (only < 0 || only == i) all &= run(kCases[i], 21 + i);
  return all ? 0 : 1;
}
