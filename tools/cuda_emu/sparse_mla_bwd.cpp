// sparse_mla_bwd.cu's launcher on the CPU (tools/cuda_emu/run sparse_mla_bwd [CASE]) against a
// float64 reference of launch.h's gradient, with the forward's lse and bf16 o from
// sparse_mla_ref.h: dq (bf16) and dkv (float32) within 1e-2 of their max |reference|, finite, kv
// rows nobody selects exactly zero, a row with no valid slot exactly zero.
#include "device.cuh"
#include "kernel.inc" // sparse_mla_bwd.cu as `run` rewrote it
#include "sparse_mla_ref.h"

#include <cstdio>

using namespace kiln::backends::cuda;
using namespace emu_mla;

static bool run(const Case& cs, uint32_t seed) {
  const Inputs in = make_inputs(cs, seed);
  const Forward f = forward_reference(in);
  const int T = in.T, H = in.H, Tk = in.Tk, K = in.K, D = in.D, L = in.L;
  const int64_t idx_t = in.idx_t;
  const auto& idx = in.idx;
  const auto& d_o = in.d_o;
  const auto& o = f.o_bf;
  const auto& P = f.P;
  const float scale = in.scale;
  auto qv = [&](int t, int h, int d) { return in.qv(t, h, d); };
  auto kvv = [&](int j, int d) { return in.kvv(j, d); };
  // Reference gradient.
  std::vector<double> dq_ref(int64_t(T) * H * D, 0.0), dkv_ref(int64_t(Tk) * D, 0.0);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      const int64_t r = int64_t(t) * H + h;
      double delta = 0;
      for (int c = 0; c < L; ++c)
        delta += double(from_bf16(d_o[r * L + c])) * from_bf16(o[r * L + c]);
      for (int j = 0; j < K; ++j) {
        const int slot = idx[t * idx_t + j];
        if (slot < 0) continue;
        const double p = P[r * K + j];
        double dp = 0;
        for (int c = 0; c < L; ++c) dp += double(from_bf16(d_o[r * L + c])) * kvv(slot, c);
        const double ds = scale * p * (dp - delta);
        for (int d = 0; d < D; ++d) {
          dq_ref[r * D + d] += ds * kvv(slot, d);
          dkv_ref[int64_t(slot) * D + d] +=
              ds * qv(t, h, d) + (d < L ? p * from_bf16(d_o[r * L + d]) : 0.0);
        }
      }
    }
  // Kernel.
  std::vector<float> delta(T * H, NAN), dkv(int64_t(Tk) * D, 0.0f);
  std::vector<uint16_t> dq(int64_t(T) * H * D, 0x7fc0);
  SparseMlaBwdParams p;
  p.q = in.q.data();
  p.kv = in.kv.data();
  p.idx = idx.data();
  p.o = o.data();
  p.d_o = d_o.data();
  p.lse = f.lse.data();
  p.delta = delta.data();
  p.dq = dq.data();
  p.dkv = dkv.data();
  p.q_t = in.q_t;
  p.q_h = in.q_h;
  p.kv_t = in.kv_t;
  p.idx_t = idx_t;
  p.tokens = T;
  p.heads = H;
  p.keys = Tk;
  p.topk = K;
  p.dqk = D;
  p.latent = L;
  p.scale = scale;
  const cudaError_t st = launch_sparse_mla_bwd(p, nullptr);
  if (st != cudaSuccess) {
    printf("%s: launch returned %d\n", cs.name, int(st));
    return false;
  }
  double dq_max = 0, dq_err = 0, dkv_max = 0, dkv_err = 0;
  bool finite = true, zero_ok = true;
  for (size_t i = 0; i < dq.size(); ++i) {
    const double v = from_bf16(dq[i]);
    finite &= std::isfinite(v);
    dq_max = std::max(dq_max, std::abs(dq_ref[i]));
    dq_err = std::max(dq_err, std::abs(v - dq_ref[i]));
  }
  std::vector<bool> selected(Tk, false);
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < K; ++j)
      if (idx[t * idx_t + j] >= 0) selected[idx[t * idx_t + j]] = true;
  for (size_t i = 0; i < dkv.size(); ++i) {
    finite &= std::isfinite(dkv[i]);
    dkv_max = std::max(dkv_max, std::abs(dkv_ref[i]));
    dkv_err = std::max(dkv_err, std::abs(dkv[i] - dkv_ref[i]));
    if (!selected[i / D] && dkv[i] != 0.0f) zero_ok = false;
  }
  if (cs.empty_row)
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < D; ++d)
        if (dq[(int64_t(T / 2) * H + h) * D + d] != 0) zero_ok = false;
  const bool ok = finite && zero_ok && dq_err <= 1e-2 * dq_max && dkv_err <= 1e-2 * dkv_max;
  printf("%-28s dq err/max %.2e (max %.3g)  dkv err/max %.2e (max %.3g)  finite %d zeros %d  %s\n",
         cs.name, dq_err / dq_max, dq_max, dkv_err / dkv_max, dkv_max, finite, zero_ok,
         ok ? "OK" : "FAIL");
  return ok;
}

int main(int argc, char** argv) {
  const int only = argc > 1 ? atoi(argv[1]) : -1;
  bool all = true;
  for (int i = 0; i < int(std::size(kCases)); ++i)
    if (only < 0 || only == i) all &= run(kCases[i], 7 + i);
  return all ? 0 : 1;
}
