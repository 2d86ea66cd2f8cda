// The `auto` selection policy: the fastest eligible kernel, measured.
//
// For each (op, device, dtype, shape bucket) the candidates are the kernels whose supports()
// holds for the call; torch, the reference, is always one of them. One candidate runs untimed.
// Several are timed once, on the first call of the bucket and on its real arguments: under
// no_grad, kWarmupRuns warm-up runs, then up to kTimedRuns timed runs (CUDA events on the
// current stream; the wall clock after a device sync on CPU, or where kiln was built without the
// CUDA headers), median. A candidate that throws is dropped for that bucket (one warning per op
// and backend) and never chosen. The fastest wins; equal times go to the higher priority.
//
// Winners are remembered in memory (per policy instance, thread-safe) and on disk in
// `~/.cache/kiln/autotune.json` ($KILN_AUTOTUNE_CACHE names another file; $XDG_CACHE_HOME is
// respected), keyed by device name, op, dtype, bucket and the candidates' backend:version list,
// so a new kernel version, a new backend or another GPU model re-tunes. Every write re-reads the
// file and merges (another process may have added entries), then replaces it atomically (temp
// file + rename in the same folder). A corrupt or unreadable file is warned about once and
// ignored (the next write replaces it); an unwritable one is warned about once and tuning stays
// in memory. The cache never makes select() throw.
//
// Each decision is logged at info level and attached to the dispatcher's resolved table
// (sdk::note_selection), e.g. "sparse_mla T=16384,...: measured cuda 1.21 ms, torch 35.2 ms ->
// cuda" or "...: cached -> cuda". Under CUDA graph capture nothing can be timed: a call that is
// not cached takes the highest-priority non-torch candidate, untimed and not remembered.
#include "kiln/sdk/plugin.h"
#include "kiln/sdk/autotune.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/log.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

// CUDA events need the CUDA headers (LibTorch ships ATen's, the toolkit cuda_runtime_api.h).
// Without them CUDA candidates are timed with a device sync and the wall clock.
#if __has_include(<cuda_runtime_api.h>) && __has_include(<ATen/cuda/CUDAEvent.h>)
#define KILN_AUTO_CUDA_EVENTS 1
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#else
#define KILN_AUTO_CUDA_EVENTS 0
#endif

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace kiln::policies {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kWarmupRuns = 1;
constexpr int kTimedRuns = 3;
constexpr double kTimedBudgetMs = 250; // stop timing a slow candidate early once past this
constexpr int kCacheFormat = 1;        // autotune.json "format"

// ---- devices and clocks -------------------------------------------------------------------------

void synchronize(c10::Device device) {
  if (device.is_cpu()) return;
#if KILN_AUTO_CUDA_EVENTS
  if (device.is_cuda()) {
    c10::cuda::device_synchronize();
    return;
  }
#endif
  (void)at::zeros({1}, at::TensorOptions().device(device)).cpu(); // waits for the device's stream
}

// The name cache entries are keyed by: the GPU model ("NVIDIA H200"), "cpu", or the device type.
std::string device_model(c10::Device device) {
  if (device.is_cpu()) return "cpu";
#if KILN_AUTO_CUDA_EVENTS
  if (device.is_cuda()) {
    const auto index = device.has_index() ? device.index() : c10::cuda::current_device();
    return at::cuda::getDeviceProperties(index)->name;
  }
#endif
  return c10::DeviceTypeName(device.type(), /*lower_case=*/true);
}

// Whether the current stream (of the guarded device) is being captured into a CUDA graph.
bool capturing(c10::Device device) {
#if KILN_AUTO_CUDA_EVENTS
  if (device.is_cuda()) {
    return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
  }
#endif
  (void)device;
  return false;
}

// Median milliseconds of one kernel on the call's arguments. Throws what the kernel throws.
double time_kernel(const sdk::OpCall& call, const sdk::KernelRecord& kernel, c10::Device device) {
  const c10::NoGradGuard no_grad;
  for (int i = 0; i < kWarmupRuns; ++i) call.run(kernel);
  synchronize(device);
  std::vector<double> ms;
  double total = 0;
  for (int i = 0; i < kTimedRuns && total < kTimedBudgetMs; ++i) {
#if KILN_AUTO_CUDA_EVENTS
    if (device.is_cuda()) {
      at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
      start.record();
      call.run(kernel);
      stop.record();
      stop.synchronize();
      ms.push_back(start.elapsed_time(stop));
      total += ms.back();
      continue;
    }
#endif
    const auto t0 = std::chrono::steady_clock::now();
    call.run(kernel);
    synchronize(device);
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    total += ms.back();
  }
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  return n % 2 == 1 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
}

std::string format_ms(double ms) {
  return ms < 1000 ? fmt::format("{:.3g} ms", ms) : fmt::format("{:.0f} ms", ms);
}

// ---- the cache file -----------------------------------------------------------------------------

// $KILN_AUTOTUNE_CACHE, else $XDG_CACHE_HOME/kiln/autotune.json, else
// $HOME/.cache/kiln/autotune.json; empty when none is set (memory only).
fs::path cache_path() {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? std::optional<fs::path>(v) : std::nullopt;
  };
  if (auto p = env("KILN_AUTOTUNE_CACHE")) return *p;
  if (auto p = env("XDG_CACHE_HOME")) return *p / "kiln" / "autotune.json";
  if (auto p = env("HOME")) return *p / ".cache" / "kiln" / "autotune.json";
  return {};
}

