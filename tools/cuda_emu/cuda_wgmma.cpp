// tests/ops/cuda_wgmma.cu's cases on the CPU (tools/cuda_emu/run cuda_wgmma [CASE]): each exact
// product against a plain one. Passing here says the check kernel and the emulator agree; the GPU
// suite (kiln-cuda-wgmma-gpu-test) runs the same kernel on the hardware.
#include "device.cuh"
#include "kernel.inc"       // cuda_wgmma.cu as `run` rewrote it
#include "sparse_mla_ref.h" // bf16 conversions

#include <cstdio>
#include <random>
#include <vector>

using namespace kiln::backends::cuda;

static uint16_t small_integer(std::mt19937& rng) { // -3..3, exact in bf16
  return emu_mla::to_bf16(static_cast<float>(static_cast<int>(rng() % 7) - 3));
}

static bool run(int which) {
  const WgmmaCase& w = kWgmmaCases[which];
  std::mt19937 rng(1234 + which);
  std::vector<uint16_t> a(64 * w.k), b(w.k * w.b_width);
  for (auto& x : a) x = small_integer(rng);
  for (auto& x : b) x = small_integer(rng);
  std::vector<float> c(64 * w.n, NAN);
  const int status = launch_wgmma_case(which, a.data(), b.data(), c.data(), nullptr);
  if (status != 0) {
    printf("%-72s launch returned %d\n", w.name, status);
    return false;
  }
  int wrong = 0;
  for (int m = 0; m < 64; ++m) {
    for (int n = 0; n < w.n; ++n) {
      double s = 0;
      for (int k = 0; k < w.k; ++k)
        s += emu_mla::from_bf16(a[m * w.k + k]) * emu_mla::from_bf16(b[k * w.b_width + w.col0 + n]);
      if (c[m * w.n + n] != s && wrong++ < 3) {
        printf("  C[%d, %d] = %g, expected %g\n", m, n, c[m * w.n + n], s);
      }
    }
  }
  printf("%-72s %s (%s)\n", w.name, wrong == 0 ? "OK" : "FAIL", w.op);
  return wrong == 0;
}

int main(int argc, char** argv) {
  bool ok = true;
  for (int i = 0; i < kWgmmaCaseCount; ++i) {
    if (argc > 1 && std::atoi(argv[1]) != i) continue;
    ok &= run(i);
  }
  return ok ? 0 : 1;
}
