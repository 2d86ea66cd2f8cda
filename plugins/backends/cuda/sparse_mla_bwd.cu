// PLACEHOLDER (being written): sparse_mla_bwd.
#include "launch.h"

namespace kiln::backends::cuda {
cudaError_t launch_sparse_mla_bwd(const SparseMlaBwdParams&, cudaStream_t) {
  return cudaErrorNotSupported;
}
} // namespace kiln::backends::cuda
