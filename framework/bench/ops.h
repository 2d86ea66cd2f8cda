// The ops `kiln bench op` knows how to feed: for each, the shape keys (with GLM-5 defaults), a
// seeded generator of valid random inputs, the call through kiln::ops (so the dispatcher picks the
// kernel), and the FLOP count by shared/perf.md's conventions.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::bench {

/// A resolved shape: every key of the op, from --shape or the op's default. Ordered as the op
/// declares its keys (for printing), looked up by name.
class Shape {
 public:
  void set(std::string key, int64_t value);
  int64_t at(std::string_view key) const; ///< throws kiln::Error (internal) for a missing key
  bool contains(std::string_view key) const;
  /// "T=16384,H=64,topk=2048" in declaration order.
  std::string str() const;
  const std::vector<std::pair<std::string, int64_t>>& entries() const { return entries_; }

 private:
  std::vector<std::pair<std::string, int64_t>> entries_;
};

/// "T=16384,H=64,topk=2048" -> key/value pairs in order. Throws a user kiln::Error naming
/// --shape on bad syntax ("T=abc", "T", "=3", duplicates, values < 1).
std::vector<std::pair<std::string, int64_t>> parse_shape(std::string_view text);

/// One op call's inputs. `tensors` are passed to OpSpec::run in the op's order; the indices in
/// `differentiable` are the floating inputs gradients are taken for with --backward.
struct OpInputs {
  std::vector<at::Tensor> tensors;
  std::vector<size_t> differentiable;
};

/// How to benchmark one op.
struct OpSpec {
  std::string_view name;                                  ///< kiln::ops name, e.g. "sparse_mla"
  std::vector<std::pair<std::string_view, int64_t>> keys; ///< shape keys and their defaults
  std::string_view flops_rule;                            ///< the formula, for the output
  std::string_view backward_flops_rule;                   ///< "" when not differentiable
  bool integer_output = false;                            ///< compare selected sets, not values
  /// The op updates its inputs (adamw): the timed runs keep updating the same tensors, and the
  /// correctness check gives the reference a copy of the inputs taken before the backend's run.
  bool in_place = false;
  /// Fresh random inputs from the default generators (the caller seeds them), `dtype` for the
  /// floating tensors the op takes in its compute dtype, on `device`.
  OpInputs (*make_inputs)(const Shape& shape, c10::ScalarType dtype, c10::Device device);
  /// Calls the op through kiln::ops (the dispatcher chooses the kernel).
  at::Tensor (*run)(const Shape& shape, const std::vector<at::Tensor>& tensors);
  double (*forward_flops)(const Shape& shape);
  double (*backward_flops)(const Shape& shape); ///< nullptr when not differentiable
  /// integer_output only: float32 scores [R, K] of `keys` (int64 [R, K], -1 allowed) for query
  /// rows `rows` (int64 [R]) from float32 `tensors`, to tell near-ties from wrong selections.
  at::Tensor (*score)(const std::vector<at::Tensor>& tensors, const at::Tensor& rows,
                      const at::Tensor& keys) = nullptr;
};

/// Every op with an input generator, in a fixed order.
std::span<const OpSpec> op_specs();

/// The spec of `op`. Throws a one-line user kiln::Error for an op without a generator (naming the
/// supported ones) or an unknown op (naming kiln's ops).
const OpSpec& find_op(std::string_view op);

/// The op's shape: its defaults overridden by `given`. Throws a user kiln::Error for a key the op
/// does not have, naming its keys, or for values the op cannot take (e.g. topk > Tk is fine, but
/// Hq % Hkv != 0 is not).
Shape resolve_shape(const OpSpec& spec, std::span<const std::pair<std::string, int64_t>> given);

// FLOP formulas (shared/perf.md §FLOP conventions), exposed for tests.
/// sparse MLA fwd = 2·H·(d_qk + d_v)·topk·T with d_qk = L + R and d_v = L (the latent value width;
/// the w_vc projection is not counted, as FlashMLA); masked slots counted.
double sparse_mla_forward_flops(int64_t T, int64_t H, int64_t topk, int64_t L, int64_t R);
/// sparse MLA bwd = 2·H·topk·T·(2·d_v + 3·d_qk).
double sparse_mla_backward_flops(int64_t T, int64_t H, int64_t topk, int64_t L, int64_t R);
/// indexer = 2·(valid causal q,k pairs)·H_I·D_I for one document of T tokens (T(T+1)/2 pairs).
double indexer_flops(int64_t T, int64_t H_I, int64_t D_I);
/// causal attention fwd = 2·B·Hq·pairs·(D + Dv), pairs = the visible (query, key) pairs of the
/// bottom-right-aligned causal mask (S(S+1)/2 when Sq = Sk = S); bwd = 2.5 x fwd (FlashAttention).
double attention_forward_flops(int64_t B, int64_t Sq, int64_t Sk, int64_t Hq, int64_t D,
                               int64_t Dv);
/// MoE = 2·tokens·k·H·I·3 (SwiGLU) or ·2 (relu2); bwd = 2 x fwd (dX and dW GEMMs).
double moe_experts_flops(int64_t tokens, int64_t k, int64_t H, int64_t I, bool swiglu);

} // namespace kiln::bench
