#include "train/schedule.h"

#include "kiln/sdk/error.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace kiln::train {

ScheduleKind parse_schedule(std::string_view name) {
  if (name == "cosine") return ScheduleKind::kCosine;
  if (name == "linear") return ScheduleKind::kLinear;
  if (name == "constant") return ScheduleKind::kConstant;
  if (name == "wsd") return ScheduleKind::kWsd;
  user_error("optim.schedule: expected cosine, linear, constant or wsd, found '{}'", name);
}

double Schedule::at(int64_t step) const {
  if (step < warmup_steps) {
    return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  }
  // Progress through the decay, 0 at its first step and 1 at the last step of the run.
  auto progress = [&](int64_t first) {
    const int64_t span = total_steps - 1 - first;
    if (span <= 0) return 1.0;
    return std::clamp(static_cast<double>(step - first) / static_cast<double>(span), 0.0, 1.0);
  };
  switch (kind) {
    case ScheduleKind::kConstant:
      return lr;
    case ScheduleKind::kLinear:
      return lr - (lr - min_lr) * progress(warmup_steps);
    case ScheduleKind::kCosine:
      return min_lr +
             (lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress(warmup_steps)));
    case ScheduleKind::kWsd: {
      const auto decay_steps = std::max<int64_t>(
          1, static_cast<int64_t>(std::llround(decay_fraction * static_cast<double>(total_steps))));
      const int64_t first = std::max(warmup_steps, total_steps - decay_steps);
      if (step < first) return lr;
      return lr - (lr - min_lr) * progress(first - 1);
    }
  }
  return lr;
}

} // namespace kiln::train
