// Tier 1 of the plugin boundary: what a plugin's registration function may add.
// The host passes a Registrar only after the plugin's descriptor passed every check
// (kiln/sdk/plugin.h). Registration is transactional: if the function throws, or anything it adds
// is a duplicate, the host discards everything this plugin added and skips the plugin.
#pragma once

#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/kernel.h"
#include "kiln/sdk/model.h"

#include <ATen/record_function.h>

#include <memory>
#include <string>
#include <string_view>

namespace kiln::sdk {

/// Owned by the host; valid only during the registration call. Do not store it.
class KILN_SDK_API Registrar {
 public:
  virtual ~Registrar();

  /// Adds a kernel for (Op, kernel.backend, kernel.device). The registry takes ownership of the
  /// kernel's functions for the process lifetime. Throws kiln::Error on a duplicate key.
  /// Each run is a range named "kiln::OP [BACKEND]" for the LibTorch profiler (`kiln bench
  /// model --profile`, `kiln generate --profile`); without a profiler the range costs a check.
  template <class Op>
  void add_kernel(Kernel<Op> kernel) {
    if (kernel.run) {
      kernel.run = [run = std::move(kernel.run), label = std::string("kiln::") + Op::kName + " [" +
                                                         kernel.backend +
                                                         "]"](const typename Op::Args& args) {
        at::RecordFunction range(at::RecordScope::USER_SCOPE);
        if (range.isActive()) range.before(std::string_view(label));
        return run(args);
      };
    }
    add_kernel_record(make_kernel_record<Op>(std::move(kernel)));
  }

  /// Adds a model family (name, aliases and the HF architectures/model types it handles). Throws
  /// kiln::Error when any of them is already taken.
  virtual void add_model_family(ModelFamily family) = 0;

  /// Adds a kernel selection policy; the registry shares ownership for the process lifetime.
  virtual void add_policy(std::shared_ptr<Policy> policy) = 0;

  /// Type-erased form of add_kernel (prefer the template).
  virtual void add_kernel_record(KernelRecord record) = 0;

  /// Name of the plugin being registered, as its descriptor says.
  virtual std::string_view plugin_name() const = 0;
};

} // namespace kiln::sdk
