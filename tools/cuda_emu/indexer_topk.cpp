// indexer_topk.cu's launcher on the CPU (tools/cuda_emu/run indexer_topk [CASE]) against a float64
// reference, checked as tests/ops/cuda_indexer_topk_test.cpp checks it on a GPU (slot order and
// ties are free): per query row the same count of keys (the rest -1), every key visible to the row
// (its document, causal; CP padding rows see nothing) and distinct, and the sorted scores of the
// picks, recomputed in float64 from the bf16 inputs, equal to the reference top-k's within 5e-5
// of the row's largest |score| (+1e-6). Inputs have padded strides (NaN in the padding); the output
// has guard words on both sides and starts as a value no check accepts.
#include "device.cuh"
#include "kernel.inc"       // indexer_topk.cu as `run` rewrote it
#include "sparse_mla_ref.h" // bf16 conversions

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace kiln::backends::cuda;
using emu_mla::from_bf16;
using emu_mla::to_bf16;

namespace {

enum class Keys {
  kRandom,
  kHalfZero,    // even key rows are zero: score exactly 0 for every query
  kIdentical,   // one key row repeated: every visible key scores the same
  kFewDistinct, // 5 distinct key rows repeated: long runs of equal scores
  kNearTies,    // clusters of 8 key rows, one row but the last channel: (j % 8) 2^-23, which
                // every head's query has at 1: 8 scores within a few float32 steps of each other,
                // so a compaction's radix select runs down to single key values
  kSampledHigh, // the keys the kernel samples (sample_blocks) for the rows' common window [0, n)
                // are one row, 4x: the sample sees only its score, so where that score is high
                // the sampled threshold admits fewer than topk keys and the row streams again
};

struct Case {
  const char* name;
  int heads, dim, topk;
  std::vector<int> docs;           // real document lengths
  std::vector<int> padded = {};    // padded slot lengths (context parallelism), or none
  std::vector<int> positions = {}; // query rows' positions (query_indices), or every token
  Keys keys = Keys::kRandom;
  bool positive_weights = false;
  bool slow = false; // run only when asked for by number
};

std::vector<int> range(int begin, int end, int step = 1) {
  std::vector<int> out;
  for (int i = begin; i < end; i += step) out.push_back(i);
  return out;
}

std::vector<int> offsets(const std::vector<int>& lengths) {
  std::vector<int> cu{0};
  for (int len : lengths) cu.push_back(cu.back() + len);
  return cu;
}

// Emulator time grows with the long rows' (row, key block) pairs times the MMA warps (H_p / 32):
// ~20 s for case 9's ~6K pairs x 8 warps, ~2 min for GLM-5 at T 2600; the rest take seconds.
const Case kCases[] = {
    // Fixture-like: H_I 8, D_I 16/32, topk 8-12, T ~ 20-40.
    {"tiny one document", 8, 16, 8, {37}},
    {"tiny varlen", 8, 32, 12, {20, 1, 13, 0, 7}},
    {"topk 1", 8, 16, 1, {70}},
    // Off every tile: H_I 5 (padded to 8), D_I 24 and 40 (padded to 32, 64).
    {"odd heads and dim", 5, 24, 10, {131}},
    {"H12 D40 ragged varlen", 12, 40, 33, {100, 77, 1, 65}},
    {"topk beyond every document", 8, 32, 100, {50, 99, 3}},
    {"topk beyond some documents", 16, 64, 40, {39, 40, 41, 200, 7}},
    // Context parallelism: padded documents, a shard with padding rows, unsorted positions.
    {"cp shard with padding", 8, 32, 16, {50, 30, 70}, {64, 32, 96}, range(40, 150)},
    {"cp unsorted positions H32",
     32,
     128,
     24,
     {50, 30, 70},
     {64, 32, 96},
     {150, 3, 77, 64, 95, 191, 60, 96, 33, 120, 0, 165}},
    // GLM widths, topk small against the windows: the buffer compacts many times per row.
    {"ragged varlen H32 D128 topk64", 32, 128, 64, {300, 17, 129, 1, 450, 64, 65, 0, 3}},
    {"decode one row GLM topk2048", 32, 128, 2048, {3000}, {}, {2999}},
    {"decode rows H64 topk256", 64, 128, 256, {2000}, {}, {100, 1500, 1999, 256, 257, 1000}},
    {"spread rows H64 topk128", 64, 128, 128, {1200}, {}, range(5, 1200, 37)},
    {"spread rows H32 topk200 2 docs", 32, 128, 200, {700, 1300}, {}, range(3, 2000, 41)},
    // Exact ties: zero keys with positive weights, one key repeated, five repeated.
    {"half the keys score zero", 8, 32, 20, {150, 90}, {}, {}, Keys::kHalfZero, true},
    {"every key scores the same", 8, 32, 20, {150}, {}, {}, Keys::kIdentical},
    {"long runs of equal scores H32", 32, 128, 64, {600}, {}, range(0, 600, 3), Keys::kFewDistinct},
    {"near ties H32 topk256", 32, 128, 256, {1400}, {}, range(256, 1400, 9), Keys::kNearTies},
    {"near ties H64 topk300", 64, 128, 300, {1500}, {}, range(300, 1500, 17), Keys::kNearTies},
    {"zeros with GLM topk", 32, 128, 2048, {2600}, {}, range(2040, 2600, 9), Keys::kHalfZero, true},
    // The kernel's other limits: 256 padded heads with D_I 256, 128 heads, topk past 2048 slack.
    {"H200 D256 topk300", 200, 256, 300, {700}, {}, {699, 450, 301, 300, 64, 0, 601}},
    {"H128 D64 topk128", 128, 64, 128, {500, 300}, {}, {499, 130, 128, 700, 799, 640, 3}},
    {"topk4096 decode rows", 32, 128, 4096, {6000}, {}, {5999, 4500, 4097, 4096, 10}},
    // The sampled threshold (windows of 2048+ keys, at least 2 topk): rows spread over a long
    // document (lockstep and warp-specialized), and samples that mislead the threshold: for
    // every row (positive weights) or some of a CTA's (signed weights), each streaming again.
    {"sampled threshold H32 topk512", 32, 128, 512, {5000}, {}, range(2100, 5000, 53)},
    {"sampled threshold H64 topk512", 64, 128, 512, {4600}, {}, range(2200, 4600, 97)},
    {"sample misled, one row", 8, 32, 512, {4096}, {}, {4095}, Keys::kSampledHigh, true},
    {"sample misled for some rows", 8, 32, 512, {4096}, {}, range(4088, 4096), Keys::kSampledHigh},
    {"sample misled H64", 64, 128, 512, {4096}, {}, range(4092, 4096), Keys::kSampledHigh},
    {"sample misled H32", 32, 128, 512, {4096}, {}, range(4088, 4096), Keys::kSampledHigh},
    {"sampled CP shard, 2 documents",
     16,
     64,
     512,
     {3000, 5000},
     {3072, 5120},
     [] {
       std::vector<int> rows = range(5272, 8072, 97); // document 2 (from key 3072), then 1
       for (int p : range(2100, 3000, 61)) rows.push_back(p);
       return rows;
     }()},
    // H_I 17..31: padded to 32 heads, 8 selection warps; D_I 72 padded to 128.
    {"H20 D72 padded heads, 8 sel", 20, 72, 96, {700, 300}},
    // GLM-5 (H_I 32, D_I 128, topk 2048), reduced only in T: one document, every row.
    {"GLM-5 H32 T2600", 32, 128, 2048, {2600}},
    // Slow (~9 and ~2 min): GLM-5 at the GPU test's 4K tokens, H_I 32 every row, H_I 64 one
    // row in 8 of the long ones.
    {"GLM-5 H32 T4096", 32, 128, 2048, {4096}, {}, {}, Keys::kRandom, false, true},
    {"GLM-5 H64 T4096 rows 2048+",
     64,
     128,
     2048,
     {4096},
     {},
     range(2040, 4096, 8),
     Keys::kRandom,
     false,
     true},
};

struct Inputs {
  int tq = 0, tk = 0, heads = 0, dim = 0, topk = 0;
  int64_t q_t = 0, q_h = 0, k_t = 0, w_t = 0;
  std::vector<uint16_t> q, k;
  std::vector<float> w;
  std::vector<int32_t> cu, cu_padded, positions;
  std::vector<int> lo, hi; // each row's window, from a linear scan over the documents
};

Inputs make_inputs(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  Inputs in;
  in.heads = c.heads, in.dim = c.dim, in.topk = c.topk;
  in.cu = offsets(c.docs);
  const std::vector<int> starts = c.padded.empty() ? in.cu : offsets(c.padded);
  if (!c.padded.empty()) in.cu_padded = starts;
  in.tk = starts.back();
  in.positions = c.positions.empty() ? range(0, in.tk) : c.positions;
  in.tq = static_cast<int>(in.positions.size());
  for (int p : in.positions) {
    int lo = 0, hi = 0;
    for (size_t n = 0; n < c.docs.size(); ++n) {
      if (p >= starts[n] && p < starts[n] + c.docs[n]) lo = starts[n], hi = p + 1;
    }
    in.lo.push_back(lo);
    in.hi.push_back(hi);
  }
  const uint16_t nan = 0x7fc0;
  in.q_h = c.dim, in.q_t = int64_t{c.heads} * c.dim + 8, in.k_t = c.dim + 8, in.w_t = c.heads + 3;
  in.q.assign(in.tq * in.q_t, nan);
  in.k.assign(in.tk * in.k_t, nan);
  in.w.assign(in.tq * in.w_t, NAN);
  for (int t = 0; t < in.tq; ++t)
    for (int h = 0; h < c.heads; ++h)
      for (int d = 0; d < c.dim; ++d) {
        const bool one = c.keys == Keys::kNearTies && d + 1 == c.dim;
        in.q[t * in.q_t + h * in.q_h + d] = one ? to_bf16(1.f) : to_bf16(normal(rng));
      }
  std::vector<uint16_t> base(5 * c.dim);
  for (auto& x : base) x = to_bf16(normal(rng));
  std::vector<bool> sampled(in.tk, false);
  if (c.keys == Keys::kSampledHigh) { // one document from key 0: the common window is [0, n)
    const int n = *std::min_element(in.hi.begin(), in.hi.end());
    Plan plan;
    int rank = 0;
    const int blocks = make_plan(c.heads, c.dim, c.topk, in.tq, true, plan)
                           ? sample_blocks(n, c.topk, c.topk + plan.slack, rank)
                           : 0;
    if (blocks == 0) { // the case would test nothing
      printf("%s: the kernel does not sample a window of %d keys at topk %d\n", c.name, n, c.topk);
      std::exit(1);
    }
    const int m = blocks * 64;
    for (int i = 0; i < m; ++i) sampled[(int64_t{2} * i + 1) * n / (2 * m)] = true;
  }
  std::vector<uint16_t> cluster(c.dim); // kNearTies: the key row of keys 8 i .. 8 i + 7
  for (int j = 0; j < in.tk; ++j) {
    if (c.keys == Keys::kNearTies && j % 8 == 0) {
      for (auto& x : cluster) x = to_bf16(normal(rng));
    }
    for (int d = 0; d < c.dim; ++d) {
      uint16_t v = to_bf16(normal(rng));
      if (c.keys == Keys::kHalfZero && j % 2 == 0) v = 0;
      if (c.keys == Keys::kIdentical) v = base[d];
      if (c.keys == Keys::kFewDistinct) v = base[(j % 5) * c.dim + d];
      if (c.keys == Keys::kNearTies) {
        v = d + 1 < c.dim ? cluster[d] : to_bf16(std::ldexp(float(j % 8), -23));
      }
      if (sampled[j]) v = to_bf16(4.f * from_bf16(base[d]));
      in.k[j * in.k_t + d] = v;
    }
  }
  for (int t = 0; t < in.tq; ++t)
    for (int h = 0; h < c.heads; ++h) {
      const float v = normal(rng) * 0.3f;
      in.w[t * in.w_t + h] = c.positive_weights ? std::abs(v) : v;
    }
  return in;
}

// Float64 score of key j for query row t.
struct Scorer {
  const Inputs& in;
  std::vector<double> q, k; // dense float64 copies
  explicit Scorer(const Inputs& inputs) : in(inputs) {
    const int H = in.heads, D = in.dim;
    q.resize(int64_t{in.tq} * H * D);
    k.resize(int64_t{in.tk} * D);
    for (int t = 0; t < in.tq; ++t)
      for (int h = 0; h < H; ++h)
        for (int d = 0; d < D; ++d)
          q[(int64_t{t} * H + h) * D + d] = from_bf16(in.q[t * in.q_t + h * in.q_h + d]);
    for (int j = 0; j < in.tk; ++j)
      for (int d = 0; d < D; ++d) k[int64_t{j} * D + d] = from_bf16(in.k[j * in.k_t + d]);
  }
  double operator()(int t, int j) const {
    const int H = in.heads, D = in.dim;
    const double* kj = &k[int64_t{j} * D];
    double score = 0;
    for (int h = 0; h < H; ++h) {
      const double* qh = &q[(int64_t{t} * H + h) * D];
      double dot = 0;
      for (int d = 0; d < D; ++d) dot += qh[d] * kj[d];
      score += double(in.w[t * in.w_t + h]) * std::max(dot, 0.0);
    }
    return score;
  }
};

bool run_case(const Case& c, uint32_t seed) {
  const Inputs in = make_inputs(c, seed);
  const int tq = in.tq, topk = in.topk;
  if (!indexer_topk_supported(in.heads, in.dim, topk)) {
    printf("%-32s not supported by the kernel: FAIL\n", c.name);
    return false;
  }
  // The output with kGuard words on either side; a slot the kernel does not write stays kUnset,
  // which is no key of any window.
  constexpr int kGuard = 64;
  constexpr int32_t kUnset = 0x7f0f0f0f;
  std::vector<int32_t> out(int64_t{tq} * topk + 2 * kGuard, kUnset);
  IndexerTopkParams p;
  p.q = in.q.data();
  p.k = in.k.data();
  p.w = in.w.data();
  p.cu_seqlens = in.cu.data();
  p.cu_padded = in.cu_padded.empty() ? nullptr : in.cu_padded.data();
  p.query_indices = c.positions.empty() ? nullptr : in.positions.data();
  p.out = out.data() + kGuard;
  p.q_t = in.q_t, p.q_h = in.q_h, p.k_t = in.k_t, p.w_t = in.w_t;
  p.tq = tq, p.tk = in.tk, p.heads = in.heads, p.dim = in.dim, p.topk = topk;
  p.docs = static_cast<int>(in.cu.size()) - 1;
  // The reference's top-k scores per row, on a second core while the kernel runs.
  const Scorer score(in);
  std::vector<std::vector<double>> want(tq);
  std::thread reference([&] {
    for (int t = 0; t < tq; ++t) {
      for (int j = in.lo[t]; j < in.hi[t]; ++j) want[t].push_back(score(t, j));
      std::sort(want[t].rbegin(), want[t].rend());
      want[t].resize(std::min(in.hi[t] - in.lo[t], topk));
    }
  });
  const auto start = std::chrono::steady_clock::now();
  const cudaError_t status = launch_indexer_topk(p, nullptr);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  reference.join();
  if (status != cudaSuccess) {
    printf("%-32s launch returned %d: FAIL\n", c.name, int(status));
    return false;
  }
  bool guards = true;
  for (int i = 0; i < kGuard; ++i) guards &= out[i] == kUnset && out[out.size() - 1 - i] == kUnset;

  int bad_rows = 0, long_rows = 0;
  double worst = 0; // largest score difference over the row's scale
  std::string report;
  for (int t = 0; t < tq; ++t) {
    const int lo = in.lo[t], hi = in.hi[t], expected = std::min(hi - lo, topk);
    long_rows += hi - lo > topk;
    const int32_t* row = p.out + int64_t{t} * topk;
    std::vector<int> picked;
    bool bad_value = false, invisible = false, twice = false;
    for (int j = 0; j < topk; ++j) {
      if (row[j] == -1) continue;
      if (row[j] < -1) bad_value = true;
      if (row[j] < lo || row[j] >= hi) {
        invisible = true;
        continue;
      }
      picked.push_back(row[j]);
    }
    std::sort(picked.begin(), picked.end());
    twice = std::adjacent_find(picked.begin(), picked.end()) != picked.end();
    const int count = static_cast<int>(picked.size()) + (invisible ? 1 : 0);
    std::vector<double> got;
    for (int j : picked) got.push_back(score(t, j));
    std::sort(got.rbegin(), got.rend());
    const std::vector<double>& top = want[t];
    double scale = 0, diff = 0;
    int at = -1;
    if (got.size() == top.size()) {
      for (size_t j = 0; j < got.size(); ++j) {
        scale = std::max({scale, std::abs(got[j]), std::abs(top[j])});
        if (std::abs(got[j] - top[j]) > diff) diff = std::abs(got[j] - top[j]), at = int(j);
      }
      if (scale > 0) worst = std::max(worst, diff / scale);
    }
    const bool differs = got.size() != top.size() || diff > 5e-5 * scale + 1e-6;
    if (!(bad_value || invisible || twice || count != expected || differs)) continue;
    if (++bad_rows > 3) continue;
    char line[512];
    snprintf(line, sizeof line,
             "\n  row %d (position %d, window [%d, %d), %d keys expected): %d picked", t,
             in.positions[t], lo, hi, expected, count);
    report += line;
    if (bad_value) report += "; values below -1";
    if (invisible) report += "; keys outside the window (or unwritten slots)";
    if (twice) report += "; a key twice";
    if (differs && at >= 0) {
      snprintf(line, sizeof line,
               "; sorted scores differ most at rank %d: %.9g vs reference %.9g (scale %.3g)", at,
               got[at], top[at], scale);
      report += line;
    }
    report += "\n    keys [";
    for (int j = 0; j < std::min(topk, 12); ++j) report += (j ? ", " : "") + std::to_string(row[j]);
    report += topk > 12 ? ", ...]" : "]";
  }
  const bool ok = bad_rows == 0 && guards;
  Plan plan; // the kernel's: rows per CTA and candidate slack S (a compaction every <= S keys)
  make_plan(in.heads, in.dim, topk, tq, true, plan);
  printf(
      "%-30s H%-3d D%-3d topk %-4d rows %4d (%4d long) keys %4d  bq %d S %4d  diff/scale %.0e  "
      "guards %s  %5.1f s  %s%s\n",
      c.name, in.heads, in.dim, topk, tq, long_rows, in.tk, plan.bq, plan.slack, worst,
      guards ? "ok" : "BROKEN", seconds, ok ? "OK" : "FAIL", report.c_str());
  if (bad_rows > 3) printf("  ... %d bad rows in all\n", bad_rows);
  fflush(stdout);
  return ok;
}

// The largest topk the kernel takes at each D_I (one query per CTA, the least slack), as its
// header and the plugin README state them: indexer_topk_supported must hold there and not one
// past it, at H_I 32 and at 64 (warp-specialized where it fits: the same limits).
bool check_topk_limits() {
  struct Limit {
    int dim, topk;
  };
  bool ok = true;
  for (const int heads : {32, 64}) {
    for (const Limit l :
         {Limit{256, 40728}, Limit{128, 48920}, Limit{64, 53016}, Limit{16, 53016}}) {
      if (!indexer_topk_supported(heads, l.dim, l.topk) ||
          indexer_topk_supported(heads, l.dim, l.topk + 1)) {
        printf(
            "topk limit at H_I %d, D_I %d: expected %d (indexer_topk.cu's header), found "
            "otherwise\n",
            heads, l.dim, l.topk);
        ok = false;
      }
    }
  }
  printf("topk limits at D_I 256 / 128 / 64 / 16: %s\n", ok ? "as documented" : "CHANGED");
  return ok;
}

} // namespace

// Arguments: none (every case but the slow ones), a case number N, or a range N-M; every run
// checks the topk limits first. EMU_INPUTS=<n>: case i's inputs from seed n + i instead of 80 + i.
int main(int argc, char** argv) {
  int first = 0, last = int(std::size(kCases)) - 1;
  const char* inputs = std::getenv("EMU_INPUTS");
  const uint32_t seed =
      inputs != nullptr ? static_cast<uint32_t>(std::strtoul(inputs, nullptr, 10)) : 80;
  const bool chosen = argc > 1;
  if (chosen && sscanf(argv[1], "%d-%d", &first, &last) == 1) last = first;
  bool all = check_topk_limits();
  for (int i = first; i <= last && i < int(std::size(kCases)); ++i) {
    printf("%2d ", i);
    if (!chosen && kCases[i].slow) {
      printf("%-30s slow: run it by number\n", kCases[i].name);
      continue;
    }
    all &= run_case(kCases[i], seed + i);
  }
  return all ? 0 : 1;
}
