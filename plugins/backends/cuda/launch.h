// The cuda backend's kernel launchers: plain pointers, sizes and strides (in elements), no
// LibTorch types, so that the .cu files compile without ATen headers. The ATen side (the .cpp
// files) checks every precondition stated here before it launches; the kernels do not re-check.
// Every launcher enqueues on `stream` and returns without synchronizing; launch errors are
// returned (cudaGetLastError) for the caller to turn into a kiln error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace kiln::backends::cuda {

// ---- sparse_mla ---------------------------------------------------------------------------------
// The attention core of `sparse_mla` on the latent (the w_vc projection is a cuBLAS bmm in the
// ATen wrapper). For query t, head h, over the valid (>= 0) slots j of idx[t, :]:
//   s_j = scale * q[t, h, :dqk] . kv[j, :dqk]          (float32 accumulation)
//   o[t, h, :latent] = sum_j softmax(s)_j kv[j, :latent]  (bf16 probabilities, float32 sum)
//   lse[t, h] = log(sum_j exp(s_j))                     (natural log; +inf for a row with no valid
//                                                       slot, whose o is zero)
// bf16 only. Preconditions: the channel dimension of q and kv is contiguous and every row start
// is 16-byte aligned (strides and dqk multiples of 8); latent <= dqk; dims within what
// sparse_mla_supported() accepts; slots are -1 or in [0, keys), valid slots of a row distinct.
struct SparseMlaFwdParams {
  const void* q = nullptr;      ///< bf16 [tokens, heads, dqk], strides q_t, q_h
  const void* kv = nullptr;     ///< bf16 [keys, dqk], row stride kv_t
  const int32_t* idx = nullptr; ///< [tokens, topk], row stride idx_t
  void* o = nullptr;            ///< bf16 [tokens, heads, latent], contiguous
  float* lse = nullptr;         ///< [tokens, heads], contiguous
  int64_t q_t = 0, q_h = 0, kv_t = 0, idx_t = 0;
  int tokens = 0, heads = 0, keys = 0, topk = 0, dqk = 0, latent = 0;
  float scale = 0;
};

// Its gradient. With p_j = exp(s_j - lse), dp_j = d_o[t, h] . kv[j, :latent] and
// delta = sum_j p_j dp_j (= d_o . o):
//   dq[t, h]       = scale * sum_j p_j (dp_j - delta) kv[j, :dqk]
//   dkv[j, :dqk]  += scale * p_j (dp_j - delta) q[t, h]          (summed over t and h)
//   dkv[j, :latent] += p_j d_o[t, h]
// dq is written (bf16, contiguous [tokens, heads, dqk]); dkv is a float32 [keys, dqk] contiguous
// accumulator the caller zeroes; delta is a float32 [tokens, heads] workspace. Same
// preconditions as the forward; d_o and o contiguous [tokens, heads, latent].
struct SparseMlaBwdParams {
  const void* q = nullptr;
  const void* kv = nullptr;
  const int32_t* idx = nullptr;
  const void* o = nullptr;   ///< the forward's o
  const void* d_o = nullptr; ///< bf16 [tokens, heads, latent]: the gradient of o
  const float* lse = nullptr;
  float* delta = nullptr; ///< workspace [tokens, heads]
  void* dq = nullptr;     ///< bf16 [tokens, heads, dqk]
  float* dkv = nullptr;   ///< float32 [keys, dqk], zeroed by the caller
  int64_t q_t = 0, q_h = 0, kv_t = 0, idx_t = 0;
  int tokens = 0, heads = 0, keys = 0, topk = 0, dqk = 0, latent = 0;
  float scale = 0;
};

/// Whether the sparse_mla kernels are compiled for these widths and this many slots per row.
bool sparse_mla_supported(int dqk, int latent, int topk);
cudaError_t launch_sparse_mla_fwd(const SparseMlaFwdParams& p, cudaStream_t stream);
cudaError_t launch_sparse_mla_bwd(const SparseMlaBwdParams& p, cudaStream_t stream);

