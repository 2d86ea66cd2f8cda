// The SDK side of `linear_cross_entropy`: checks that hold for every backend, then dispatch.
#include "kiln/sdk/ops/linear_cross_entropy.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

namespace kiln::ops {

LinearCrossEntropyResult linear_cross_entropy(const LinearCrossEntropyArgs& args) {
  const detail::ArgChecker check(LinearCrossEntropyOp::kName, "hidden", args.hidden);
  check.required("weight", args.weight);
  check.required("labels", args.labels);
  check.rank("hidden", args.hidden, 2, "[T, H]");
  check.rank("weight", args.weight, 2, "[V, H]");
  check.dtype_in("hidden", args.hidden, detail::kFloatTypes);
  check.same_dtype("weight", args.weight, "hidden", args.hidden);
  check.size("weight", args.weight, 1, args.hidden.size(1), "H (from hidden)");
  const int64_t v = args.weight.size(0);
  check.require(v >= 1, "'weight' must be [V, H] with V >= 1; found {}",
                shape_str(args.weight.sizes()));
  check.dtype("labels", args.labels, c10::ScalarType::Long);
  check.shape("labels", args.labels, {args.hidden.size(0)}, "[T] (from hidden)");
  check.values_in("labels", args.labels, 0, v, /*sentinel=*/args.ignore_index);
  check.require(args.chunk_size >= 0, "'chunk_size' must be >= 0 (0 = backend's choice); found {}",
                args.chunk_size);
  return sdk::dispatch<LinearCrossEntropyOp>(args);
}

} // namespace kiln::ops
