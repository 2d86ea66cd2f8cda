// The cuda backend's `indexer_topk` (plugins/backends/cuda/indexer_topk.cu) against the torch
// reference, both through the dispatcher with the built-in plugins loaded. Slot order and ties
// are free, so a row is compared by what it selects: the same number of keys (-1 padding), every
// key visible to the query and distinct, and the same multiset of scores, each recomputed in
// float64 from the inputs (sorted, equal within the float32 summation error of either side).
// Cases: tiny fixture-like shapes, tile edges (T, D_I and H_I off every tile size), ragged varlen
// batches, topk beyond the documents, context-parallel shards with padding rows and unsorted
// query_indices, decode rows, exact ties, near ties, GLM-5 shapes (H_I 32/64, D_I 128, topk 2048)
// at 4K, 8K and 32K tokens (with a bound on the memory the call allocates), windows long enough for
// the cuda kernel's sampled threshold and samples that mislead it, and the calls the kernel does
// not take (float32, sizes past its limits): an error under backend.strict, torch otherwise. Every
// test skips itself without a GPU.
#include "core/plugin_host.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/ops.h"
#include "support/cuda_backend.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace kiln {
namespace {

const std::string kBackend = test::cuda_backend_under_test(); // "cuda" unless told

const c10::Device kCuda(c10::DeviceType::CUDA, 0);

void load_plugins_once() {
  static const bool loaded = [] {
    core::PluginHost::global().load({.use_env = false});
    return true;
  }();
  (void)loaded;
}

std::vector<int64_t> offsets(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> cu{0};
  for (int64_t len : lengths) cu.push_back(cu.back() + len);
  return cu;
}

at::Tensor int32_on_gpu(const std::vector<int64_t>& values) {
  return at::tensor(values, at::kLong).to(at::kInt).to(kCuda);
}

// Which keys [lo, hi) a query at position p sees, written independently of both kernels: a
// linear scan over the documents' real token ranges.
std::pair<int64_t, int64_t> window_of(int64_t p, const std::vector<int64_t>& lengths,
                                      const std::vector<int64_t>& starts) {
  for (size_t n = 0; n < lengths.size(); ++n) {
    if (p >= starts[n] && p < starts[n] + lengths[n]) return {starts[n], p + 1};
  }
  return {0, 0};
}

enum class Keys {
  kRandom,
  kHalfZero,     // every other key row is zero: its score is exactly 0 for every query
  kIdentical,    // one key row repeated: every visible key scores the same
  kFewDistinct,  // 5 distinct key rows repeated: long runs of equal scores
  kNearTies,     // clusters of 8 key rows, one row but the last channel: (j % 8) 2^-23, which
                 // every head's query has at 1: 8 scores within a few float32 steps of each other,
                 // so the kernel's radix select runs down to single key values
  kStride32High, // the keys at 16 mod 32 are one row, 4x: what the cuda kernel samples of a
                 // window of 2048 b keys (b a power of two up to 16: keys lo + 16 + 32 i) to start
                 // its threshold, so where that row scores high the sample admits too few keys
                 // and the row streams again
};

struct Case {
  std::string name;
  int64_t heads, dim, topk;
  std::vector<int64_t> docs;           // real document lengths
  std::vector<int64_t> padded = {};    // padded slot lengths (context parallelism), or none
  std::vector<int64_t> positions = {}; // query rows' positions (query_indices), or every token
  Keys keys = Keys::kRandom;
  bool positive_weights = false;
};

struct Inputs {
  at::Tensor q, k, w, cu, query_indices, cu_padded; // on the GPU
  int64_t topk = 0;
  std::vector<int64_t> lo, hi; // each row's window
};

Inputs make_inputs(const Case& c, uint64_t seed) {
  at::manual_seed(seed);
  Inputs in;
  const std::vector<int64_t> cu = offsets(c.docs);
  const std::vector<int64_t> starts = c.padded.empty() ? cu : offsets(c.padded);
  const int64_t tk = starts.back();
  std::vector<int64_t> positions = c.positions;
  if (positions.empty()) {
    for (int64_t t = 0; t < tk; ++t) positions.push_back(t);
  } else {
    in.query_indices = int32_on_gpu(positions);
  }
  for (int64_t p : positions) {
    const auto [lo, hi] = window_of(p, c.docs, starts);
    in.lo.push_back(lo);
    in.hi.push_back(hi);
  }
  const int64_t tq = static_cast<int64_t>(positions.size());
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  in.q = at::randn({tq, c.heads, c.dim}, bf16);
  if (c.keys == Keys::kNearTies) in.q.select(2, c.dim - 1).fill_(1);
  switch (c.keys) {
    case Keys::kRandom:
      in.k = at::randn({tk, c.dim}, bf16);
      break;
    case Keys::kHalfZero:
      in.k = at::randn({tk, c.dim}, bf16) *
             (at::arange(tk, bf16.dtype(at::kLong)) % 2).unsqueeze(1).to(at::kBFloat16);
      break;
    case Keys::kIdentical:
      in.k = at::randn({1, c.dim}, bf16).expand({tk, c.dim}).contiguous();
      break;
    case Keys::kFewDistinct:
      in.k = at::randn({5, c.dim}, bf16).index_select(0, at::arange(tk, bf16.dtype(at::kLong)) % 5);
      break;
    case Keys::kNearTies: {
      const at::Tensor j = at::arange(tk, bf16.dtype(at::kLong));
      in.k = at::randn({(tk + 7) / 8, c.dim}, bf16).index_select(0, j.div(8, "floor"));
      in.k.select(1, c.dim - 1).copy_(j.remainder(8).to(at::kFloat).mul(std::ldexp(1.0, -23)));
      break;
    }
    case Keys::kStride32High: {
      in.k = at::randn({tk, c.dim}, bf16);
      const at::Tensor sampled = at::arange(16, tk, 32, bf16.dtype(at::kLong));
      in.k.index_copy_(0, sampled,
                       (at::randn({1, c.dim}, bf16) * 4).expand({sampled.numel(), c.dim}));
      break;
    }
  }
  // Mixed signs, as weights_proj gives (scores can be negative, zero or positive), or positive
  // so that keys scoring 0 tie with each other above every negative score.
  in.w = at::randn({tq, c.heads}, bf16.dtype(at::kFloat)) * 0.3;
  if (c.positive_weights) in.w = in.w.abs();
  in.cu = int32_on_gpu(cu);
  if (!c.padded.empty()) in.cu_padded = int32_on_gpu(starts);
  in.topk = c.topk;
  return in;
}

at::Tensor run(const Inputs& in, const std::string& backend, bool strict = true) {
  sdk::Dispatcher::global().configure({.default_backend = backend, .strict = strict});
  return ops::indexer_topk(in.q, in.k, in.w, in.cu, in.topk, in.query_indices, in.cu_padded);
}

// The backend that ran the last indexer_topk call.
std::string chosen_backend() {
  std::string chosen;
  for (const auto& r : sdk::Dispatcher::global().resolved()) {
    if (r.op == "indexer_topk") chosen = r.chosen;
  }
  return chosen;
}

// Float64 scores of the keys `picked` [Tq, topk] selects (-inf for -1 slots), row by row on the
// GPU in chunks of about 256 MiB of gathered keys.
at::Tensor picked_scores(const Inputs& in, const at::Tensor& picked) {
  const int64_t tq = picked.size(0), topk = picked.size(1), dim = in.k.size(1);
  const int64_t rows = std::max<int64_t>(1, (int64_t{256} << 20) / (topk * dim * 8));
  const at::Tensor k = in.k.to(at::kDouble);
  at::Tensor out = at::empty({tq, topk}, picked.options().dtype(at::kDouble));
  for (int64_t r0 = 0; r0 < tq; r0 += rows) {
    const int64_t c = std::min(rows, tq - r0);
    const at::Tensor idx = picked.narrow(0, r0, c).to(at::kLong);
    const at::Tensor keys = k.index_select(0, idx.clamp_min(0).flatten()).view({c, topk, dim});
    const at::Tensor q = in.q.narrow(0, r0, c).to(at::kDouble);              // [c, H, D]
    const at::Tensor s = at::bmm(q, keys.transpose(1, 2)).relu_();           // [c, H, topk]
    const at::Tensor w = in.w.narrow(0, r0, c).to(at::kDouble).unsqueeze(1); // [c, 1, H]
    at::Tensor score = at::bmm(w, s).squeeze(1);                             // [c, topk]
    score.masked_fill_(idx < 0, -std::numeric_limits<double>::infinity());
    out.narrow(0, r0, c).copy_(score);
  }
  return out;
}

// "[k0, k1, ...]": the first slots of an output row, for messages.
std::string first_keys(const at::Tensor& row) {
  const at::Tensor head = row.narrow(0, 0, std::min<int64_t>(row.size(0), 16)).cpu();
  std::ostringstream s;
  s << "[";
  for (int64_t j = 0; j < head.numel(); ++j) s << (j ? ", " : "") << head[j].item<int>();
  s << (head.numel() < row.size(0) ? ", ...]" : "]");
  return s.str();
}

// Checks the cuda output against the torch output row by row (see the file comment); reports
// the first few bad rows with what was found.
::testing::AssertionResult same_selection(const Inputs& in, const at::Tensor& cuda_out,
                                          const at::Tensor& torch_out) {
  const int64_t tq = in.q.size(0), topk = in.topk;
  if (cuda_out.sizes() != torch_out.sizes() || cuda_out.scalar_type() != at::kInt ||
      !cuda_out.is_cuda()) {
    return ::testing::AssertionFailure()
           << "cuda output " << cuda_out.sizes() << " " << cuda_out.scalar_type() << " on "
           << cuda_out.device() << ", torch " << torch_out.sizes();
  }
  const at::Tensor a = cuda_out.select(1, 0); // [Tq, topk]
  const at::Tensor b = torch_out.select(1, 0);
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(kCuda);
  const at::Tensor lo = at::tensor(in.lo, at::kLong).to(kCuda).unsqueeze(1);
  const at::Tensor hi = at::tensor(in.hi, at::kLong).to(kCuda).unsqueeze(1);
  const at::Tensor expected_count = at::clamp_max(hi - lo, topk).squeeze(1);

  const at::Tensor valid = a >= 0;
  const at::Tensor bad_value = (a < -1).any(1);
  const at::Tensor bad_count = valid.sum(1) != expected_count;
  const at::Tensor torch_count = (b >= 0).sum(1) != expected_count;
  const at::Tensor invisible = (valid & ((a < lo) | (a >= hi))).any(1);
  const at::Tensor sorted = std::get<0>(a.to(at::kLong).sort(1));
  const at::Tensor twice = topk > 1
                               ? ((sorted.narrow(1, 1, topk - 1) == sorted.narrow(1, 0, topk - 1)) &
                                  (sorted.narrow(1, 1, topk - 1) >= 0))
                                     .any(1)
                               : at::zeros({tq}, long_opts.dtype(at::kBool));

  const at::Tensor sa = std::get<0>(picked_scores(in, a).sort(1, /*descending=*/true));
  const at::Tensor sb = std::get<0>(picked_scores(in, b).sort(1, /*descending=*/true));
  // Either side sums H_I * D_I float32 products in its own order: allow a few float32 steps of
  // the largest score of the row (and 1e-6 for rows whose scores are all near zero).
  const at::Tensor finite = sa.isfinite() & sb.isfinite();
  const at::Tensor scale = at::where(finite, at::maximum(sa.abs(), sb.abs()), at::zeros_like(sa))
                               .amax(1, /*keepdim=*/true);
  const at::Tensor diff = at::where(finite, (sa - sb).abs(), at::zeros_like(sa));
  const at::Tensor differs =
      (diff > 5e-5 * scale + 1e-6).any(1) | (sa.isfinite() != sb.isfinite()).any(1);

  const at::Tensor bad = bad_value | bad_count | torch_count | invisible | twice | differs;
  const int64_t bad_rows = bad.sum().item<int64_t>();
  if (bad_rows == 0) return ::testing::AssertionSuccess();
  std::ostringstream msg;
  msg << bad_rows << " of " << tq << " rows differ";
  const at::Tensor rows = bad.nonzero().flatten().cpu();
  for (int64_t i = 0; i < std::min<int64_t>(3, rows.numel()); ++i) {
    const int64_t r = rows[i].item<int64_t>();
    msg << "\n  row " << r << " (window [" << in.lo[r] << ", " << in.hi[r] << "), expected "
        << expected_count[r].item<int64_t>() << " keys): cuda picks "
        << valid[r].sum().item<int64_t>() << ", torch " << (b[r] >= 0).sum().item<int64_t>();
    if (bad_value[r].item<bool>()) msg << "; values below -1";
    if (invisible[r].item<bool>()) msg << "; picks keys outside the window";
    if (twice[r].item<bool>()) msg << "; picks a key twice";
    if (differs[r].item<bool>()) {
      const int64_t j = diff[r].argmax().item<int64_t>();
      msg << "; sorted scores differ most at rank " << j << ": cuda " << sa[r][j].item<double>()
          << " vs torch " << sb[r][j].item<double>() << " (row scale " << scale[r][0].item<double>()
          << ")";
    }
    msg << "\n    cuda keys " << first_keys(a[r]) << "\n    torch keys " << first_keys(b[r]);
  }
  return ::testing::AssertionFailure() << msg.str();
}

class CudaIndexerTopkTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (const std::string why = test::cuda_backend_unavailable(); !why.empty()) {
      GTEST_SKIP() << why;
    }
    load_plugins_once();
  }
};

