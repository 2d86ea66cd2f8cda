// Argument checks shared by the op entry points (private to libkiln-sdk). Every failure is a
// one-line user kiln::Error that names the op and the argument and says expected vs found:
//   attention: 'k' dim 2 (Hkv) must divide q's 8 heads; found k [2, 16, 3, 64]
// Only metadata is inspected (defined, rank, sizes, dtype, device); tensor values are read only
// for small index tensors that already live on the CPU, so a check never synchronizes with a GPU.
#pragma once

#include "kiln/sdk/error.h"

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <fmt/format.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::ops::detail {

/// float32, bfloat16, float16: what activations of every op may be.
inline constexpr std::initializer_list<c10::ScalarType> kFloatTypes = {
    c10::ScalarType::Float, c10::ScalarType::BFloat16, c10::ScalarType::Half};

/// The checks of one op call. `ref` is the tensor that decides dispatch; every other tensor must
/// be on its device.
class ArgChecker {
 public:
  ArgChecker(std::string_view op, std::string_view ref_name, const at::Tensor& ref);

  /// Throws "<op>: <message>".
  template <class... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) const {
    throw_error(fmt::format(format, std::forward<Args>(args)...));
  }
  /// Throws "<op>: <message>" unless `cond`.
  template <class... Args>
  void require(bool cond, fmt::format_string<Args...> format, Args&&... args) const {
    if (!cond) throw_error(fmt::format(format, std::forward<Args>(args)...));
  }

  /// `t` must be defined and on the reference device.
  void required(std::string_view name, const at::Tensor& t) const;
  /// Returns whether `t` is given (defined); if so it must be on the reference device.
  bool optional(std::string_view name, const at::Tensor& t) const;

  /// `t` must have `dims` dimensions; `layout` is the expected shape in symbols, e.g. "[T, H, D]".
  void rank(std::string_view name, const at::Tensor& t, int64_t dims,
            std::string_view layout) const;
  /// t.size(dim) must equal `expected`; `what` names the size and where it comes from,
  /// e.g. "H (from q)".
  void size(std::string_view name, const at::Tensor& t, int64_t dim, int64_t expected,
            std::string_view what) const;
  /// `t` must have exactly the sizes `expected` (written in symbols as `layout`).
  void shape(std::string_view name, const at::Tensor& t, c10::IntArrayRef expected,
             std::string_view layout) const;

  /// t's dtype must be one of `allowed`.
  void dtype_in(std::string_view name, const at::Tensor& t,
                std::initializer_list<c10::ScalarType> allowed) const;
  /// t's dtype must be `expected`; `why` is appended when not empty.
  void dtype(std::string_view name, const at::Tensor& t, c10::ScalarType expected,
             std::string_view why = {}) const;
  /// t's dtype must equal other's.
  void same_dtype(std::string_view name, const at::Tensor& t, std::string_view other_name,
                  const at::Tensor& other) const;

  /// Every value of the integer tensor `t` must be in [lo, hi) or equal `sentinel` (when given).
  /// Checked only when `t` lives on the CPU (reading accelerator memory would sync).
  void values_in(std::string_view name, const at::Tensor& t, int64_t lo, int64_t hi,
                 std::optional<int64_t> sentinel = std::nullopt) const;

  /// A cumulative sequence-length tensor: int32 [N + 1] with N >= 1 on the reference device. When
  /// it lives on the CPU its values are also checked: starts at 0, non-decreasing, and ends at
  /// `total` (or at most `total` when `total_is_bound`). Returns N.
  int64_t cu_seqlens(std::string_view name, const at::Tensor& t, int64_t total,
                     bool total_is_bound = false) const;

  /// Every sequence length described by the cu_seqlens tensor `cu` must be <= `bound` (named
  /// `bound_name`). Checked only when `cu` lives on the CPU.
  void seqlen_bound(std::string_view cu_name, const at::Tensor& cu, std::string_view bound_name,
                    int64_t bound) const;

  std::string_view op() const { return op_; }

 private:
  [[noreturn]] void throw_error(const std::string& message) const;

  std::string_view op_;
  std::string_view ref_name_;
  const at::Tensor& ref_;
};

/// "float32, bfloat16, float16".
std::string dtype_list(std::initializer_list<c10::ScalarType> types);

} // namespace kiln::ops::detail