// nlohmann's messages start with "[json.exception.parse_error.101] "; the rest is the useful part.
std::string json_error(const std::exception& e) {
  const std::string what = e.what();
  const auto end = what.find("] ");
  return what.rfind("[json.exception", 0) == 0 && end != std::string::npos ? what.substr(end + 2)
                                                                           : what;
}

// What a kernel threw, on one line: a c10::Error's what() ends in a C++ stack trace (tens of
// lines), which a warning leaves out; line breaks become spaces.
std::string kernel_error(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string text = c10_error != nullptr ? c10_error->what_without_backtrace() : e.what();
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

// The autotune.json file: {"format": 1, "entries": {KEY: ENTRY}}. Not thread-safe: the policy
// calls it under its tuning lock. Never throws; problems are warned about once per file.
class CacheFile {
 public:
  /// The entries on disk now (an empty object when the file is missing, unreadable or corrupt).
  json read(const fs::path& path) {
    std::error_code ec;
    if (!fs::exists(path, ec)) return json::object();
    if (fs::is_directory(path, ec)) return ignore(path, "it is a folder, not a file");
    std::ifstream in(path, std::ios::binary);
    if (!in) return ignore(path, fmt::format("cannot read it ({})", std::strerror(errno)));
    std::stringstream text;
    text << in.rdbuf();
    json doc;
    try {
      doc = json::parse(text.str());
    } catch (const json::exception& e) {
      return ignore(path, fmt::format("not valid JSON: {}", json_error(e)));
    }
    if (!doc.is_object() || !doc.contains("entries") || !doc["entries"].is_object()) {
      return ignore(path, "not an autotune cache (expected an object with an \"entries\" object)");
    }
    return doc["entries"];
  }

  /// Adds `entry` under `key` to what is on disk now and replaces the file atomically.
  void write(const fs::path& path, const std::string& key, const json& entry) {
    try {
      write_merged(path, key, entry);
    } catch (const std::exception& e) { // e.g. json's dump of a string that is not UTF-8
      unwritable(path, e.what());
    }
  }

 private:
  void write_merged(const fs::path& path, const std::string& key, const json& entry) {
    json entries = read(path);
    entries[key] = entry;
    const json doc = {{"format", kCacheFormat}, {"entries", entries}};
    std::error_code ec;
    if (path.has_parent_path()) {
      fs::create_directories(path.parent_path(), ec);
      if (ec) {
        return unwritable(path, fmt::format("cannot create the folder {}: {}",
                                            path.parent_path().string(), ec.message()));
      }
    }
    fs::path tmp = path;
    tmp += fmt::format(".tmp.{}", ::getpid());
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) {
        return unwritable(path,
                          fmt::format("cannot create {}: {}", tmp.string(), std::strerror(errno)));
      }
      out << doc.dump(2) << "\n";
      out.close();
      if (!out) {
        fs::remove(tmp, ec);
        return unwritable(path, fmt::format("writing {} failed", tmp.string()));
      }
    }
    fs::rename(tmp, path, ec);
    if (ec) {
      const std::string why = ec.message();
      fs::remove(tmp, ec);
      return unwritable(path, fmt::format("cannot replace it: {}", why));
    }
  }

  json ignore(const fs::path& path, const std::string& what) {
    if (warned_read_.insert(path.string()).second) {
      log_warn("autotune cache {}: {}; ignoring it (the next measurement rewrites it)",
               path.string(), what);
    }
    return json::object();
  }
  void unwritable(const fs::path& path, const std::string& what) {
    if (warned_write_.insert(path.string()).second) {
      log_warn("autotune cache {}: {}; kernel timings are kept in memory for this process only",
               path.string(), what);
    }
  }

  std::set<std::string> warned_read_;
  std::set<std::string> warned_write_;
};

