// The SDK side of `adamw`: checks that hold for every backend, then the in-place dispatch.
#include "kiln/sdk/ops/adamw.h"

#include "check.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/names.h"

#include <ATen/MemoryOverlap.h>

#include <cmath>

namespace kiln::ops {
namespace {

// Whether a and b share memory (the update would read what it just wrote). Disjoint views of one
// buffer are fine.
bool overlap(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined() || !b.defined()) return false;
  const at::MemOverlapStatus status = at::get_overlap_status(a, b);
  return status == at::MemOverlapStatus::Full || status == at::MemOverlapStatus::Partial;
}

} // namespace

void adamw(const AdamwArgs& args) {
  const detail::ArgChecker check(AdamwOp::kName, "param", args.param);
  check.dtype_in("param", args.param, detail::kFloatTypes);
  const c10::IntArrayRef shape = args.param.sizes();
  check.required("grad", args.grad);
  check.shape("grad", args.grad, shape, "param's shape");
  check.same_dtype("grad", args.grad, "param", args.param);
  const bool has_master = check.optional("master", args.master);
  check.require(has_master || args.param.scalar_type() == c10::ScalarType::Float,
                "'master' (float32) is required for a {} 'param'; only a float32 parameter can "
                "be its own master",
                dtype_name(args.param.scalar_type()));
  const std::pair<const char*, const at::Tensor*> state[] = {
      {"master", &args.master}, {"exp_avg", &args.exp_avg}, {"exp_avg_sq", &args.exp_avg_sq}};
  for (const auto& [name, t] : state) {
    if (t == &args.master && !has_master) continue;
    check.required(name, *t);
    check.shape(name, *t, shape, "param's shape");
    check.dtype(name, *t, c10::ScalarType::Float, "(AdamW's state is float32)");
  }
  // What the update writes, and the gradient it reads, must not share memory.
  const std::pair<const char*, const at::Tensor*> distinct[] = {{"param", &args.param},
                                                                {"master", &args.master},
                                                                {"exp_avg", &args.exp_avg},
                                                                {"exp_avg_sq", &args.exp_avg_sq},
                                                                {"grad", &args.grad}};
  for (size_t i = 0; i < std::size(distinct); ++i) {
    for (size_t j = i + 1; j < std::size(distinct); ++j) {
      check.require(!overlap(*distinct[i].second, *distinct[j].second),
                    "'{}' and '{}' share memory; each needs its own tensor", distinct[i].first,
                    distinct[j].first);
    }
  }
  check.require(args.step >= 1, "'step' counts updates from 1; found {}", args.step);
  check.require(args.lr >= 0 && std::isfinite(args.lr), "'lr' must be finite and >= 0; found {}",
                args.lr);
  check.require(args.eps >= 0 && std::isfinite(args.eps), "'eps' must be finite and >= 0; found {}",
                args.eps);
  check.require(args.weight_decay >= 0 && std::isfinite(args.weight_decay),
                "'weight_decay' must be finite and >= 0; found {}", args.weight_decay);
  check.require(args.beta1 >= 0 && args.beta1 < 1, "'beta1' must be in [0, 1); found {}",
                args.beta1);
  check.require(args.beta2 >= 0 && args.beta2 < 1, "'beta2' must be in [0, 1); found {}",
                args.beta2);
  check.require(args.grad_scale > 0 && std::isfinite(args.grad_scale),
                "'grad_scale' must be finite and > 0; found {}", args.grad_scale);
  check.require(args.piece_elements >= 1, "'piece_elements' must be >= 1; found {}",
                args.piece_elements);
  sdk::dispatch_in_place<AdamwOp>(args);
}

} // namespace kiln::ops