std::vector<int64_t> range(int64_t begin, int64_t end, int64_t step = 1) {
  std::vector<int64_t> out;
  for (int64_t i = begin; i < end; i += step) out.push_back(i);
  return out;
}

const Case kCases[] = {
    // Fixture-like: H_I 8, D_I 16/32, topk 8-12, T ~ 20-40.
    {"FixtureTinyOneDocument", 8, 16, 8, {37}},
    {"FixtureTinyVarlen", 8, 32, 12, {20, 1, 13, 0, 7}},
    {"TopkOne", 8, 16, 1, {70}},
    // Off every tile: H_I 5 (padded to 8), D_I 24 and 40 (padded to 32, 64), T past 64-key blocks.
    {"OddHeadsAndDim", 5, 24, 10, {131}},
    {"TwelveHeadsDim40Varlen", 12, 40, 33, {100, 77, 1, 65}},
    // H_I 20 (padded to 32: 8 selection warps), D_I 72 (padded to 128).
    {"TwentyHeadsDim72Varlen", 20, 72, 96, {700, 300}},
    {"RaggedVarlenGlmWidth", 32, 128, 64, {300, 17, 129, 1, 450, 64, 65, 0, 3}},
    {"TopkBeyondEveryDocument", 8, 32, 100, {50, 99, 3}},
    {"TopkBeyondSomeDocuments", 16, 64, 40, {39, 40, 41, 200, 7}},
    // Context parallelism: documents padded to slots, a shard of rows including padding
    // positions (which select nothing), and unsorted positions across documents.
    {"CpShardWithPadding", 8, 32, 16, {50, 30, 70}, {64, 32, 96}, range(40, 150)},
    {"CpUnsortedPositions",
     32,
     128,
     24,
     {50, 30, 70},
     {64, 32, 96},
     {150, 3, 77, 64, 95, 191, 60, 96, 33, 120, 0, 165}},
    // Decode: a single row, and a few rows far apart in one long document.
    {"DecodeOneRow", 32, 128, 2048, {3000}, {}, {2999}},
    {"DecodeFewRowsH64", 64, 128, 256, {3000}, {}, {100, 2500, 2999, 256, 257}},
    // Exact ties: zero keys (score 0) with positive weights, one key repeated, five repeated.
    {"HalfTheKeysScoreZero", 8, 32, 20, {150, 90}, {}, {}, Keys::kHalfZero, true},
    {"EveryKeyScoresTheSame", 8, 32, 20, {150}, {}, {}, Keys::kIdentical},
    {"LongRunsOfEqualScores", 32, 128, 300, {1000}, {}, {}, Keys::kFewDistinct},
    {"ZerosWithGlmTopk", 32, 128, 2048, {4000}, {}, {}, Keys::kHalfZero, true},
    // Near ties (scores a few float32 steps apart) where the kernel's buffer compacts.
    {"NearTiesH32", 32, 128, 256, {1400}, {}, range(256, 1400, 9), Keys::kNearTies},
    {"NearTiesH64", 64, 128, 300, {1500}, {}, range(300, 1500, 17), Keys::kNearTies},
    {"NearTiesGlm5H64T8192", 64, 128, 2048, {8192}, {}, range(2048, 8192, 7), Keys::kNearTies},
    // The kernel's size limits: 256 (padded) heads, D_I 256, large topk.
    {"Heads200Dim256", 200, 256, 300, {700}},
    {"Heads128Dim64", 128, 64, 128, {500, 300}},
    {"Topk4096", 32, 128, 4096, {6000}},
    // GLM-5 shapes at 4K tokens: one document, and a ragged batch.
    {"Glm5H32T4096", 32, 128, 2048, {4096}},
    {"Glm5H64T4096", 64, 128, 2048, {4096}},
    {"Glm5H32RaggedVarlen", 32, 128, 2048, {2500, 700, 3001, 1000, 5}},
    // Windows of 2 topk keys and more, which the cuda kernel samples to start its threshold; and
    // decode rows whose sample sees only one high-scoring key row (a second pass).
    {"SampledThresholdH32", 32, 128, 512, {8192}, {}, range(4000, 8192, 37)},
    {"SampledThresholdH64", 64, 128, 512, {8192}, {}, range(4000, 8192, 61)},
    {"Glm5H32T8192", 32, 128, 2048, {8192}},
    {"SampleMisledDecodeRow", 8, 32, 512, {8192}, {}, {8191}, Keys::kStride32High, true},
    {"SampleMisledDecodeRowH64", 64, 128, 1024, {8192}, {}, {8191}, Keys::kStride32High, true},
};

