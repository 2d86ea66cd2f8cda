// Op `mamba2_scan`: the Mamba2 selective state-space scan (SSD), HF Nemotron-H `torch_forward`
// semantics (models.md §4.3 steps 5-7), over padded batches or packed (THD) sequences.
//
//   dt' = clamp(softplus(dt + dt_bias), dt_min, dt_max)     (softplus only if dt_softplus)
//   per sequence, head h (group g = h / (H / G)), channel p, state n, time t:
//   S_t[p, n] = exp(dt'_t,h * A_h) * S_{t-1}[p, n] + dt'_t,h * B_t[g, n] * x_t[h, p]
//   y_t[h, p] = sum_n C_t[g, n] * S_t[p, n] + D_h * x_t[h, p]
//   S_{-1} = initial_states (zeros when absent); final_states = S at each sequence's last token.
//
// A is the (negative) decay rate, A = -exp(A_log.float()), computed by the caller so the gradient
// reaches A_log through ordinary autograd. Heads map to B/C groups in contiguous blocks. HF
// evaluates the recurrence with the chunked SSD algorithm (chunk_size 128, intra-chunk
// exp(segsum) decay, inter-chunk state passing); any exact evaluation (chunked with any chunk
// size, or sequential) is the same math, so `chunk_size` only guides a backend and may be ignored.
// In shapes, B is the batch size; the tensors named B and C are the SSM input and output matrices.
// In THD mode the state is reset at every sequence start of `cu_seqlens` (mamba_ssm derives its
// seq_idx from it) and each sequence has its own initial/final state.
//
// dt handling (HF order): dt + dt_bias, softplus (torch's, threshold 20) and the clamp run in the
// promoted dtype of dt and dt_bias (bf16 for HF, whose dt_bias is bf16 after loading); dt' is then
// promoted to float32. HF clamps with dt_min = time_step_min (0.001) in prefill and uses no upper
// limit; NeMo passes no limit (dt_min = 0, dt_max = inf).
// Precision: the scan and y are float32 (HF upcasts x, B, C and keeps the scan output in float32,
// which then feeds gated_rms_norm); D promotes to float32. HF's decode path rounds some products
// to bf16; this op always computes the float32 math (model parity tests allow for that).
// Differentiable in x, dt, A, B, C, D, dt_bias and initial_states (through y and final_states).
// Backends may assume (checked here): x [B, L, H, P] / [T, H, P] floating; dt [B, L, H] / [T, H]
// floating; A float32 [H]; B and C [B, L, G, N] / [T, G, N] in x's dtype with H % G == 0; D and
// dt_bias [H] floating when given; initial_states float32 [B|num_seqs, H, P, N]; cu_seqlens
// int32 [num_seqs + 1] only with THD x; chunk_size >= 1; dt_min <= dt_max; one device. NOT
// checked on accelerators: cu_seqlens values. Strides are arbitrary.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>

namespace kiln::ops {

/// Arguments of `mamba2_scan`; device and dtype of x decide dispatch.
struct Mamba2ScanArgs {
  at::Tensor x;       ///< [B, L, H, P] or THD [T, H, P]; float32, bfloat16 or float16
  at::Tensor dt;      ///< [B, L, H] or [T, H]; raw (before dt_bias/softplus); floating
  at::Tensor A;       ///< float32 [H]; A = -exp(A_log.float())
  at::Tensor B;       ///< [B, L, G, N] or [T, G, N]; x's dtype
  at::Tensor C;       ///< [B, L, G, N] or [T, G, N]; x's dtype
  at::Tensor D;       ///< optional [H]; floating (skip connection D_h * x)
  at::Tensor dt_bias; ///< optional [H]; floating
  bool dt_softplus = true;
  double dt_min = 0.0; ///< clamp of dt' (HF prefill: time_step_min = 1e-3)
  double dt_max = std::numeric_limits<double>::infinity();
  int64_t chunk_size = 128;  ///< a hint for chunked backends (HF: config.chunk_size)
  at::Tensor cu_seqlens;     ///< THD only: int32 [num_seqs + 1]
  at::Tensor initial_states; ///< optional float32 [B|num_seqs, H, P, N]
  bool return_final_states = false;
  c10::Device device() const { return x.device(); }
  c10::ScalarType dtype() const { return x.scalar_type(); }
};

/// The scan output and, when requested, the SSM state after the last token.
struct Mamba2ScanResult {
  at::Tensor y;            ///< x's shape; float32
  at::Tensor final_states; ///< float32 [B|num_seqs, H, P, N]; undefined unless requested
};

/// Traits of op `mamba2_scan`.
struct Mamba2ScanOp {
  static constexpr const char* kName = "mamba2_scan";
  using Args = Mamba2ScanArgs;
  using Result = Mamba2ScanResult;
};

/// Validates and dispatches `mamba2_scan`.
KILN_SDK_API Mamba2ScanResult mamba2_scan(const Mamba2ScanArgs& args);

} // namespace kiln::ops
