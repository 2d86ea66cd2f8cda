// moe_combine.cu's launchers on the CPU (tools/cuda_emu/run moe_combine [CASE]) against float64
// sums over the same bf16 rows: combine (weighted, and with null weights as the gather's
// backward) within one bf16 rounding of the float64 sum plus 1e-6 of the row's largest term;
// combine_bwd's d_y within one bf16 rounding and d_weights within 1e-5 (relative) of the float64
// dot products. Slots that are empty (-1), tokens with no valid slot (zeros), rows whose stride
// is wider than the row.
#include "bf16.h"
#include "device.cuh"
#include "kernel.inc" // moe_combine.cu as `run` rewrote it

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
  int tokens, k, hidden, pad; // rows' stride hidden + pad
  bool weighted;
};

constexpr Case kCases[] = {
    {"k 2, hidden 16", 5, 2, 16, 0, true},
    {"k 8, hidden 6144", 3, 8, 6144, 0, true},
    {"k 4, strided rows", 4, 4, 40, 8, true},
    {"gather backward", 6, 3, 2048, 0, false},
    {"wide 2560 > 256 threads", 2, 2, 2560, 0, true},
};

bool run(const Case& cs, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int slots_n = cs.tokens * cs.k;
  // Every third slot empty, token 1 entirely empty; the rest take rows in a shuffled order.
  std::vector<int32_t> pos(slots_n, -1);
  std::vector<int64_t> slots;
  for (int f = 0; f < slots_n; ++f) {
    if (f % 3 == 2 || f / cs.k == 1) continue;
    slots.push_back(f);
  }
  std::shuffle(slots.begin(), slots.end(), rng);
  for (size_t r = 0; r < slots.size(); ++r) pos[slots[r]] = static_cast<int32_t>(r);
  const int64_t rows = static_cast<int64_t>(slots.size()), ld = cs.hidden + cs.pad;
  std::vector<uint16_t> y(rows * ld), d_out(int64_t(cs.tokens) * cs.hidden);
  for (auto& v : y) v = to_bf16(nd(rng));
  for (auto& v : d_out) v = to_bf16(nd(rng));
  std::vector<float> w(slots_n);
  for (auto& v : w) v = nd(rng);

  std::vector<uint16_t> out(int64_t(cs.tokens) * cs.hidden, 0x7fc0);
  MoeCombineParams p;
  p.rows = y.data();
  p.pos = pos.data();
  p.weights = cs.weighted ? w.data() : nullptr;
  p.out = out.data();
  p.tokens = cs.tokens;
  p.rows_ld = ld;
  p.k = cs.k;
  p.hidden = cs.hidden;
  std::vector<uint16_t> d_y(rows * cs.hidden, 0x7fc0);
  std::vector<float> d_w(slots_n, 0.f);
  MoeCombineBwdParams b;
  b.d_out = d_out.data();
  b.d_out_ld = cs.hidden;
  b.y = y.data();
  b.slots = slots.data();
  b.weights = w.data();
  b.d_y = d_y.data();
  b.d_weights = d_w.data();
  b.rows = rows;
  b.k = cs.k;
  b.hidden = cs.hidden;
  if (launch_moe_combine(p, nullptr) != cudaSuccess ||
      (cs.pad == 0 && launch_moe_combine_bwd(b, nullptr) != cudaSuccess)) {
    printf("%-26s launch failed\n", cs.name);
    return false;
  }
  bool ok = true;
  double out_err = 0, dy_err = 0, dw_err = 0;
  for (int n = 0; n < cs.tokens; ++n) {
    for (int c = 0; c < cs.hidden; ++c) {
      double want = 0, largest = 0;
      for (int s = 0; s < cs.k; ++s) {
        const int32_t r = pos[n * cs.k + s];
        if (r < 0) continue;
        const double term = (cs.weighted ? w[n * cs.k + s] : 1.0) * from_bf16(y[r * ld + c]);
        want += term;
        largest = std::max(largest, std::abs(term));
      }
      const double got = from_bf16(out[int64_t(n) * cs.hidden + c]);
      const double err = std::abs(got - want);
      out_err = std::max(out_err, err / std::max(std::abs(want), 1e-30));
      ok &= err <= std::abs(want) * 0x1p-8 + 1e-6 * largest;
      if (n == 1) ok &= got == 0.0; // no valid slot
    }
  }
  if (cs.pad == 0) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t f = slots[r], n = f / cs.k;
      double dot = 0;
      for (int c = 0; c < cs.hidden; ++c) {
        const double g = from_bf16(d_out[n * cs.hidden + c]);
        dot += g * from_bf16(y[r * ld + c]);
        const double want = w[f] * g;
        const double err = std::abs(from_bf16(d_y[r * cs.hidden + c]) - want);
        dy_err = std::max(dy_err, err / std::max(std::abs(want), 1e-30));
        ok &= err <= std::abs(want) * 0x1p-8;
      }
      const double err = std::abs(d_w[f] - dot) / std::max(std::abs(dot), 1.0);
      dw_err = std::max(dw_err, err);
      ok &= err <= 1e-5;
    }
    for (int f = 0; f < slots_n; ++f) ok &= pos[f] >= 0 || d_w[f] == 0.f; // empty slots keep 0
  }
  printf("%-26s out %.1e  d_y %.1e  d_w %.1e (relative)  %s\n", cs.name, out_err, dy_err, dw_err,
         ok ? "OK" : "FAIL");
  return ok;
}

} // namespace

int main(int argc, char** argv) {
  const int only = argc > 1 ? atoi(argv[1]) : -1;
  bool all = true;
  for (int i = 0; i < int(std::size(kCases)); ++i)
    if (only < 0 || only == i) all &= run(kCases[i], 31 + i);
  return all ? 0 : 1;
}