TEST_P(CudaIndexerTopkTest, SelectsWhatTheTorchReferenceSelects) {
  const Case& c = GetParam();
  const Inputs in = make_inputs(c, 80);
  const at::Tensor cuda_out = run(in, kBackend);
  ASSERT_EQ(chosen_backend(), kBackend);
  const at::Tensor torch_out = run(in, "torch");
  EXPECT_TRUE(same_selection(in, cuda_out, torch_out));
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaIndexerTopkTest, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return info.param.name; });

class CudaIndexerTopkBehaviour : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = test::cuda_backend_unavailable(); !why.empty()) {
      GTEST_SKIP() << why;
    }
    load_plugins_once();
  }
};

TEST_F(CudaIndexerTopkBehaviour, Glm5At32KTokensWithoutATokensSquaredBuffer) {
  const Case c{"", 32, 128, 2048, {32768}};
  const Inputs in = make_inputs(c, 81);
  c10::cuda::CUDACachingAllocator::emptyCache();
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  const int64_t before =
      c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[aggregate].current;
  const at::Tensor cuda_out = run(in, kBackend);
  ASSERT_EQ(chosen_backend(), kBackend);
  const int64_t peak =
      c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[aggregate].peak;
  // The output is 256 MiB; a [T, T] float32 score matrix would be 4 GiB.
  EXPECT_LT(peak - before, int64_t{1} << 30)
      << "the call allocated " << (peak - before) << " bytes";
  const at::Tensor torch_out = run(in, "torch");
  EXPECT_TRUE(same_selection(in, cuda_out, torch_out));
}