// ---- the policy ---------------------------------------------------------------------------------

// A remembered decision for one memory key.
struct Decision {
  std::string winner;   // backend
  std::string note;     // what the dispatcher's resolved table shows
  bool remember = true; // false: not timed (graph capture), decide again next time
  // The eligible kernels it chose among: a bucket keeps one decision per set (supports() may
  // answer differently between calls, e.g. with and without gradients). Records live as long
  // as the process, so pointers identify them.
  std::vector<const sdk::KernelRecord*> among;
};

class AutoPolicy final : public sdk::Policy {
 public:
  std::string name() const override { return "auto"; }

  const sdk::KernelRecord* select(const sdk::OpCall& call,
                                  std::span<const sdk::KernelRecord* const> candidates) override {
    std::vector<const sdk::KernelRecord*> eligible; // descending priority
    for (const auto* kernel : candidates) {
      if (call.supports(*kernel)) eligible.push_back(kernel);
    }
    if (eligible.size() <= 1) return eligible.empty() ? nullptr : eligible.front();

    // The in-memory key leaves the candidates out (Decision::among holds them), so a call that
    // was decided before formats only its bucket; backend:version strings are built to tune.
    const c10::Device device = sdk::call_device(call);
    const std::string bucket = sdk::shape_bucket(call);
    const std::string key =
        fmt::format("{}|{}|{}|{}", device.str(), call.op, dtype_name(call.dtype), bucket);
    if (const auto* kernel = remembered(key, eligible)) return kernel;

    // One tuning at a time (recursive: a timed kernel may dispatch other ops on this thread).
    std::lock_guard tune(tune_mutex_);
    if (const auto* kernel = remembered(key, eligible)) return kernel;
    Decision decision;
    try {
      decision = decide(call, device, bucket, versions_of(eligible), eligible);
    } catch (const std::exception& e) { // decide catches what the kernels throw: this is ours
      log_warn("auto policy: {} {}: {}; using the priority order", call.op, bucket,
               kernel_error(e));
      decision = {by_priority(eligible)->info.backend, ""};
    }
    const auto* kernel = find(eligible, decision.winner);
    if (kernel == nullptr) kernel = by_priority(eligible);
    if (!decision.note.empty()) sdk::note_selection(decision.note);
    if (decision.remember) {
      decision.among = eligible;
      std::lock_guard lock(mutex_);
      memory_[key].push_back(std::move(decision)); // remembered() found none for this set
    }
    return kernel;
  }

 private:
  static std::vector<std::string> versions_of(const std::vector<const sdk::KernelRecord*>& ks) {
    std::vector<std::string> out;
    for (const auto* k : ks) out.push_back(fmt::format("{}:{}", k->info.backend, k->info.version));
    std::sort(out.begin(), out.end());
    return out;
  }

  static const sdk::KernelRecord* find(const std::vector<const sdk::KernelRecord*>& ks,
                                       std::string_view backend) {
    for (const auto* k : ks) {
      if (k->info.backend == backend) return k;
    }
    return nullptr;
  }

  // The highest-priority candidate other than torch, else torch: the choice without timings.
  static const sdk::KernelRecord* by_priority(const std::vector<const sdk::KernelRecord*>& ks) {
    for (const auto* k : ks) {
      if (k->info.backend != "torch") return k;
    }
    return ks.front();
  }

  // The remembered winner for `key`, if it is still eligible; repeats its note.
  const sdk::KernelRecord* remembered(const std::string& key,
                                      const std::vector<const sdk::KernelRecord*>& eligible) {
    std::lock_guard lock(mutex_);
    const auto it = memory_.find(key);
    if (it == memory_.end()) return nullptr;
    for (const Decision& d : it->second) {
      if (d.among != eligible) continue;
      const auto* kernel = find(eligible, d.winner);
      if (kernel != nullptr && !d.note.empty()) sdk::note_selection(d.note);
      return kernel;
    }
    return nullptr;
  }