// ---- indexer_topk -------------------------------------------------------------------------------
// The lightning indexer's scores and causal top-k of op `indexer_topk` (kiln/sdk/ops/
// indexer_topk.h states the contract; this is it with raw pointers):
//   score[q, t] = sum_h w[q, h] * relu(iq[q, h] . ik[t])    float32 accumulation
//   out[q, :] = the topk visible keys of largest score, -1 padded; order within a row unspecified
// Query row q sits at position pos_q = query_indices[q] (or q); its document n is the last with
// start_n <= pos_q (start = cu_padded or cu_seqlens); it sees keys [start_n, pos_q] when pos_q <
// start_n + (cu_seqlens[n+1] - cu_seqlens[n]), nothing otherwise. bf16 only; channel dims
// contiguous and 16-byte aligned rows; dims within indexer_topk_supported().
struct IndexerTopkParams {
  const void* q = nullptr;                ///< bf16 [tq, heads, dim], strides q_t, q_h
  const void* k = nullptr;                ///< bf16 [tk, dim], row stride k_t
  const float* w = nullptr;               ///< float32 [tq, heads], row stride w_t, heads contiguous
  const int32_t* cu_seqlens = nullptr;    ///< [docs + 1]
  const int32_t* cu_padded = nullptr;     ///< [docs + 1] or null
  const int32_t* query_indices = nullptr; ///< [tq] or null
  int32_t* out = nullptr;                 ///< [tq, topk], contiguous
  int64_t q_t = 0, q_h = 0, k_t = 0, w_t = 0;
  int tq = 0, tk = 0, heads = 0, dim = 0, topk = 0, docs = 0;
};

/// Whether the indexer kernel is compiled for these sizes.
bool indexer_topk_supported(int heads, int dim, int topk);
cudaError_t launch_indexer_topk(const IndexerTopkParams& p, cudaStream_t stream);

// ---- linear_cross_entropy -----------------------------------------------------------------------
// Row kernels over one chunk of bf16 logits [rows, cols] (row stride ld; column c is vocabulary
// entry col0 + c) that the ATen side's GEMMs wrote (kiln/sdk/ops/linear_cross_entropy.h states
// the contract):
//   lse:  lse[r] = log(sum_c exp(logits[r, c]))  (float32; -inf for a row of -inf)
//         loss[r] = lse[r] - logits[r, labels[r] - col0], 0 where labels[r] == ignore_index, NaN
//         where a label lies outside the chunk (whole rows: col0 0, cols = V)
//   grad: logits[r, c] <- (exp(logits[r, c] - lse[r]) - [labels[r] == col0 + c]) * row_scale[r],
//         float32, rounded to bf16, in place (an all-zero row where row_scale[r] is 0)
// rows <= INT32_MAX, cols > 0; labels, lse, loss and row_scale contiguous [rows].
struct CrossEntropyRowsParams {
  void* logits = nullptr;           ///< bf16 [rows, cols], row stride ld
  const int64_t* labels = nullptr;  ///< [rows]
  float* lse = nullptr;             ///< [rows]: written by lse, read by grad
  float* loss = nullptr;            ///< [rows]: lse only
  const float* row_scale = nullptr; ///< [rows]: grad only
  int64_t ld = 0, rows = 0, col0 = 0, ignore_index = -100;
  int cols = 0;
};

cudaError_t launch_cross_entropy_lse(const CrossEntropyRowsParams& p, cudaStream_t stream);
cudaError_t launch_cross_entropy_grad(const CrossEntropyRowsParams& p, cudaStream_t stream);

// ---- rms_norm -----------------------------------------------------------------------------------
// Op `rms_norm` over rows of dim channels (kiln/sdk/ops/rms_norm.h), bf16 x, weight and y:
//   forward:  rstd[r] = rsqrt(mean_c x[r, c]^2 + eps)                 (float32)
//             y[r, c] = bf16(bf16(x[r, c] rstd[r]) weight[c])
//   backward: n = x rstd (float32), dn = dy weight:
//             dx[r, c] = bf16(rstd[r] (dn[r, c] - n[r, c] mean_c(dn[r, :] n[r, :])))
//             d_weight[c] = bf16(sum_r dy[r, c] bf16(n[r, c]))
// x and dy: channels contiguous, row strides x_row and dy_row multiples of 8 and 16-byte aligned
// starts; weight contiguous and aligned; y and dx contiguous [rows, dim]; dim within
// rms_norm_supported(). Backward runs partial_rows CTAs (the caller's rms_norm_bwd_ctas(p), which
// also sizes the workspace), each summing its rows' weight gradient into its row of
// d_weight_partial (float32 [partial_rows, dim]), then adds those rows into d_weight.
struct RmsNormParams {
  const void* x = nullptr;      ///< bf16 [rows, dim], row stride x_row
  const void* weight = nullptr; ///< bf16 [dim]
  void* y = nullptr;            ///< forward: bf16 [rows, dim]
  float* rstd = nullptr;        ///< [rows]: written by forward (when not null), read by backward
  const void* dy = nullptr;     ///< backward: bf16 [rows, dim], row stride dy_row
  void* dx = nullptr;           ///< backward: bf16 [rows, dim]
  void* d_weight = nullptr;     ///< backward: bf16 [dim]
  float* d_weight_partial = nullptr; ///< backward: workspace, see above
  int64_t rows = 0, x_row = 0, dy_row = 0;
  int dim = 0, partial_rows = 0; ///< partial_rows: backward, >= 1 when rows > 0
  float eps = 0;
};

