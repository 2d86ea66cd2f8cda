#include "bench/measure.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

// CUDA events and allocator statistics need the CUDA headers; LibTorch ships them, the toolkit
// provides cuda_runtime_api.h. Without it, CUDA runs are timed with a device sync and the clock.
#if __has_include(<cuda_runtime_api.h>) && __has_include(<ATen/cuda/CUDAEvent.h>)
#define KILN_BENCH_CUDA_EVENTS 1
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#else
#define KILN_BENCH_CUDA_EVENTS 0
#endif

#include <algorithm>
#include <chrono>
#include <vector>

namespace kiln::bench {

void synchronize(c10::Device device) {
  if (!device.is_cuda()) return;
#if KILN_BENCH_CUDA_EVENTS
  const c10::DeviceGuard guard(device);
  c10::cuda::device_synchronize();
#else
  // Any copy to the host waits for the device's current stream.
  (void)at::zeros({1}, at::TensorOptions().device(device)).cpu();
#endif
}

#if KILN_BENCH_CUDA_EVENTS
namespace {
c10::DeviceIndex cuda_index(c10::Device device) {
  return device.has_index() ? device.index() : c10::cuda::current_device();
}
} // namespace
#endif

void reset_peak_memory(c10::Device device) {
#if KILN_BENCH_CUDA_EVENTS
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(cuda_index(device));
#else
  (void)device;
#endif
}

void release_cached_memory(c10::Device device) {
#if KILN_BENCH_CUDA_EVENTS
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#else
  (void)device;
#endif
}

bool poison_free_memory(c10::Device device, bool integer) {
#if KILN_BENCH_CUDA_EVENTS
  if (!device.is_cuda()) return false;
  const c10::DeviceIndex index = cuda_index(device);
  const c10::DeviceGuard guard(c10::Device(c10::kCUDA, index));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(index).stream();
  const int byte = integer ? 0x80 : 0xff;
  // A segment's blocks follow each other from its address, in the snapshot's order.
  const auto snapshot = c10::cuda::CUDACachingAllocator::snapshot({0, 0}, /*include_traces=*/false);
  for (const auto& segment : snapshot.segments) {
    if (segment.device != index) continue;
    size_t at = segment.address;
    for (const auto& block : segment.blocks) {
      if (!block.allocated && !block.active) {
        const cudaError_t err =
            cudaMemsetAsync(reinterpret_cast<void*>(at), byte, block.size, stream);
        if (err != cudaSuccess) {
          internal_error(
              "poisoning {} unused bytes at {:#x} on cuda:{} before a run failed: {} "
              "(an earlier kernel's error shows up here too)",
              block.size, at, index, cudaGetErrorString(err));
        }
      }
      at += block.size;
    }
  }
  return true;
#else
  (void)device;
  (void)integer;
  return false;
#endif
}

namespace {
// The caching allocator's allocated bytes on `device` (all pools): the peak since the last reset,
// or what is allocated now; nullopt on the CPU and without the CUDA runtime headers.
std::optional<int64_t> allocated_bytes(c10::Device device, bool peak) {
#if KILN_BENCH_CUDA_EVENTS
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(cuda_index(device));
    const auto& bytes =
        stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    return peak ? bytes.peak : bytes.current;
  }
#else
  (void)device;
  (void)peak;
#endif
  return std::nullopt;
}
} // namespace

std::optional<int64_t> peak_memory(c10::Device device) {
  return allocated_bytes(device, true);
}

std::optional<int64_t> allocated_memory(c10::Device device) {
  return allocated_bytes(device, false);
}

Timing time_runs(c10::Device device, int64_t warmup, int64_t steps,
                 const std::function<void()>& setup, const std::function<void()>& body,
                 const std::function<void()>& check) {
  const c10::DeviceGuard guard(device);
  for (int64_t i = 0; i < warmup; ++i) {
    setup();
    body();
  }
  synchronize(device);
  Timing timing;
  std::vector<double> ms;
  for (int64_t i = 0; i < steps; ++i) {
    setup();
    synchronize(device);
#if KILN_BENCH_CUDA_EVENTS
    if (device.is_cuda()) {
      timing.timer = "cuda events";
      reset_peak_memory(device);
      at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
      start.record();
      body();
      stop.record();
      stop.synchronize();
      ms.push_back(start.elapsed_time(stop));
      timing.peak_bytes = std::max(timing.peak_bytes.value_or(0), peak_memory(device).value_or(0));
      if (check) check();
      continue;
    }
#endif
    timing.timer = device.is_cuda() ? "wall clock (device synchronized)" : "wall clock";
    const auto t0 = std::chrono::steady_clock::now();
    body();
    synchronize(device);
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    if (check) check();
  }
  std::sort(ms.begin(), ms.end());
  if (!ms.empty()) {
    const size_t n = ms.size();
    timing.median_ms = n % 2 == 1 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
    timing.min_ms = ms.front();
  }
  return timing;
}

