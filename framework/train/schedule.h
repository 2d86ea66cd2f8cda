// Learning-rate schedules: linear warm-up, then cosine / linear decay, constant, or WSD.
#pragma once

#include <cstdint>
#include <string_view>

namespace kiln::train {

enum class ScheduleKind { kCosine, kLinear, kConstant, kWsd };

struct Schedule {
  ScheduleKind kind = ScheduleKind::kCosine;
  double lr = 3e-4;
  double min_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double decay_fraction = 0.1; ///< WSD: the last fraction of total_steps decays linearly

  /// Learning rate of step `step` (0-based: the first optimizer step is 0). Warm-up rises
  /// linearly to lr at step warmup_steps - 1; decays reach min_lr at the last step.
  double at(int64_t step) const;
};

/// "cosine" | "linear" | "constant" | "wsd"; throws kiln::Error (user) otherwise.
ScheduleKind parse_schedule(std::string_view name);

} // namespace kiln::train
