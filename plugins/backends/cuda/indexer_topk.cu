// PLACEHOLDER (being written): indexer_topk.
#include "launch.h"

namespace kiln::backends::cuda {
bool indexer_topk_supported(int, int, int) {
  return false;
}
cudaError_t launch_indexer_topk(const IndexerTopkParams&, cudaStream_t) {
  return cudaErrorNotSupported;
}
} // namespace kiln::backends::cuda
