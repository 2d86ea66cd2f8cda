#include "bench/op_bench.h"

#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <set>

namespace kiln::bench {
namespace {

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "(none)" : out;
}

void force_backend(const std::string& backend) {
  sdk::Dispatcher::global().configure({.default_backend = backend, .strict = true});
}

// The backend that ran `op` last (the dispatcher's record), or `requested` when none is recorded.
std::string chosen_backend(std::string_view op, const std::string& requested) {
  for (const auto& r : sdk::Dispatcher::global().resolved()) {
    if (r.op == op) return r.chosen;
  }
  return requested;
}

// Before a run: `out` (the previous run's output) released, and the memory the next output may
// take filled with values no kernel produces (NaN, or below -1 for integers), so a kernel that
// leaves part of its output unwritten shows up as non-finite / below -1 instead of silently
// holding earlier values. On CUDA every block the caching allocator holds unused is poisoned: the
// allocator may hand the output any of them, e.g. the one an earlier backend's row left its
// correct output in. Where there is no allocator to ask (the CPU; a build without the CUDA
// runtime headers) only a block of the previous output's size, which the next output will most
// likely reuse.
void release_and_poison(at::Tensor& out, c10::Device device, bool integer) {
  const bool had = out.defined();
  const std::vector<int64_t> sizes = had ? out.sizes().vec() : std::vector<int64_t>{};
  const at::TensorOptions options = had ? out.options() : at::TensorOptions();
  out = at::Tensor();
  if (poison_free_memory(device, integer) || !had) return;
  at::Tensor p = at::empty(sizes, options);
  if (at::isFloatingType(options.dtype().toScalarType())) {
    p.fill_(std::numeric_limits<double>::quiet_NaN());
  } else {
    p.fill_(std::numeric_limits<int32_t>::min());
  }
}

bool output_ok(const at::Tensor& t) {
  if (at::isFloatingType(t.scalar_type())) return at::isfinite(t).all().item<bool>();
  return t.ge(-1).all().item<bool>();
}

std::vector<at::Tensor> upcast(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) {
    out.push_back(at::isFloatingType(t.scalar_type()) ? t.detach().to(at::kFloat) : t);
  }
  return out;
}

void require_grads(std::vector<at::Tensor>& tensors, const std::vector<size_t>& which) {
  for (size_t i : which) tensors[i] = tensors[i].detach().requires_grad_(true);
}

void clear_grads(std::vector<at::Tensor>& tensors, const std::vector<size_t>& which) {
  for (size_t i : which) tensors[i].mutable_grad() = at::Tensor();
}

void fill_rates(PassResult& pass, const std::string& device_name, c10::ScalarType dtype) {
  if (pass.flops <= 0 || pass.timing.median_ms <= 0) return;
  pass.tflops = pass.flops / (pass.timing.median_ms * 1e-3) / 1e12;
  if (auto peak = peak_tflops(device_name, dtype)) pass.pct_peak = 100.0 * *pass.tflops / *peak;
  if (auto ceiling = measured_ceiling_tflops(device_name, dtype)) {
    pass.pct_ceiling = 100.0 * *pass.tflops / *ceiling;
  }
}

nlohmann::json opt(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

} // namespace

void check_backend(const OpSpec& spec, const std::string& backend, c10::Device device) {
  const auto& dispatcher = sdk::Dispatcher::global();
  const auto policies = dispatcher.policies();
  if (std::find(policies.begin(), policies.end(), backend) != policies.end()) return;
  std::vector<std::string> here;
  for (const auto& k : dispatcher.kernels()) {
    if (k.op == spec.name && k.device == device.type()) here.push_back(k.backend);
  }
  if (std::find(here.begin(), here.end(), backend) != here.end()) return;
  const auto backends = dispatcher.backends();
  KILN_CHECK_USER(std::find(backends.begin(), backends.end(), backend) != backends.end(),
                  "--backends: unknown backend '{}'; registered backends: {}; policies: {}",
                  backend, join(backends), join(policies));
  user_error("--backends: backend '{}' has no {} kernel on {}; registered for it there: {}",
             backend, spec.name, device_name(device.type()), join(here));
}

