// sparse_mla_bwd.cu's launcher on the CPU (tools/cuda_emu/run sparse_mla_bwd [CASE]) against a
// float64 reference of launch.h's gradient, with the forward's lse and bf16 o computed here:
// dq (bf16) and dkv (float32) within 1e-2 of their max |reference|, finite, kv rows nobody selects
// exactly zero, a row with no valid slot exactly zero. Cases cover the three padded widths,
// masked head rows (H 4, 16, 70), a latent that is not a multiple of 8, topk past a block,
// strided q / kv / idx rows. The GLM-5 cases take ~30 s each.
#include "device.cuh"
#include "kernel.inc" // sparse_mla_bwd.cu as `run` rewrote it

#include <algorithm>
#include <cstdio>
#include <random>

using namespace kiln::backends::cuda;

static uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
static float from_bf16(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}

struct Case {
  int tokens, heads, keys, topk, dqk, latent;
  bool empty_row;
  const char* name;
};

static bool run(const Case& cs, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int T = cs.tokens, H = cs.heads, Tk = cs.keys, K = cs.topk, D = cs.dqk, L = cs.latent;
  const int64_t q_h = D, q_t = int64_t(H) * D + 8, kv_t = D + 8, idx_t = K + 3;
  const float scale = 1.0f / std::sqrt(float(D)) * 2.0f;
  std::vector<uint16_t> q(T * q_t, 0x7fc0), kv(Tk * kv_t, 0x7fc0), d_o(int64_t(T) * H * L),
      o(int64_t(T) * H * L);
  std::vector<int32_t> idx(T * idx_t, 12345);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < D; ++d) q[t * q_t + h * q_h + d] = to_bf16(nd(rng));
  for (int j = 0; j < Tk; ++j)
    for (int d = 0; d < D; ++d) kv[j * kv_t + d] = to_bf16(nd(rng));
  for (auto& x : d_o) x = to_bf16(nd(rng) * 0.5f);
  // Index rows: causal-like, a random count of distinct keys among the first (t*Tk/T)+1, -1
  // elsewhere, shuffled.
  for (int t = 0; t < T; ++t) {
    int visible = std::min(Tk, 1 + t * Tk / T);
    std::vector<int32_t> keys(visible);
    for (int j = 0; j < visible; ++j) keys[j] = j;
    std::shuffle(keys.begin(), keys.end(), rng);
    int n = std::min(K, visible);
    if (t % 5 == 3) n = std::max(1, n / 2);
    std::vector<int32_t> row(K, -1);
    for (int j = 0; j < n; ++j) row[j] = keys[j];
    std::shuffle(row.begin(), row.end(), rng);
    if (cs.empty_row && t == T / 2) std::fill(row.begin(), row.end(), -1);
    for (int j = 0; j < K; ++j) idx[t * idx_t + j] = row[j];
  }
  // Forward (float64): lse and o rounded to bf16.
  std::vector<float> lse(T * H);
  std::vector<double> P(int64_t(T) * H * K, 0.0);
  auto qv = [&](int t, int h, int d) { return double(from_bf16(q[t * q_t + h * q_h + d])); };
  auto kvv = [&](int j, int d) { return double(from_bf16(kv[j * kv_t + d])); };
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      std::vector<double> s(K, -INFINITY);
      double mx = -INFINITY;
      for (int j = 0; j < K; ++j) {
        const int slot = idx[t * idx_t + j];
        if (slot < 0) continue;
        double acc = 0;
        for (int d = 0; d < D; ++d) acc += qv(t, h, d) * kvv(slot, d);
        s[j] = acc * scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (int j = 0; j < K; ++j)
        if (s[j] > -INFINITY) sum += std::exp(s[j] - mx);
      const double l = sum > 0 ? mx + std::log(sum) : INFINITY;
      lse[t * H + h] = float(l);
      for (int j = 0; j < K; ++j)
        P[(int64_t(t) * H + h) * K + j] = s[j] > -INFINITY ? std::exp(s[j] - l) : 0.0;
      for (int c = 0; c < L; ++c) {
        double acc = 0;
        for (int j = 0; j < K; ++j) {
          const int slot = idx[t * idx_t + j];
          if (slot >= 0) acc += P[(int64_t(t) * H + h) * K + j] * kvv(slot, c);
        }
        o[(int64_t(t) * H + h) * L + c] = to_bf16(float(acc));
      }
    }
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
  p.q = q.data();
  p.kv = kv.data();
  p.idx = idx.data();
  p.o = o.data();
  p.d_o = d_o.data();
  p.lse = lse.data();
  p.delta = delta.data();
  p.dq = dq.data();
  p.dkv = dkv.data();
  p.q_t = q_t;
  p.q_h = q_h;
  p.kv_t = kv_t;
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
  const Case cases[] = {
      {24, 4, 24, 12, 24, 16, true, "tiny 24/16 H4"},
      {10, 16, 40, 70, 48, 32, true, "48/32 H16 topk70"},
      {6, 4, 30, 9, 24, 12, false, "latent 12 (unaligned)"},
      {5, 70, 150, 140, 128, 64, true, "128/64 H70"},
      {3, 64, 200, 130, 576, 512, false, "glm 576/512 H64"},
      {5, 16, 100, 64, 576, 512, true, "glm 576/512 H16"},
  };
  const int only = argc > 1 ? atoi(argv[1]) : -1;
  bool all = true;
  for (int i = 0; i < int(sizeof(cases) / sizeof(cases[0])); ++i)
    if (only < 0 || only == i) all &= run(cases[i], 7 + i);
  return all ? 0 : 1;
}
