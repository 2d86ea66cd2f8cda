// sparse_mla_fwd.cu's launcher on the CPU (tools/cuda_emu/run sparse_mla_fwd [CASE]) against the
// float64 forward of sparse_mla_ref.h: o (bf16) within 1e-2 of max |o| and lse within 1e-3
// (absolute) per row, finite; a row with no valid slot gives o = 0 and lse = +inf.
#include "device.cuh"
#include "kernel.inc" // sparse_mla_fwd.cu as `run` rewrote it
#include "sparse_mla_ref.h"

#include <cstdio>

using namespace kiln::backends::cuda;
using namespace emu_mla;

static bool run(const Case& cs, uint32_t seed) {
  const Inputs in = make_inputs(cs, seed);
  const Forward f = forward_reference(in);
  std::vector<uint16_t> o(f.o.size(), 0x7fc0);
  std::vector<float> lse(f.lse.size(), NAN);
  SparseMlaFwdParams p;
  p.q = in.q.data();
  p.kv = in.kv.data();
  p.idx = in.idx.data();
  p.o = o.data();
  p.lse = lse.data();
  p.q_t = in.q_t;
  p.q_h = in.q_h;
  p.kv_t = in.kv_t;
  p.idx_t = in.idx_t;
  p.tokens = in.T;
  p.heads = in.H;
  p.keys = in.Tk;
  p.topk = in.K;
  p.dqk = in.D;
  p.latent = in.L;
  p.scale = in.scale;
  if (!sparse_mla_supported(in.D, in.L, in.K)) {
    printf("%-28s not supported by the forward: skipped\n", cs.name);
    return true;
  }
  const cudaError_t st = launch_sparse_mla_fwd(p, nullptr);
  if (st != cudaSuccess) {
    printf("%s: launch returned %d\n", cs.name, int(st));
    return false;
  }
  double o_max = 0, o_err = 0, lse_err = 0;
  bool finite = true, empty_ok = true;
  for (size_t i = 0; i < o.size(); ++i) {
    const double v = from_bf16(o[i]);
    finite &= std::isfinite(v);
    o_max = std::max(o_max, std::abs(f.o[i]));
    o_err = std::max(o_err, std::abs(v - f.o[i]));
  }
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(f.lse[i])) {
      empty_ok &= std::isinf(lse[i]) && lse[i] > 0;
      for (int c = 0; c < in.L; ++c) empty_ok &= o[i * in.L + c] == 0;
      continue;
    }
    finite &= std::isfinite(lse[i]);
    lse_err = std::max(lse_err, std::abs(double(lse[i]) - f.lse[i]));
  }
  const bool ok = finite && empty_ok && o_err <= 1e-2 * o_max && lse_err <= 1e-3;
  printf("%-28s o err/max %.2e (max %.3g)  lse err %.2e  finite %d empty rows %d  %s\n", cs.name,
         o_err / o_max, o_max, lse_err, finite, empty_ok, ok ? "OK" : "FAIL");
  return ok;
}

int main(int argc, char** argv) {
  const int only = argc > 1 ? atoi(argv[1]) : -1;
  bool all = true;
  for (int i = 0; i < int(std::size(kCases)); ++i)
    if (only < 0 || only == i) all &= run(kCases[i], 7 + i);
  return all ? 0 : 1;
}
