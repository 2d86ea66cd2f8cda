// The SDK side of `causal_conv1d`: checks that hold for every backend, then dispatch.
#include "kiln/sdk/ops/causal_conv1d.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

namespace kiln::ops {

CausalConv1dResult causal_conv1d(const CausalConv1dArgs& args) {
  const detail::ArgChecker check(CausalConv1dOp::kName, "x", args.x);
  const at::Tensor& x = args.x;
  check.required("weight", args.weight);
  check.dtype_in("x", x, detail::kFloatTypes);
  check.rank("weight", args.weight, 2, "[C, K] (HF conv1d.weight.squeeze(1))");
  check.dtype_in("weight", args.weight, detail::kFloatTypes);
  const int64_t k = args.weight.size(1);
  check.require(k >= 2, "'weight' must be [C, K] with kernel width K >= 2; found {}",
                shape_str(args.weight.sizes()));

  int64_t batch = 0; // sequences: B, or N in THD
  if (args.mode == CausalConv1dMode::kStep) {
    check.rank("x", x, 2, "[B, C] (kStep: one token per sequence)");
    check.require(!args.cu_seqlens.defined(),
                  "'cu_seqlens' is for kSequence THD inputs; kStep takes one token per sequence");
    check.require(args.initial_state.defined(),
                  "'initial_state' (the conv state [B, C, K-1]) is required in kStep mode");
    batch = x.size(0);
  } else if (check.optional("cu_seqlens", args.cu_seqlens)) {
    check.rank("x", x, 2, "[T, C] (THD, with cu_seqlens)");
    batch = check.cu_seqlens("cu_seqlens", args.cu_seqlens, x.size(0));
  } else {
    check.rank("x", x, 3, "[B, L, C] (THD takes [T, C] with cu_seqlens)");
    batch = x.size(0);
  }
  const int64_t c = x.size(-1);
  check.size("weight", args.weight, 0, c, "C (from x)");
  if (check.optional("bias", args.bias)) {
    check.dtype_in("bias", args.bias, detail::kFloatTypes);
    check.shape("bias", args.bias, {c}, "[C] (from x)");
  }
  if (check.optional("initial_state", args.initial_state)) {
    check.same_dtype("initial_state", args.initial_state, "x", x);
    check.shape("initial_state", args.initial_state, {batch, c, k - 1},
                "[B|N, C, K-1] (from x and weight)");
  }
  if (args.mode == CausalConv1dMode::kStep && !args.return_final_state) {
    CausalConv1dArgs step = args;
    step.return_final_state = true; // the updated state is the point of a step
    return sdk::dispatch<CausalConv1dOp>(step);
  }
  return sdk::dispatch<CausalConv1dOp>(args);
}

CausalConv1dResult causal_conv1d_update(const at::Tensor& x, const at::Tensor& conv_state,
                                        const at::Tensor& weight, const at::Tensor& bias,
                                        ConvActivation activation) {
  return causal_conv1d(CausalConv1dArgs{.x = x,
                                        .weight = weight,
                                        .bias = bias,
                                        .activation = activation,
                                        .mode = CausalConv1dMode::kStep,
                                        .initial_state = conv_state,
                                        .return_final_state = true});
}

} // namespace kiln::ops