// Q, K and the head weights as views into wider tensors, as a fused projection leaves them: row
// strides past the rows' widths, Q and K starting 8 and 64 channels in, the weights 1 head in.
// The kernel reads such views in place (their rows stay 16-byte aligned), K's stream tiles by TMA
// with its own row stride at H_I 32, by cp.async at H_I 64 and in the lockstep kernel (H_I 8).
TEST_F(CudaIndexerTopkBehaviour, ViewsIntoWiderTensorsSelectTheSame) {
  const Case cases[] = {{"H32", 32, 128, 512, {4096}},
                        {"H64Varlen", 64, 128, 512, {3000, 1000}},
                        {"H8Lockstep", 8, 32, 64, {700}}};
  // t's values in a view `before` elements into rows `extra` wider (the last dimension).
  auto widen = [](const at::Tensor& t, int64_t before, int64_t extra) {
    std::vector<int64_t> sizes = t.sizes().vec();
    const int64_t width = sizes.back();
    sizes.back() += extra;
    const at::Tensor view = at::zeros(sizes, t.options()).narrow(-1, before, width);
    view.copy_(t);
    return view;
  };
  for (const Case& c : cases) {
    Inputs in = make_inputs(c, 85);
    in.q = widen(in.q, 8, 16);
    in.k = widen(in.k, 64, 128);
    in.w = widen(in.w, 1, 3);
    ASSERT_EQ(in.k.stride(0), c.dim + 128) << c.name;
    const at::Tensor cuda_out = run(in, kBackend);
    ASSERT_EQ(chosen_backend(), kBackend) << c.name;
    EXPECT_TRUE(same_selection(in, cuda_out, run(in, "torch"))) << c.name;
  }
}

