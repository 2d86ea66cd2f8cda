#include "check.h"

#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/Device.h>

namespace kiln::ops::detail {

std::string dtype_list(std::initializer_list<c10::ScalarType> types) {
  std::string out;
  for (auto t : types) out += (out.empty() ? "" : ", ") + dtype_name(t);
  return out;
}

ArgChecker::ArgChecker(std::string_view op, std::string_view ref_name, const at::Tensor& ref)
    : op_(op), ref_name_(ref_name), ref_(ref) {
  require(ref.defined(), "'{}' is required but undefined", ref_name);
}

void ArgChecker::throw_error(const std::string& message) const {
  user_error("{}: {}", op_, message);
}

void ArgChecker::required(std::string_view name, const at::Tensor& t) const {
  require(t.defined(), "'{}' is required but undefined", name);
  (void)optional(name, t);
}

bool ArgChecker::optional(std::string_view name, const at::Tensor& t) const {
  if (!t.defined()) return false;
  require(t.device() == ref_.device(),
          "'{}' is on {} but '{}' is on {}; all tensors of one call must be on one device", name,
          t.device().str(), ref_name_, ref_.device().str());
  return true;
}

void ArgChecker::rank(std::string_view name, const at::Tensor& t, int64_t dims,
                      std::string_view layout) const {
  require(t.dim() == dims, "'{}' must have {} dims, {}; found {}", name, dims, layout,
          shape_str(t.sizes()));
}

void ArgChecker::size(std::string_view name, const at::Tensor& t, int64_t dim, int64_t expected,
                      std::string_view what) const {
  require(t.size(dim) == expected, "'{}' dim {} must be {} = {}; found {}", name,
          dim < 0 ? dim + t.dim() : dim, what, expected, shape_str(t.sizes()));
}

void ArgChecker::shape(std::string_view name, const at::Tensor& t, c10::IntArrayRef expected,
                       std::string_view layout) const {
  require(t.sizes() == expected, "'{}' must be {} = {}; found {}", name, layout,
          shape_str(expected), shape_str(t.sizes()));
}

void ArgChecker::dtype_in(std::string_view name, const at::Tensor& t,
                          std::initializer_list<c10::ScalarType> allowed) const {
  for (auto type : allowed) {
    if (t.scalar_type() == type) return;
  }
  fail("'{}' dtype must be one of {}; found {}", name, dtype_list(allowed),
       dtype_name(t.scalar_type()));
}

void ArgChecker::dtype(std::string_view name, const at::Tensor& t, c10::ScalarType expected,
                       std::string_view why) const {
  require(t.scalar_type() == expected, "'{}' dtype must be {}{}{}; found {}", name,
          dtype_name(expected), why.empty() ? "" : " ", why, dtype_name(t.scalar_type()));
}

void ArgChecker::same_dtype(std::string_view name, const at::Tensor& t, std::string_view other_name,
                            const at::Tensor& other) const {
  require(t.scalar_type() == other.scalar_type(), "'{}' dtype must be {} ('{}' dtype); found {}",
          name, dtype_name(other.scalar_type()), other_name, dtype_name(t.scalar_type()));
}

void ArgChecker::values_in(std::string_view name, const at::Tensor& t, int64_t lo, int64_t hi,
                           std::optional<int64_t> sentinel) const {
  if (!t.device().is_cpu() || t.numel() == 0) return;
  at::Tensor bad = at::logical_or(t < lo, t >= hi);
  if (sentinel) bad = at::logical_and(bad, t != *sentinel);
  if (!bad.any().item<bool>()) return;
  const int64_t value = t.masked_select(bad).select(0, 0).item<int64_t>();
  if (sentinel) {
    fail("'{}' values must be in [{}, {}) or {}; found {}", name, lo, hi, *sentinel, value);
  }
  fail("'{}' values must be in [{}, {}); found {}", name, lo, hi, value);
}

int64_t ArgChecker::cu_seqlens(std::string_view name, const at::Tensor& t, int64_t total,
                               bool total_is_bound) const {
  required(name, t);
  dtype(name, t, c10::ScalarType::Int);
  require(t.dim() == 1 && t.size(0) >= 2, "'{}' must be [N + 1] with N >= 1 sequences; found {}",
          name, shape_str(t.sizes()));
  if (t.device().is_cpu()) { // free to inspect; on an accelerator it would cost a sync
    const auto v = t.accessor<int32_t, 1>();
    require(v[0] == 0, "'{}' must start at 0; found {}", name, v[0]);
    for (int64_t i = 1; i < v.size(0); ++i) {
      require(v[i] >= v[i - 1], "'{}' must be non-decreasing; found {} then {} at index {}", name,
              v[i - 1], v[i], i);
    }
    const int64_t last = v[v.size(0) - 1];
    if (total_is_bound) {
      require(last <= total, "'{}' must end at most at {} tokens; found {}", name, total, last);
    } else {
      require(last == total, "'{}' must end at the token count {}; found {}", name, total, last);
    }
  }
  return t.size(0) - 1;
}

void ArgChecker::seqlen_bound(std::string_view cu_name, const at::Tensor& cu,
                              std::string_view bound_name, int64_t bound) const {
  if (!cu.device().is_cpu()) return;
  const auto v = cu.accessor<int32_t, 1>();
  for (int64_t i = 1; i < v.size(0); ++i) {
    require(v[i] - v[i - 1] <= bound,
            "'{}' = {} must bound every sequence length; '{}' has one of {} (index {})", bound_name,
            bound, cu_name, v[i] - v[i - 1], i - 1);
  }
}

} // namespace kiln::ops::detail