std::string device_description(c10::Device device) {
  if (!device.is_cuda()) return "cpu";
#if KILN_BENCH_CUDA_EVENTS
  const c10::DeviceIndex index = device.has_index() ? device.index() : c10::cuda::current_device();
  return at::cuda::getDeviceProperties(index)->name;
#else
  return "cuda";
#endif
}

namespace {
bool is_hopper_datacenter(const std::string& name) {
  return name.find("H100") != std::string::npos || name.find("H200") != std::string::npos ||
         name.find("H800") != std::string::npos;
}
bool half_precision(c10::ScalarType dtype) {
  return dtype == at::kBFloat16 || dtype == at::kHalf;
}
} // namespace

std::optional<double> peak_tflops(const std::string& device_name, c10::ScalarType dtype) {
  if (!is_hopper_datacenter(device_name) || !half_precision(dtype)) return std::nullopt;
  return 989.0;
}

std::optional<double> measured_ceiling_tflops(const std::string& device_name,
                                              c10::ScalarType dtype) {
  if (!is_hopper_datacenter(device_name) || !half_precision(dtype)) return std::nullopt;
  return 798.0;
}

ErrorStats compare_values(const at::Tensor& actual, const at::Tensor& reference) {
  if (actual.sizes() != reference.sizes()) {
    internal_error("bench: output shapes differ: {} vs {}", shape_str(actual.sizes()),
                   shape_str(reference.sizes()));
  }
  const at::Tensor a = actual.to(at::kDouble);
  const at::Tensor b = reference.to(a.device(), at::kDouble);
  ErrorStats stats;
  if (a.numel() == 0) return stats;
  stats.max_abs = (a - b).abs().max().item<double>();
  const double scale = b.abs().max().item<double>();
  stats.max_rel = scale > 0 ? stats.max_abs / scale : (stats.max_abs > 0 ? INFINITY : 0.0);
  return stats;
}

SetStats compare_sets(const at::Tensor& actual, const at::Tensor& reference,
                      const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& score,
                      double tie_tol) {
  const at::Tensor a = std::get<0>(actual.reshape({actual.size(0), -1}).to(at::kLong).sort(-1));
  const at::Tensor b =
      std::get<0>(reference.reshape({reference.size(0), -1}).to(a.device(), at::kLong).sort(-1));
  SetStats stats;
  stats.rows = a.size(0);
  const at::Tensor differ = a.ne(b).any(-1).nonzero().flatten(); // int64 [R]
  stats.rows_differ = differ.numel();
  constexpr int64_t kChunk = 256; // rows scored at once
  for (int64_t r0 = 0; r0 < stats.rows_differ; r0 += kChunk) {
    const at::Tensor rows = differ.narrow(0, r0, std::min(kChunk, stats.rows_differ - r0));
    const at::Tensor mine = a.index_select(0, rows), theirs = b.index_select(0, rows);
    // -1 slots are ignored in the minima; a different count of them is never a tie.
    const at::Tensor inf = at::full({}, INFINITY, at::TensorOptions().device(a.device()));
    const at::Tensor ref_scores = score(rows, theirs);
    const at::Tensor s_mine = at::where(mine.ge(0), score(rows, mine), inf).amin(-1);
    const at::Tensor s_ref = at::where(theirs.ge(0), ref_scores, inf).amin(-1);
    const at::Tensor tol = s_ref.abs() * tie_tol + 1e-6;
    const at::Tensor beyond = s_mine.lt(s_ref - tol) | mine.lt(0).sum(-1).ne(theirs.lt(0).sum(-1));
    stats.rows_differ_beyond_ties += beyond.sum().item<int64_t>();
    const at::Tensor scale = at::where(theirs.ge(0), ref_scores.abs(), 0.0).amax(-1);
    const at::Tensor gap = (s_ref.to(at::kDouble) - s_mine.to(at::kDouble)) / scale.to(at::kDouble);
    const at::Tensor finite = at::isfinite(gap);
    if (finite.any().item<bool>()) {
      stats.max_pick_gap =
          std::max(stats.max_pick_gap, gap.masked_select(finite).max().item<double>());
    }
  }
  return stats;
}

} // namespace kiln::bench