TEST_F(CudaIndexerTopkBehaviour, Float32IsNotTakenByTheCudaKernel) {
  const Case c{"", 8, 32, 8, {40}};
  Inputs in = make_inputs(c, 82);
  in.q = in.q.to(at::kFloat);
  in.k = in.k.to(at::kFloat);
  EXPECT_THROW(run(in, kBackend, /*strict=*/true), Error);
  const at::Tensor fallback = run(in, kBackend, /*strict=*/false);
  EXPECT_EQ(chosen_backend(), "torch");
  EXPECT_TRUE(at::equal(fallback, run(in, "torch")));
}

TEST_F(CudaIndexerTopkBehaviour, SizesPastTheKernelLimitsFallBackToTorch) {
  // D_I 264 (> 256), D_I 12 (not a multiple of 8), 300 heads (> 256 padded).
  const Case cases[] = {{"", 4, 264, 8, {40}}, {"", 4, 12, 8, {40}}, {"", 300, 16, 8, {40}}};
  for (const Case& c : cases) {
    const Inputs in = make_inputs(c, 83);
    EXPECT_THROW(run(in, kBackend, /*strict=*/true), Error) << c.heads << " heads, dim " << c.dim;
    const at::Tensor fallback = run(in, kBackend, /*strict=*/false);
    EXPECT_EQ(chosen_backend(), "torch") << c.heads << " heads, dim " << c.dim;
    EXPECT_TRUE(at::equal(fallback, run(in, "torch")));
  }
}

TEST_F(CudaIndexerTopkBehaviour, AutoPicksTheCudaKernelForBf16) {
  const Inputs in = make_inputs({"", 8, 32, 8, {40}}, 84);
  const at::Tensor out = run(in, "auto", /*strict=*/false);
  // A build of the cuda backend ("cuda", or "cuda_variant" where one is built next to it).
  EXPECT_EQ(chosen_backend().rfind("cuda", 0), 0u) << chosen_backend();
  EXPECT_TRUE(same_selection(in, out, run(in, "torch")));
}

} // namespace
} // namespace kiln
