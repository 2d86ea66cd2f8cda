// One backend's A/B measurement of one op (what `kiln bench op` prints per row): correctness
// against the torch reference in float32 on the same inputs, median time, FLOP rate, % of peak,
// peak memory. Plugins must be loaded; the process-wide dispatcher is reconfigured (strict) for
// each backend and for the reference.
#pragma once

#include "bench/measure.h"
#include "bench/ops.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kiln::bench {

struct OpBenchOptions {
  Shape shape;
  c10::ScalarType dtype = c10::ScalarType::BFloat16;
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  bool backward = false;
  int64_t steps = 20;
  int64_t warmup = 3;
  uint64_t seed = 0;
};

/// One pass (forward, backward, or both under autograd) of one backend.
struct PassResult {
  std::string pass;                ///< "fwd", "bwd" or "f+b"
  std::optional<ErrorStats> error; ///< float outputs: vs the float32 reference (bwd: worst grad)
  std::optional<SetStats> sets;    ///< integer outputs: selected sets vs the reference
  int64_t nonfinite_runs = 0;      ///< timed runs whose fresh output held NaN/Inf (or poison)
  Timing timing;
  double flops = 0; ///< 0 = not counted (memory-bound op)
  std::optional<double> tflops, pct_peak, pct_ceiling;
};

struct BackendResult {
  std::string backend; ///< as requested
  std::string chosen;  ///< the backend whose kernel ran (differs only for a policy like `auto`)
  std::vector<PassResult> passes;
};

/// Throws a one-line user kiln::Error when `backend` is neither a policy nor a backend with a
/// kernel for the op on `device`, naming what is registered.
void check_backend(const OpSpec& spec, const std::string& backend, c10::Device device);

/// Runs the op once with each of `backends`, then as the torch reference on float32 inputs
/// (forward, and backward where options.backward), before any is measured. State that a backend
/// creates on first use and keeps (cuBLAS's workspace, autotune tables, cached descriptors) then
/// exists before every backend's measurement, instead of counting in the peak memory of the first
/// row that needed it. CUDA only (no peak memory on the CPU).
void prime_backends(const OpSpec& spec, const OpBenchOptions& options,
                    const std::vector<std::string>& backends);

/// Measures `backend` (see the file comment). Inputs are fresh, drawn after seeding the default
/// generators with options.seed, so every backend sees the same values. Each pass's peak_bytes is
/// the allocator's peak over its timed runs less what was allocated before the inputs were drawn
/// (the inputs count, whatever earlier rows left allocated does not).
BackendResult bench_backend(const OpSpec& spec, const OpBenchOptions& options,
                            const std::string& backend);

/// One JSON object per backend: op, shape, dtype, device, timer, and per pass the errors, times,
/// FLOPs, rates and peak memory (null where not applicable).
nlohmann::json to_json(const OpSpec& spec, const OpBenchOptions& options,
                       const std::string& device_name, const BackendResult& result);

} // namespace kiln::bench
