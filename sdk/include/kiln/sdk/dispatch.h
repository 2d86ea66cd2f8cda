// The op dispatcher: the table of registered kernels and policies, and the code that decides
// which kernel runs an op call.
//
// Resolution, per (op, device type, dtype), from DispatchConfig:
//   1. `ops[op]` if set, else `default_backend`, names either a backend or a policy;
//   2. a backend: its kernel for the device, if registered and `supports(args)`; otherwise, unless
//      `strict`, the `auto` policy picks among the rest (a warning is logged once per key);
//   3. a policy (`auto` or a plugin's): it chooses among the eligible kernels (and may say how,
//      through note_selection).
// `strict = true` turns "the requested backend has no (eligible) kernel" into a kiln::Error.
// Every resolution is recorded (resolved()) so a run can log and save what actually ran.
#pragma once

#include "kiln/sdk/export.h"
#include "kiln/sdk/kernel.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::sdk {

/// Backend selection, usually from a recipe's [backend] section.
struct DispatchConfig {
  std::string default_backend = "auto";                ///< a backend or a policy name
  std::map<std::string, std::string, std::less<>> ops; ///< per-op override: op -> backend/policy
  bool strict = false;                                 ///< no fallback: missing kernel = error
};

/// One pending op call, as a policy sees it. Valid only during Policy::select.
struct OpCall {
  std::string_view op;
  c10::DeviceType device = c10::DeviceType::CPU;
  c10::ScalarType dtype = c10::ScalarType::Float;
  const void* args = nullptr; ///< the op's Args; use through supports()/run() below

  /// Whether `kernel` accepts these arguments.
  bool supports(const KernelRecord& kernel) const {
    return kernel.supports(kernel.impl.get(), args);
  }
  /// Runs `kernel` on these arguments and discards the result (for timing).
  void run(const KernelRecord& kernel) const { kernel.run_discard(kernel.impl.get(), args); }
};

/// A kernel selection policy (the built-in `auto` is one; plugins may add more).
/// Registered through Registrar::add_policy; the registry shares ownership for the process
/// lifetime. select() may be called concurrently and must be thread-safe.
class KILN_SDK_API Policy {
 public:
  virtual ~Policy();
  /// Permanent registry name, e.g. "auto".
  virtual std::string name() const = 0;
  /// Picks the kernel for `call` among `candidates` (all kernels registered for the op and
  /// device, in descending priority; not yet filtered by supports()). Returns nullptr when none
  /// fits. The returned pointer must be one of `candidates`.
  virtual const KernelRecord* select(const OpCall& call,
                                     std::span<const KernelRecord* const> candidates) = 0;
};

/// Attaches `note` to the dispatcher's record (Resolution::note) of the selection running on
/// this thread: call it from Policy::select, e.g. "sparse_mla T=16384,...: measured cuda 1.21 ms,
/// torch 35.2 ms -> cuda". The dispatcher collects the notes after select returns and keeps each
/// distinct note once per resolution, so a policy may repeat the note of a cached decision on
/// every call. A kernel's `supports` may call it too, to say why it declines a call (e.g. "cuda:
/// its kernels are sm_90a code; cuda:0 is ..."): a forced backend's fallback warning and the
/// resolution then name the reason. Outside a selection it is ignored.
KILN_SDK_API void note_selection(std::string note);

/// How one (op, device, dtype) was resolved.
struct Resolution {
  std::string op;
  c10::DeviceType device;
  c10::ScalarType dtype;
  std::string requested; ///< backend or policy asked for
  std::string chosen;    ///< backend whose kernel ran
  std::string note;      ///< why: a fallback, and the policies' notes (note_selection), "; "-joined
};

/// The process-wide kernel and policy registry, and the dispatcher over it. The host fills it
/// while loading plugins; model code reaches it only through kiln::ops::*.
class KILN_SDK_API Dispatcher {
 public:
  /// The one instance; lives for the process lifetime.
  static Dispatcher& global();

  /// Adds a kernel. Throws kiln::Error if (op, backend, device) is already registered (naming the
  /// plugin that registered it first) or the record is malformed.
  void add_kernel(KernelRecord record);
  /// Adds a policy. Throws kiln::Error on a duplicate name or one that clashes with a backend.
  void add_policy(std::shared_ptr<Policy> policy);
  /// Checks that add_kernel would accept `info` (no duplicate), without adding it.
  void check_new_kernel(const KernelInfo& info) const;
  /// Checks that add_policy would accept a policy of this name.
  void check_new_policy(std::string_view name) const;

  /// Replaces the selection config and forgets earlier resolutions. Unknown backend or policy
  /// names are a kiln::Error (user error) listing what is registered.
  void configure(DispatchConfig config);
  DispatchConfig config() const;

  /// Picks the kernel for a call (see the file comment). Throws kiln::Error when nothing can run.
  const KernelRecord& select(const OpCall& call);
  /// select() for a call that writes into its arguments (an in-place op such as `adamw`): no
  /// policy is consulted, since one may run the kernels to time them. Where a policy is requested
  /// (or a requested backend's kernel declines and `strict` is off), the highest-priority kernel
  /// whose supports() holds runs, and the resolution's note says so. (ABI 1.3)
  const KernelRecord& select_in_place(const OpCall& call);

  std::vector<KernelInfo> kernels() const;   ///< every registered kernel, sorted
  std::vector<std::string> backends() const; ///< backend names with at least one kernel
  std::vector<std::string> policies() const; ///< policy names
  std::vector<Resolution> resolved() const;  ///< resolutions so far, in first-use order

  /// Removes every kernel and policy and resets the config (tests only: kernels of unloaded
  /// plugins must never stay registered, and plugins are never unloaded in kiln itself).
  void reset_for_testing();

 private:
  Dispatcher() = default;
  const KernelRecord& select_impl(const OpCall& call, bool may_run);
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<KernelRecord>> kernels_;
  std::vector<std::shared_ptr<Policy>> policies_;
  DispatchConfig config_;
  std::vector<Resolution> resolved_;
  std::map<std::string, bool, std::less<>> warned_;
};

/// Runs op `Op` on `args` with the kernel the dispatcher selects.
template <class Op>
typename Op::Result dispatch(const typename Op::Args& args) {
  const c10::Device device = args.device();
  OpCall call{Op::kName, device.type(), args.dtype(), &args};
  const KernelRecord& kernel = Dispatcher::global().select(call);
  return kernel_of<Op>(kernel).run(args);
}

/// Runs the in-place op `Op` on `args` with the kernel Dispatcher::select_in_place picks.
template <class Op>
typename Op::Result dispatch_in_place(const typename Op::Args& args) {
  const c10::Device device = args.device();
  OpCall call{Op::kName, device.type(), args.dtype(), &args};
  const KernelRecord& kernel = Dispatcher::global().select_in_place(call);
  return kernel_of<Op>(kernel).run(args);
}

} // namespace kiln::sdk
