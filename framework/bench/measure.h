// Measuring one op call: timing (CUDA events on a GPU, wall clock on the CPU), peak device
// memory, the device's name and bf16 peak, and the error metrics against a reference.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace kiln::bench {

/// Times of `steps` runs after `warmup` untimed ones.
struct Timing {
  double median_ms = 0;
  double min_ms = 0;
  std::optional<int64_t> peak_bytes; ///< allocator peak over the timed runs (CUDA only)
  std::string timer;                 ///< "cuda events" or "wall clock"
};

/// Runs `setup` (untimed) then `body` (timed) `warmup + steps` times on `device`. On CUDA each
/// run is bracketed by events on the current stream and the caching allocator's peak is reset
/// before it (peak_bytes = the largest peak of the timed runs, inputs included); on the CPU it
/// is wall clock and peak_bytes is empty. `check` runs after each timed run, untimed.
Timing time_runs(c10::Device device, int64_t warmup, int64_t steps,
                 const std::function<void()>& setup, const std::function<void()>& body,
                 const std::function<void()>& check = {});

/// Waits for all work on `device` (no-op on the CPU).
void synchronize(c10::Device device);

/// Starts the CUDA caching allocator's peak of allocated bytes afresh on `device` (a device
/// without an index means the current one); no-op on the CPU.
void reset_peak_memory(c10::Device device);
/// That peak since the last reset_peak_memory; nullopt on the CPU (no allocator statistics) and
/// in builds without the CUDA runtime headers.
std::optional<int64_t> peak_memory(c10::Device device);
/// The caching allocator's bytes allocated now on `device`; nullopt where peak_memory is.
std::optional<int64_t> allocated_memory(c10::Device device);
/// Returns the caching allocator's unused blocks to the device (CUDA; nothing on the CPU), e.g.
/// after a setting ran out of memory, so the next one starts from what is really free.
void release_cached_memory(c10::Device device);

/// Fills every block the CUDA caching allocator holds unused on `device` with bytes no kernel
/// writes as output: 0xff (NaN in every float format) or, for `integer` outputs, 0x80 (below -1
/// as int32 and int64). An output that lands in any of them and is left partly unwritten then
/// reads as not finite / below -1, instead of holding an earlier run's or an earlier backend's
/// values. Enqueued on the current stream (ahead of the next run). Returns false where there is
/// no such allocator to ask: the CPU, builds without the CUDA runtime headers.
bool poison_free_memory(c10::Device device, bool integer);

/// "NVIDIA H200", or "cpu".
std::string device_description(c10::Device device);

/// Dense peak TFLOP/s of `device_name` for `dtype` as shared/perf.md quotes it: 989 (datasheet)
/// for bf16/fp16 on H100/H200; nullopt otherwise (CPU, float32, other GPUs).
std::optional<double> peak_tflops(const std::string& device_name, c10::ScalarType dtype);
/// The bf16 ceiling measured in this workplace on an H100 (8192^3 matmul): 798 TFLOP/s.
std::optional<double> measured_ceiling_tflops(const std::string& device_name,
                                              c10::ScalarType dtype);

/// max |a - b| and max |a - b| / max |b| (0 when both are 0), in float64 on a's device.
struct ErrorStats {
  double max_abs = 0;
  double max_rel = 0;
};
ErrorStats compare_values(const at::Tensor& actual, const at::Tensor& reference);

/// Selected-set comparison for top-k outputs ([T, 1, K] int32, -1 = empty slot): rows whose
/// sets differ, and how many of those differ only among near-tied scores (the smallest score a
/// row selected is within `tie_tol` (relative) of the reference's k-th score).
struct SetStats {
  int64_t rows = 0;
  int64_t rows_differ = 0;
  int64_t rows_differ_beyond_ties = 0;
  /// Over the rows that differ: the largest (reference's k-th score - the row's smallest pick),
  /// relative to the largest |score| the reference selected in that row (0: none differs): a
  /// wrong pick is a sizeable share of the row's scores, a summation-order near-tie ~1e-6.
  double max_pick_gap = 0;
};
/// `score(rows, keys)` returns float32 scores [rows.size(0), keys.size(1)] of the given keys
/// (int64, -1 allowed; their score is ignored) for the given query rows (int64 [R]).
SetStats compare_sets(
    const at::Tensor& actual, const at::Tensor& reference,
    const std::function<at::Tensor(const at::Tensor& rows, const at::Tensor& keys)>& score,
    double tie_tol = 1e-3);

} // namespace kiln::bench
