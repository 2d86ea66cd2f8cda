// `indexer_topk` on the cuda backend: the fused indexer + top-k kernel of indexer_topk.cu (the
// [Tq, Tk] score matrix never exists; memory beyond the inputs is the int32 [Tq, topk] output).
//
// supports(): a compute capability 9.0 GPU (runs_on), bfloat16, sizes the kernel is compiled for
// (indexer_topk_supported), D_I a multiple of 8. Inputs with a non-contiguous channel dimension or
// unaligned rows are copied contiguous first; the offsets are made contiguous int32.
#include "kernels.h"
#include "launch.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <limits>

namespace kiln::backends::cuda {

bool indexer_topk_supports(const ops::IndexerTopkArgs& a) {
  const at::Tensor& q = a.index_q;
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max() / 2;
  return q.is_cuda() && q.scalar_type() == at::kBFloat16 && runs_on(q.device()) &&
         q.size(2) % 8 == 0 && q.size(0) <= kMax && a.index_k.size(0) <= kMax && a.topk <= kMax &&
         indexer_topk_supported(static_cast<int>(q.size(1)), static_cast<int>(q.size(2)),
                                static_cast<int>(a.topk));
}

at::Tensor indexer_topk(const ops::IndexerTopkArgs& a) {
  const c10::NoGradGuard no_grad;
  const c10::cuda::CUDAGuard guard(a.index_q.device());
  const int64_t tq = a.index_q.size(0);
  at::Tensor out = at::empty({tq, 1, a.topk}, a.index_q.options().dtype(at::kInt));
  if (tq == 0) return out;
  const at::Tensor q = rows_16b(a.index_q);
  const at::Tensor k = rows_16b(a.index_k);
  at::Tensor w = a.head_weights;
  if (w.stride(1) != 1) w = w.contiguous();
  const at::Tensor cu = a.cu_seqlens.contiguous();
  const at::Tensor padded =
      a.cu_seqlens_padded.defined() ? a.cu_seqlens_padded.contiguous() : at::Tensor();
  const at::Tensor positions =
      a.query_indices.defined() ? a.query_indices.contiguous() : at::Tensor();

  IndexerTopkParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.w = w.data_ptr<float>();
  p.cu_seqlens = cu.data_ptr<int32_t>();
  p.cu_padded = padded.defined() ? padded.data_ptr<int32_t>() : nullptr;
  p.query_indices = positions.defined() ? positions.data_ptr<int32_t>() : nullptr;
  p.out = out.data_ptr<int32_t>();
  p.q_t = q.stride(0);
  p.q_h = q.stride(1);
  p.k_t = k.stride(0);
  p.w_t = w.stride(0);
  p.tq = static_cast<int>(tq);
  p.tk = static_cast<int>(k.size(0));
  p.heads = static_cast<int>(q.size(1));
  p.dim = static_cast<int>(q.size(2));
  p.topk = static_cast<int>(a.topk);
  p.docs = static_cast<int>(cu.size(0) - 1);
  check_launch(launch_indexer_topk(p, c10::cuda::getCurrentCUDAStream()), "indexer_topk");
  return out;
}

} // namespace kiln::backends::cuda