void prime_backends(const OpSpec& spec, const OpBenchOptions& o,
                    const std::vector<std::string>& backends) {
  if (!o.device.is_cuda()) return;
  const bool backward = o.backward && spec.backward_flops != nullptr;
  at::manual_seed(o.seed);
  OpInputs in = spec.make_inputs(o.shape, o.dtype, o.device);
  auto once = [&](const std::string& backend, std::vector<at::Tensor> tensors) {
    force_backend(backend);
    const c10::AutoGradMode grad_mode(backward);
    if (backward) require_grads(tensors, in.differentiable);
    const at::Tensor out = spec.run(o.shape, tensors);
    if (backward) out.backward(at::randn_like(out));
  };
  for (const auto& b : backends) once(b, in.tensors);
  once("torch", upcast(in.tensors)); // the reference
  synchronize(o.device);
}

BackendResult bench_backend(const OpSpec& spec, const OpBenchOptions& o,
                            const std::string& backend) {
  const std::string device_name = device_description(o.device);
  BackendResult result;
  result.backend = backend;
  const bool backward = o.backward && spec.backward_flops != nullptr;

  // What earlier rows left allocated is not this backend's: peaks count from here.
  const std::optional<int64_t> base = allocated_memory(o.device);
  auto own = [&](Timing t) {
    if (t.peak_bytes && base) *t.peak_bytes -= *base;
    return t;
  };
  at::manual_seed(o.seed);
  OpInputs in = spec.make_inputs(o.shape, o.dtype, o.device);
  force_backend(backend);

  // ---- timing first, so that peak memory counts only the inputs and the op's own work ----
  PassResult fwd;
  fwd.pass = "fwd";
  fwd.flops = spec.forward_flops(o.shape);
  {
    const at::NoGradGuard no_grad;
    at::Tensor out;
    fwd.timing = own(time_runs(
        o.device, o.warmup, o.steps,
        [&] { release_and_poison(out, o.device, spec.integer_output); },
        [&] { out = spec.run(o.shape, in.tensors); },
        [&] { fwd.nonfinite_runs += output_ok(out) ? 0 : 1; }));
  }
  result.chosen = chosen_backend(spec.name, backend);

  PassResult bwd;
  at::Tensor grad_seed; // the random weights r of sum(out * r), float32
  if (backward) {
    bwd.pass = "bwd";
    bwd.flops = spec.backward_flops(o.shape);
    require_grads(in.tensors, in.differentiable);
    at::Tensor out, seed;
    bwd.timing = own(time_runs(
        o.device, o.warmup, o.steps,
        [&] {
          clear_grads(in.tensors, in.differentiable);
          out = spec.run(o.shape, in.tensors);
          if (!seed.defined()) seed = at::randn_like(out);
          poison_free_memory(o.device, /*integer=*/false); // where the gradients will land
        },
        [&] { out.backward(seed); },
        [&] {
          for (size_t i : in.differentiable) {
            bwd.nonfinite_runs += output_ok(in.tensors[i].grad()) ? 0 : 1;
          }
        }));
    clear_grads(in.tensors, in.differentiable);
  }
  // Forward (under autograd) and backward together: what a training step pays for the op, also
  // for kernels that compute their gradients in the forward pass.
  PassResult both;
  if (backward) {
    both.pass = "f+b";
    both.flops = fwd.flops + bwd.flops;
    at::Tensor seed;
    both.timing = own(time_runs(
        o.device, o.warmup, o.steps,
        [&] {
          clear_grads(in.tensors, in.differentiable);
          poison_free_memory(o.device, /*integer=*/false); // float outputs and gradients
        },
        [&] {
          const at::Tensor out = spec.run(o.shape, in.tensors);
          if (!seed.defined()) seed = at::randn_like(out);
          out.backward(seed);
        },
        [&] {
          for (size_t i : in.differentiable) {
            both.nonfinite_runs += output_ok(in.tensors[i].grad()) ? 0 : 1;
          }
        }));
    clear_grads(in.tensors, in.differentiable);
  }

  // ---- correctness: one fresh run of the backend, then the float32 torch reference ----
  c10::AutoGradMode grad_mode(backward);
  std::vector<at::Tensor> before; // an in-place op's inputs as the backend's run found them
  if (spec.in_place) {
    for (const at::Tensor& t : in.tensors) before.push_back(t.clone());
  }
  at::manual_seed(o.seed + 1);
  poison_free_memory(o.device, spec.integer_output); // not the timed runs' (or rows') outputs
  const at::Tensor out = spec.run(o.shape, in.tensors);
  fwd.nonfinite_runs += output_ok(out) ? 0 : 1;
  if (backward) {
    grad_seed = at::randn(out.sizes(), out.options().dtype(at::kFloat));
    const at::Tensor seed = grad_seed.to(out.scalar_type());
    poison_free_memory(o.device, /*integer=*/false);
    out.backward(seed);
  }

  std::vector<at::Tensor> ref_in = upcast(spec.in_place ? before : in.tensors);
  if (backward) require_grads(ref_in, in.differentiable);
  force_backend("torch");
  const at::Tensor ref = spec.run(o.shape, ref_in);
  if (backward) ref.backward(grad_seed);

  if (spec.integer_output) {
    const c10::NoGradGuard no_grad;
    fwd.sets = compare_sets(out, ref, [&](const at::Tensor& rows, const at::Tensor& keys) {
      return spec.score(ref_in, rows, keys);
    });
  } else {
    fwd.error = compare_values(out.detach(), ref.detach());
  }
  if (backward) {
    ErrorStats worst;
    for (size_t i : in.differentiable) {
      const at::Tensor g = in.tensors[i].grad(), g_ref = ref_in[i].grad();
      KILN_CHECK_USER(g.defined() && g_ref.defined(),
                      "{}: backend '{}' gave no gradient for input {} (the reference did{})",
                      spec.name, backend, i, g_ref.defined() ? "" : " not either");
      bwd.nonfinite_runs += output_ok(g) ? 0 : 1;
      const ErrorStats e = compare_values(g, g_ref);
      worst.max_abs = std::max(worst.max_abs, e.max_abs);
      worst.max_rel = std::max(worst.max_rel, e.max_rel);
    }
    bwd.error = worst;
  }

  fill_rates(fwd, device_name, o.dtype);
  result.passes.push_back(std::move(fwd));
  if (backward) {
    fill_rates(bwd, device_name, o.dtype);
    result.passes.push_back(std::move(bwd));
    both.error = result.passes.back().error; // the same gradients
    fill_rates(both, device_name, o.dtype);
    result.passes.push_back(std::move(both));
  }
  return result;
}

