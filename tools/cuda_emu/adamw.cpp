// adamw.cu's launcher on the CPU (tools/cuda_emu/run adamw [CASE]) against torch's AdamW formula
// in float64 on the same inputs, over three steps: masters and moments within 1e-5 of the
// float64 values (relative to the value or, where terms cancel, to their size: float32 rounding
// of a few operations per step), a bf16 parameter exactly the bf16 rounding of the kernel's own
// master, a float32 parameter with a separate master equal to it. Cases: element counts that leave
// a tail (n % 8), more vectors than the emulator's grid has threads, float32 parameters that are
// their own master, gradient scaling (clipping) and no weight decay.
#include "bf16.h"
#include "device.cuh"
#include "kernel.inc" // adamw.cu as `run` rewrote it

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

using namespace kiln::backends::cuda;
using emu_bf16::from_bf16;
using emu_bf16::to_bf16;

namespace {

enum class Kind { kBf16, kFloatOwn, kFloatMaster };

struct Case {
  const char* name;
  Kind kind;
  int64_t n;
  double weight_decay, grad_scale;
};

constexpr Case kCases[] = {
    {"bf16, n 1003 (tail 3)", Kind::kBf16, 1003, 0.1, 1.0},
    {"bf16, clipped, no decay", Kind::kBf16, 64, 0.0, 0.37},
    {"bf16, 20000 > grid threads", Kind::kBf16, 20000 * 8 + 5, 0.1, 1.0},
    {"float32, own master", Kind::kFloatOwn, 77, 0.1, 2.5},
    {"float32, with a master", Kind::kFloatMaster, 40, 0.05, 1.0},
    {"tail only, n 5", Kind::kBf16, 5, 0.1, 1.0},
};

constexpr double kLr = 1e-2, kBeta1 = 0.9, kBeta2 = 0.95, kEps = 1e-8;

bool run(const Case& cs, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  const int64_t n = cs.n;
  const bool bf16 = cs.kind == Kind::kBf16;
  std::vector<double> w(n), m(n, 0.0), v(n, 0.0); // the float64 reference
  std::vector<float> master(n), exp_avg(n, 0.f), exp_avg_sq(n, 0.f), param32(n);
  std::vector<uint16_t> param16(n);
  for (int64_t i = 0; i < n; ++i) {
    master[i] = static_cast<float>(nd(rng));
    if (bf16) master[i] = from_bf16(to_bf16(master[i])); // the bf16 parameter's value
    w[i] = master[i];
    param16[i] = to_bf16(master[i]);
    param32[i] = master[i];
  }
  double worst = 0;
  bool ok = true;
  for (int step = 1; step <= 3; ++step) {
    std::vector<uint16_t> grad16(n);
    std::vector<float> grad32(n);
    for (int64_t i = 0; i < n; ++i) {
      grad32[i] = static_cast<float>(nd(rng) * 1e-2);
      if (bf16) grad32[i] = from_bf16(grad16[i] = to_bf16(grad32[i]));
    }
    AdamwParams p;
    p.param = bf16 ? static_cast<void*>(param16.data()) : static_cast<void*>(param32.data());
    p.grad = bf16 ? static_cast<const void*>(grad16.data()) : grad32.data();
    p.master = cs.kind == Kind::kFloatOwn ? param32.data() : master.data();
    p.exp_avg = exp_avg.data();
    p.exp_avg_sq = exp_avg_sq.data();
    p.n = n;
    p.bf16 = bf16;
    p.has_divisor = cs.grad_scale != 1.0;
    p.grad_divisor = static_cast<float>(1.0 / cs.grad_scale);
    p.lr_wd = static_cast<float>(kLr * cs.weight_decay);
    p.beta1 = static_cast<float>(kBeta1);
    p.beta2 = static_cast<float>(kBeta2);
    p.eps = static_cast<float>(kEps);
    p.step_size = static_cast<float>(kLr / (1 - std::pow(kBeta1, step)));
    p.bias_correction2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(kBeta2, step)));
    if (launch_adamw(p, nullptr) != cudaSuccess) {
      printf("%-28s launch failed\n", cs.name);
      return false;
    }
    const double c1 = 1 - std::pow(kBeta1, step), c2 = 1 - std::pow(kBeta2, step);
    for (int64_t i = 0; i < n; ++i) {
      const double g = grad32[i] * cs.grad_scale;
      w[i] *= 1 - kLr * cs.weight_decay;
      m[i] = kBeta1 * m[i] + (1 - kBeta1) * g;
      v[i] = kBeta2 * v[i] + (1 - kBeta2) * g * g;
      w[i] -= kLr * (m[i] / c1) / (std::sqrt(v[i] / c2) + kEps);
      const float got_w = cs.kind == Kind::kFloatOwn ? param32[i] : master[i];
      // Relative to the value, or to the size of the terms that formed it where they cancel:
      // lr for the master, the gradients' spread (1e-2) for m, its square for v.
      const auto err = [&](double got, double want, double floor) {
        const double e = std::abs(got - want) / std::max(std::abs(want), floor);
        worst = std::max(worst, e);
        return e <= 1e-5;
      };
      ok &= err(got_w, w[i], kLr) && err(exp_avg[i], m[i], 1e-2) && err(exp_avg_sq[i], v[i], 1e-4);
      if (bf16) ok &= param16[i] == to_bf16(master[i]);
      if (cs.kind == Kind::kFloatMaster) ok &= param32[i] == master[i];
    }
  }
  printf("%-28s worst %.1e (relative)  %s\n", cs.name, worst, ok ? "OK" : "FAIL");
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