/// Whether the kernels take rows of `dim` channels (a multiple of 8, at most 8192).
bool rms_norm_supported(int64_t dim);
/// CTAs of the backward on the current device (0 for no rows): its partial_rows.
int rms_norm_bwd_ctas(const RmsNormParams& p);
cudaError_t launch_rms_norm_fwd(const RmsNormParams& p, cudaStream_t stream);
cudaError_t launch_rms_norm_bwd(const RmsNormParams& p, cudaStream_t stream);

// ---- adamw --------------------------------------------------------------------------------------
// `adamw` (kiln/sdk/ops/adamw.h) over n elements in one pass: per element, with g = grad /
// grad_divisor (when has_divisor) and w the float32 master:
//   w -= lr_wd * w;  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   w -= step_size * m / (sqrt(v) / bias_correction2_sqrt + eps);  param = w (bf16 or float32)
// torch's fused AdamW in its order of operations (it too divides by the reciprocal of the
// clipping coefficient). param and grad are bf16 (with master) or float32 (master = param, or a
// separate float32 master). Every pointer 16-byte aligned, every tensor contiguous [n].
struct AdamwParams {
  void* param = nullptr;      ///< bf16 or float32 [n]
  const void* grad = nullptr; ///< param's dtype [n]
  float* master = nullptr;    ///< float32 [n]; == param for a float32 parameter without a master
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  int64_t n = 0;
  bool bf16 = false; ///< param and grad are bf16 (else float32)
  bool has_divisor = false;
  float grad_divisor = 1, lr_wd = 0, beta1 = 0, beta2 = 0, eps = 0, step_size = 0;
  float bias_correction2_sqrt = 1;
};

cudaError_t launch_adamw(const AdamwParams& p, cudaStream_t stream);

// ---- moe_experts --------------------------------------------------------------------------------
// The sums around `moe_experts`' grouped GEMMs (kiln/sdk/ops/moe_experts.h), bf16 rows of hidden
// channels (a multiple of 8; 16-byte aligned rows). Slot (n, s) of token n is flat slot n k + s;
// pos[n k + s] is the row its expert output occupies in the expert-sorted rows, or -1 (empty):
//   combine:     out[n] = bf16(sum_{s: pos >= 0} weights[n k + s] rows[pos[n k + s]])  (weights
//                null: 1; float32 sums), out contiguous [tokens, hidden]
//   combine_bwd: for each sorted row r of slot slots[r] = n k + s:
//                d_y[r] = bf16(weights[n k + s] d_out[n]),  d_weights[n k + s] = d_out[n] . y[r]
//                (float32; the caller zeroes d_weights, so empty slots keep 0)
// The forward's combine sums y; the same kernel with null weights sums the gradient of the
// gathered x rows back into x's rows.
struct MoeCombineParams {
  const void* rows = nullptr;     ///< bf16 [S, hidden], row stride rows_ld
  const int32_t* pos = nullptr;   ///< [tokens k]
  const float* weights = nullptr; ///< [tokens k] or null
  void* out = nullptr;            ///< bf16 [tokens, hidden]
  int64_t tokens = 0, rows_ld = 0;
  int k = 0, hidden = 0;
};
struct MoeCombineBwdParams {
  const void* d_out = nullptr;    ///< bf16 [tokens, hidden], row stride d_out_ld
  const void* y = nullptr;        ///< bf16 [rows, hidden], contiguous
  const int64_t* slots = nullptr; ///< [rows]: the flat slot of each row
  const float* weights = nullptr; ///< [tokens k]
  void* d_y = nullptr;            ///< bf16 [rows, hidden]
  float* d_weights = nullptr;     ///< [tokens k], zeroed by the caller
  int64_t rows = 0, d_out_ld = 0;
  int k = 0, hidden = 0;
};

cudaError_t launch_moe_combine(const MoeCombineParams& p, cudaStream_t stream);
cudaError_t launch_moe_combine_bwd(const MoeCombineBwdParams& p, cudaStream_t stream);

} // namespace kiln::backends::cuda