  // Called under tune_mutex_: the disk cache, else a measurement.
  Decision decide(const sdk::OpCall& call, c10::Device device, const std::string& bucket,
                  const std::vector<std::string>& versions,
                  const std::vector<const sdk::KernelRecord*>& eligible) {
    const c10::DeviceGuard guard(device);
    const std::string what =
        bucket.empty() ? std::string(call.op) : fmt::format("{} {}", call.op, bucket);
    const std::string model = device_model(device);
    const std::string disk_key = fmt::format(
        "{}|{}|{}|{}|{}", model, call.op, dtype_name(call.dtype), bucket, fmt::join(versions, ","));
    const fs::path path = cache_path();

    if (!path.empty()) {
      const json entries = file_.read(path);
      const auto it = entries.find(disk_key);
      if (it != entries.end() && it->is_object() && it->contains("winner") &&
          (*it)["winner"].is_string()) {
        const std::string winner = (*it)["winner"].get<std::string>();
        if (find(eligible, winner) != nullptr) {
          log_debug("auto policy: {} on {}: {} (cached in {})", what, device.str(), winner,
                    path.string());
          return {winner, fmt::format("{}: cached -> {}", what, winner)};
        }
      }
    }
    if (capturing(device)) {
      const std::string winner = by_priority(eligible)->info.backend;
      return {winner, fmt::format("{}: not timed (CUDA graph capture) -> {}", what, winner),
              /*remember=*/false};
    }

    json ms = json::object();
    std::vector<std::string> parts;
    const sdk::KernelRecord* best = nullptr;
    double best_ms = 0;
    for (const auto* kernel : eligible) {
      const std::string& backend = kernel->info.backend;
      try {
        const double t = time_kernel(call, *kernel, device);
        ms[backend] = t;
        parts.push_back(fmt::format("{} {}", backend, format_ms(t)));
        if (best == nullptr || t < best_ms) {
          best = kernel;
          best_ms = t;
        }
      } catch (const std::exception& e) {
        dropped(call.op, backend, what, device, kernel_error(e));
        ms[backend] = nullptr;
        parts.push_back(fmt::format("{} failed", backend));
      } catch (...) {
        dropped(call.op, backend, what, device, "an exception that is not a std::exception");
        ms[backend] = nullptr;
        parts.push_back(fmt::format("{} failed", backend));
      }
    }
    if (best == nullptr) { // nothing ran: let the real call report the reference's error
      const auto* fallback = find(eligible, "torch");
      const std::string winner = (fallback != nullptr ? fallback : eligible.front())->info.backend;
      return {winner, fmt::format("{}: every candidate failed while timed -> {}", what, winner)};
    }
    const std::string& winner = best->info.backend;
    Decision decision{winner,
                      fmt::format("{}: measured {} -> {}", what, fmt::join(parts, ", "), winner)};
    log_info("auto policy: {} ({}, {}): measured {} -> {}", what, device.str(),
             dtype_name(call.dtype), fmt::join(parts, ", "), winner);
    if (!path.empty()) {
      file_.write(path, disk_key,
                  {{"device", model},
                   {"op", std::string(call.op)},
                   {"dtype", dtype_name(call.dtype)},
                   {"bucket", bucket},
                   {"candidates", versions},
                   {"winner", winner},
                   {"ms", ms}});
    }
    return decision;
  }

  // A candidate that threw while timed: warned about once per op and backend.
  void dropped(std::string_view op, const std::string& backend, const std::string& what,
               c10::Device device, std::string_view error) {
    if (warned_.insert(fmt::format("{}/{}", op, backend)).second) {
      log_warn(
          "auto policy: kernel {}/{} threw while being timed on {} ({}): {}; it is not used "
          "for these shapes",
          op, backend, what, device.str(), error);
    } else {
      log_debug("auto policy: kernel {}/{} threw while being timed on {}: {}", op, backend, what,
                error);
    }
  }

  std::mutex mutex_; // guards memory_
  // device|op|dtype|bucket -> one decision per eligible set
  std::unordered_map<std::string, std::vector<Decision>> memory_;
  std::recursive_mutex tune_mutex_; // guards what follows
  CacheFile file_;
  std::set<std::string> warned_; // "op/backend" that threw while timed
};

void register_auto_policy(sdk::Registrar& r) {
  r.add_policy(std::make_shared<AutoPolicy>());
}

} // namespace
} // namespace kiln::policies

KILN_PLUGIN("auto", policy, "0.2.0", kiln::policies::register_auto_policy)
