// The SDK side of `mamba2_scan`: checks that hold for every backend, then dispatch.
#include "kiln/sdk/ops/mamba2_scan.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

#include <cmath>

namespace kiln::ops {

Mamba2ScanResult mamba2_scan(const Mamba2ScanArgs& args) {
  const detail::ArgChecker check(Mamba2ScanOp::kName, "x", args.x);
  const at::Tensor& x = args.x;
  check.required("dt", args.dt);
  check.required("A", args.A);
  check.required("B", args.B);
  check.required("C", args.C);
  check.dtype_in("x", x, detail::kFloatTypes);
  check.dtype_in("dt", args.dt, detail::kFloatTypes);
  check.dtype("A", args.A, c10::ScalarType::Float, "(A = -exp(A_log.float()))");
  check.same_dtype("B", args.B, "x", x);
  check.same_dtype("C", args.C, "x", x);

  const bool thd = check.optional("cu_seqlens", args.cu_seqlens);
  int64_t batch = 0; // sequences: B, or num_seqs in THD
  if (thd) {
    check.rank("x", x, 3, "[T, H, P] (THD, with cu_seqlens)");
    check.rank("dt", args.dt, 2, "[T, H]");
    check.rank("B", args.B, 3, "[T, G, N]");
    batch = check.cu_seqlens("cu_seqlens", args.cu_seqlens, x.size(0));
  } else {
    check.rank("x", x, 4, "[B, L, H, P] (THD takes [T, H, P] with cu_seqlens)");
    check.rank("dt", args.dt, 3, "[B, L, H]");
    check.rank("B", args.B, 4, "[B, L, G, N]");
    batch = x.size(0);
  }
  const int64_t h = x.size(-2);
  const int64_t p = x.size(-1);
  check.shape("dt", args.dt, x.sizes().slice(0, x.dim() - 1), "x's shape without P");
  for (int64_t d = 0; d < x.dim() - 2; ++d) {
    check.size("B", args.B, d, x.size(d),
               thd      ? "T (from x)"
               : d == 0 ? "B (from x)"
                        : "L (from x)");
  }
  const int64_t g = args.B.size(-2);
  const int64_t n = args.B.size(-1);
  check.require(g >= 1 && h % g == 0, "'B' dim {} (G) must divide the H = {} heads; found {}",
                args.B.dim() - 2, h, shape_str(args.B.sizes()));
  check.shape("C", args.C, args.B.sizes(), "B's shape");
  check.shape("A", args.A, {h}, "[H] (from x)");
  if (check.optional("D", args.D)) {
    check.dtype_in("D", args.D, detail::kFloatTypes);
    check.shape("D", args.D, {h}, "[H] (from x)");
  }
  if (check.optional("dt_bias", args.dt_bias)) {
    check.dtype_in("dt_bias", args.dt_bias, detail::kFloatTypes);
    check.shape("dt_bias", args.dt_bias, {h}, "[H] (from x)");
  }
  check.require(!std::isnan(args.dt_min) && !std::isnan(args.dt_max) && args.dt_min <= args.dt_max,
                "'dt_min' must be <= 'dt_max'; found {} and {}", args.dt_min, args.dt_max);
  check.require(args.chunk_size >= 1, "'chunk_size' must be >= 1; found {}", args.chunk_size);
  if (check.optional("initial_states", args.initial_states)) {
    check.dtype("initial_states", args.initial_states, c10::ScalarType::Float);
    check.shape(
        "initial_states", args.initial_states, {batch, h, p, n},
        thd ? "[num_seqs, H, P, N] (from cu_seqlens, x and B)" : "[B, H, P, N] (from x and B)");
  }
  return sdk::dispatch<Mamba2ScanOp>(args);
}

} // namespace kiln::ops
