#include "bench/profile.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <map>
#include <set>
#include <utility>
#include <vector>

namespace kiln::bench {
namespace {

namespace prof = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

std::set<ActivityType> activities(bool cuda) {
  std::set<ActivityType> out = {ActivityType::CPU};
  if (cuda) out.insert(ActivityType::CUDA);
  return out;
}

using Totals = std::map<std::string, std::pair<double, int64_t>>; // name -> (ms, calls)

std::string top(const char* what, const Totals& table, size_t rows) {
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> sorted(table.begin(),
                                                                         table.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  std::string out = fmt::format("{:>10} {:>7}  {} (total, inclusive)\n", "ms", "calls", what);
  for (size_t i = 0; i < std::min(rows, sorted.size()); ++i) {
    out += fmt::format("{:>10.2f} {:>7}  {}\n", sorted[i].second.first, sorted[i].second.second,
                       sorted[i].first.substr(0, 100));
  }
  return out;
}

} // namespace

Profile::Profile(bool cuda) : cuda_(cuda), running_(true) {
  const ProfilerConfig config(ProfilerState::KINETO, /*report_input_shapes=*/true);
  prof::prepareProfiler(config, activities(cuda));
  prof::enableProfiler(config, activities(cuda));
}

Profile::~Profile() {
  if (running_) prof::disableProfiler();
}

std::string Profile::finish(const std::filesystem::path& trace, size_t rows) {
  running_ = false;
  const auto result = prof::disableProfiler();
  result->save(trace.string());
  Totals cpu, gpu;
  for (const auto& e : result->events()) {
    auto& slot = (e.deviceType() == c10::DeviceType::CUDA ? gpu : cpu)[e.name()];
    slot.first += static_cast<double>(e.durationNs()) * 1e-6;
    ++slot.second;
  }
  std::string out = top("CPU ops", cpu, rows);
  if (cuda_) out += top("GPU kernels", gpu, rows);
  return out;
}

} // namespace kiln::bench
