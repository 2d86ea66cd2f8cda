// Shared by the sparse_mla drivers (tools/cuda_emu/sparse_mla_{fwd,bwd}.cpp): bf16 conversions
// (bf16.h), the cases, random inputs with strided rows (NaN-filled padding) and causal-like index
// rows, and the float64 forward reference (lse, probabilities, o rounded to bf16).
#pragma once

#include "bf16.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace emu_mla {

using emu_bf16::from_bf16;
using emu_bf16::to_bf16;

struct Case {
  int tokens, heads, keys, topk, dqk, latent;
  bool empty_row;
  const char* name;
};

struct Inputs {
  int T, H, Tk, K, D, L;
  int64_t q_h, q_t, kv_t, idx_t;
  float scale;
  std::vector<uint16_t> q, kv, d_o;
  std::vector<int32_t> idx;
  double qv(int t, int h, int d) const { return from_bf16(q[t * q_t + h * q_h + d]); }
  double kvv(int j, int d) const { return from_bf16(kv[j * kv_t + d]); }
};

// Index rows: causal-like, a random count of distinct keys among the first (t*Tk/T)+1, -1
// elsewhere, shuffled; with empty_row, row T/2 selects nothing.
inline Inputs make_inputs(const Case& cs, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  Inputs in;
  in.T = cs.tokens, in.H = cs.heads, in.Tk = cs.keys, in.K = cs.topk, in.D = cs.dqk,
  in.L = cs.latent;
  const int T = in.T, H = in.H, Tk = in.Tk, K = in.K, D = in.D, L = in.L;
  in.q_h = D, in.q_t = int64_t(H) * D + 8, in.kv_t = D + 8, in.idx_t = K + 3;
  in.scale = 1.0f / std::sqrt(float(D)) * 2.0f;
  in.q.assign(T * in.q_t, 0x7fc0);
  in.kv.assign(Tk * in.kv_t, 0x7fc0);
  in.d_o.resize(int64_t(T) * H * L);
  in.idx.assign(T * in.idx_t, 12345);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < D; ++d) in.q[t * in.q_t + h * in.q_h + d] = to_bf16(nd(rng));
  for (int j = 0; j < Tk; ++j)
    for (int d = 0; d < D; ++d) in.kv[j * in.kv_t + d] = to_bf16(nd(rng));
  for (auto& x : in.d_o) x = to_bf16(nd(rng) * 0.5f);
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
    for (int j = 0; j < K; ++j) in.idx[t * in.idx_t + j] = row[j];
  }
  return in;
}

struct Forward {
  std::vector<float> lse;     // [T, H], +inf for a row with no valid slot
  std::vector<double> P;      // [T, H, K] probabilities, 0 for -1 slots
  std::vector<double> o;      // [T, H, L] float64
  std::vector<uint16_t> o_bf; // o rounded to bf16
};

inline Forward forward_reference(const Inputs& in) {
  const int T = in.T, H = in.H, K = in.K, D = in.D, L = in.L;
  Forward f;
  f.lse.resize(T * H);
  f.P.assign(int64_t(T) * H * K, 0.0);
  f.o.assign(int64_t(T) * H * L, 0.0);
  f.o_bf.resize(f.o.size());
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      std::vector<double> s(K, -INFINITY);
      double mx = -INFINITY;
      for (int j = 0; j < K; ++j) {
        const int slot = in.idx[t * in.idx_t + j];
        if (slot < 0) continue;
        double acc = 0;
        for (int d = 0; d < D; ++d) acc += in.qv(t, h, d) * in.kvv(slot, d);
        s[j] = acc * in.scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (int j = 0; j < K; ++j)
        if (s[j] > -INFINITY) sum += std::exp(s[j] - mx);
      const double l = sum > 0 ? mx + std::log(sum) : INFINITY;
      f.lse[t * H + h] = float(l);
      const int64_t r = int64_t(t) * H + h;
      for (int j = 0; j < K; ++j) f.P[r * K + j] = s[j] > -INFINITY ? std::exp(s[j] - l) : 0.0;
      for (int c = 0; c < L; ++c) {
        double acc = 0;
        for (int j = 0; j < K; ++j) {
          const int slot = in.idx[t * in.idx_t + j];
          if (slot >= 0) acc += f.P[r * K + j] * in.kvv(slot, c);
        }
        f.o[r * L + c] = acc;
        f.o_bf[r * L + c] = to_bf16(float(acc));
      }
    }
  return f;
}

// Every case both drivers run: the three padded widths, masked head rows, an unaligned latent,
// topk past a block, strided rows. The GLM-5 cases take ~30 s each.
inline constexpr Case kCases[] = {
    {24, 4, 24, 12, 24, 16, true, "tiny 24/16 H4"},
    {10, 16, 40, 70, 48, 32, true, "48/32 H16 topk70"},
    {6, 4, 30, 9, 24, 12, false, "latent 12 (unaligned)"},
    {5, 70, 150, 140, 128, 64, true, "128/64 H70"},
    {3, 64, 200, 130, 576, 512, false, "glm 576/512 H64"},
    {5, 16, 100, 64, 576, 512, true, "glm 576/512 H16"},
};

} // namespace emu_mla
