// PLACEHOLDER (being written): sparse_mla_fwd.
#include "launch.h"

namespace kiln::backends::cuda {
bool sparse_mla_supported(int, int) {
  return false;
}
cudaError_t launch_sparse_mla_fwd(const SparseMlaFwdParams&, cudaStream_t) {
  return cudaErrorNotSupported;
}
} // namespace kiln::backends::cuda
