// Kernels: one backend's implementation of one op on one device type.
//
// An op is described by a traits struct owned by the SDK (kiln/sdk/ops/*.h):
//   struct RmsNormOp { static constexpr const char* kName = "rms_norm";
//                      using Args = RmsNormArgs; using Result = at::Tensor; };
// where Args has `c10::Device device() const` and `c10::ScalarType dtype() const` naming the
// tensor that decides dispatch. A backend registers a Kernel<Op>; the registry stores it type
// erased as a KernelRecord, and kiln::sdk::dispatch<Op> recovers the typed function.
#pragma once

#include "kiln/sdk/export.h"

#include <c10/core/DeviceType.h>

#include <functional>
#include <memory>
#include <string>

namespace kiln::sdk {

/// What identifies a kernel and orders it. Plain data, copied freely.
struct KernelInfo {
  std::string op;      ///< op name, e.g. "rms_norm" (an Op::kName)
  std::string backend; ///< backend name, e.g. "torch", "cuda"
  c10::DeviceType device = c10::DeviceType::CPU;
  int priority = 0;          ///< higher runs first under the default `auto` policy
  std::string version = "1"; ///< the kernel's own version: part of autotuning cache keys
  std::string plugin;        ///< set by the host: the plugin that registered it
};

/// A typed kernel as a backend writes it. `run` must not be empty. `supports` decides, per call,
/// whether this kernel can handle the arguments (shapes, dtypes, strides); empty means "always".
/// Both are copied into the registry and called from any thread for the process lifetime, so they
/// must not capture references to short-lived objects.
template <class Op>
struct Kernel {
  std::string backend;
  c10::DeviceType device = c10::DeviceType::CPU;
  int priority = 0;
  std::string version = "1";
  std::function<typename Op::Result(const typename Op::Args&)> run;
  std::function<bool(const typename Op::Args&)> supports;
};

/// A registered kernel, type erased. Owned by the registry (Dispatcher); callers hold const
/// pointers that stay valid for the process lifetime.
struct KernelRecord {
  KernelInfo info;
  std::shared_ptr<const void> impl;                        ///< a Kernel<Op> for info.op
  bool (*supports)(const void* impl, const void* args);    ///< typed `supports` behind void*
  void (*run_discard)(const void* impl, const void* args); ///< runs and drops the result (timing)
};

namespace detail {

template <class Op>
bool erased_supports(const void* impl, const void* args) {
  const auto& k = *static_cast<const Kernel<Op>*>(impl);
  return !k.supports || k.supports(*static_cast<const typename Op::Args*>(args));
}

template <class Op>
void erased_run_discard(const void* impl, const void* args) {
  const auto& k = *static_cast<const Kernel<Op>*>(impl);
  (void)k.run(*static_cast<const typename Op::Args*>(args));
}

} // namespace detail

/// Wraps a typed kernel into a record (the plugin name is filled in by the host).
template <class Op>
KernelRecord make_kernel_record(Kernel<Op> kernel) {
  KernelRecord record;
  record.info.op = Op::kName;
  record.info.backend = kernel.backend;
  record.info.device = kernel.device;
  record.info.priority = kernel.priority;
  record.info.version = kernel.version;
  record.impl = std::make_shared<const Kernel<Op>>(std::move(kernel));
  record.supports = &detail::erased_supports<Op>;
  record.run_discard = &detail::erased_run_discard<Op>;
  return record;
}

/// The typed run function of a record (the caller guarantees that record.info.op == Op::kName).
template <class Op>
const Kernel<Op>& kernel_of(const KernelRecord& record) {
  return *static_cast<const Kernel<Op>*>(record.impl.get());
}

} // namespace kiln::sdk
