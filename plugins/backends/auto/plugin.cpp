// The `auto` selection policy.
//
// Today: the eligible kernel (its supports() holds for the call) of highest priority, with the
// torch reference always last, whatever priority a plugin gives it, so it is the fallback.
// Measured selection (time each eligible kernel once per shape bucket, cache the winner on disk)
// replaces the priority order when the cuda backend lands.
#include "kiln/sdk/plugin.h"

#include <algorithm>
#include <vector>

namespace kiln::policies {
namespace {

class AutoPolicy final : public sdk::Policy {
 public:
  std::string name() const override { return "auto"; }

  const sdk::KernelRecord* select(const sdk::OpCall& call,
                                  std::span<const sdk::KernelRecord* const> candidates) override {
    const sdk::KernelRecord* reference = nullptr;
    for (const auto* kernel : candidates) { // already in descending priority
      if (!call.supports(*kernel)) continue;
      if (kernel->info.backend == "torch") {
        reference = kernel;
        continue;
      }
      return kernel;
    }
    return reference;
  }
};

void register_auto_policy(sdk::Registrar& r) {
  r.add_policy(std::make_shared<AutoPolicy>());
}

} // namespace
} // namespace kiln::policies

KILN_PLUGIN("auto", policy, "0.1.0", kiln::policies::register_auto_policy)