nlohmann::json to_json(const OpSpec& spec, const OpBenchOptions& o, const std::string& device_name,
                       const BackendResult& r) {
  nlohmann::json shape = nlohmann::json::object();
  for (const auto& [k, v] : o.shape.entries()) shape[k] = v;
  nlohmann::json j = {{"op", spec.name},
                      {"backend", r.backend},
                      {"chosen", r.chosen},
                      {"shape", shape},
                      {"dtype", dtype_name(o.dtype)},
                      {"device", o.device.str()},
                      {"device_name", device_name},
                      {"steps", o.steps},
                      {"warmup", o.warmup},
                      {"seed", o.seed}};
  for (const auto& p : r.passes) {
    nlohmann::json pj = {
        {"timer", p.timing.timer},
        {"median_ms", p.timing.median_ms},
        {"min_ms", p.timing.min_ms},
        {"flops", p.flops > 0 ? nlohmann::json(p.flops) : nlohmann::json(nullptr)},
        {"flops_rule", p.pass == "fwd" ? std::string(spec.flops_rule)
                       : p.pass == "bwd"
                           ? std::string(spec.backward_flops_rule)
                           : fmt::format("{} + {}", spec.flops_rule, spec.backward_flops_rule)},
        {"tflops", opt(p.tflops)},
        {"pct_peak", opt(p.pct_peak)},
        {"pct_measured_ceiling", opt(p.pct_ceiling)},
        {"peak_mib", p.timing.peak_bytes
                         ? nlohmann::json(static_cast<double>(*p.timing.peak_bytes) / (1 << 20))
                         : nlohmann::json(nullptr)},
        {"nonfinite_runs", p.nonfinite_runs},
        {"max_abs_err", p.error ? nlohmann::json(p.error->max_abs) : nlohmann::json(nullptr)},
        {"max_rel_err", p.error ? nlohmann::json(p.error->max_rel) : nlohmann::json(nullptr)}};
    if (p.sets) {
      pj["rows"] = p.sets->rows;
      pj["rows_differ"] = p.sets->rows_differ;
      pj["rows_differ_beyond_ties"] = p.sets->rows_differ_beyond_ties;
      pj["max_pick_gap"] = p.sets->max_pick_gap;
    }
    j[p.pass == "fwd" ? "forward" : p.pass == "bwd" ? "backward" : "forward_backward"] = pj;
  }
  return j;
}

} // namespace kiln::bench
