// Registration table of the cuda backend. Every kernel registers for CUDA devices at a priority
// above the torch reference, and says through supports() which calls it takes (dtype, widths);
// the others go to the next backend (under `auto`) or fail (under backend.strict).
// cuda.h first: its CUDA_VERSION is what the plugin descriptor reports (build_info.h), so the host
// refuses this plugin when its own CUDA major version differs.
#include <cuda.h>

#include "kernels.h"
#include "launch.h"

#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/plugin.h"

#include <ATen/core/Tensor.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <vector>

// The backend's name: "cuda", or another for a second build of these sources under a second name
// (CMake's KILN_CUDA_VARIANT: "cuda_variant"), so that both load side by side for A/B.
#ifndef KILN_CUDA_BACKEND_NAME
#define KILN_CUDA_BACKEND_NAME "cuda"
#endif

namespace kiln::backends::cuda {

bool starts_16b(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

at::Tensor rows_16b(const at::Tensor& t) {
  bool ok = t.stride(-1) == 1 && starts_16b(t);
  for (int64_t d = 0; d + 1 < t.dim(); ++d) ok = ok && (t.stride(d) % 8 == 0 || t.size(d) == 1);
  return ok ? t : t.clone(at::MemoryFormat::Contiguous); // contiguous() would keep a bad start
}

namespace {

// Per visible device: empty when it runs sm_90a code, else why not. Read once (the first call).
const std::vector<std::string>& device_verdicts() {
  static const std::vector<std::string> verdicts = [] {
    std::vector<std::string> out;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) return out;
    for (int d = 0; d < count; ++d) {
      cudaDeviceProp prop{};
      if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) {
        out.push_back(fmt::format("{}: its kernels could not read the properties of cuda:{}",
                                  KILN_CUDA_BACKEND_NAME, d));
      } else if (prop.major != 9 || prop.minor != 0) {
        out.push_back(
            fmt::format("{}: its kernels are sm_90a code (compute capability 9.0: H100, H200); "
                        "cuda:{} is {} (compute capability {}.{})",
                        KILN_CUDA_BACKEND_NAME, d, prop.name, prop.major, prop.minor));
      } else {
        out.emplace_back();
      }
    }
    return out;
  }();
  return verdicts;
}

} // namespace

bool runs_on(const c10::Device& device) {
  const auto& verdicts = device_verdicts();
  const int index = device.has_index() ? device.index() : 0;
  if (index < 0 || index >= static_cast<int>(verdicts.size())) {
    sdk::note_selection(fmt::format("{}: device {} is not visible to its kernels",
                                    KILN_CUDA_BACKEND_NAME, device.str()));
    return false;
  }
  if (!verdicts[index].empty()) sdk::note_selection(verdicts[index]);
  return verdicts[index].empty();
}

void check_launch(int status, const char* what) {
  const auto error = static_cast<cudaError_t>(status);
  if (error != cudaSuccess) {
    internal_error("{} backend: {} failed to launch: {} ({})", KILN_CUDA_BACKEND_NAME, what,
                   cudaGetErrorString(error), cudaGetErrorName(error));
  }
}

namespace {

constexpr int kPriority = 100;
// Kernel versions: part of the `auto` policy's cache keys, so a changed kernel is measured again.
// sparse_mla 2: the backward kernel (1 took calls without gradients only); 3: both kernels on
// wgmma; 4: the forward's gather loads each slot once per row. indexer_topk 2: the fused kernel (1
// supported nothing); 3: on wgmma; 4: compaction counts digits in registers, compactions of a CTA
// lined up (gang); 5: 4-bit digit fields in one 64-bit value per lane, key bounds per lane (the
// version 5 of branch indexer-db was never merged); 6: compaction's first bins fitted to the
// buffer's key range, thr raised to the smallest kept key, a block's two halves balloted together;
// 7: a warp's MMA rows are one query's heads (one head-sum reduction per block and warp), two K
// stages (a larger S), cheaper descriptors and K copies; 8: each warpgroup's two M tiles half a
// block apart; 10: a selection warpgroup where H_p >= 64 (9, one everywhere, was not merged); 11:
// its selection warps compact their queries a last time themselves; 12: a sampled starting
// threshold per query (12 of branch indexer-regsel was not merged); 13: none at D_I > 128;
// 14: the block cursors keep the segment's last block in a register; 15: warp-specialized at
// H_p 32 too (8 selection warps), a slot's two blocks selected together, loose gang compaction.
// 16: the selection warps read the gang word only where a gang compaction could take them;
// 17: sampled thresholds wherever a window outgrows the candidate buffer, gang joins only where
// the rest of the window would not fit; 18: 8 selection warps at 72 registers (184 for the MMA
// warps), and with 4 the MMA loop takes blocks in pairs over 3 K stages; 19: a radix select
// level that splits a bin narrower than 16 keys counts only that bin's values (it counted the 16
// from its start, so near ties could leave a compaction fewer or more than topk entries);
// 20: the sampled threshold's rank from a closed form; 21: with 8 selection warps the K tiles
// come by TMA; 22: compaction's first radix level a shared-memory histogram of up to 1024 bins;
// 23: the selection passes take their whole steps without per-key bound tests; 24: whole steps
// and 8 keys a lane ahead in the warp-specialized kernels only, the lockstep kernel's as in 22.
// linear_cross_entropy, moe_experts, rms_norm 1: their first kernels; linear_cross_entropy 2:
// gradients formed in the forward pass. adamw 1: its first kernel.

void register_cuda_backend(sdk::Registrar& r) {
  r.add_kernel<ops::SparseMlaOp>({.backend = KILN_CUDA_BACKEND_NAME,
                                  .device = c10::DeviceType::CUDA,
                                  .priority = kPriority,
                                  .version = "4",
                                  .run = &sparse_mla,
                                  .supports = &sparse_mla_supports});
  r.add_kernel<ops::IndexerTopkOp>({.backend = KILN_CUDA_BACKEND_NAME,
                                    .device = c10::DeviceType::CUDA,
                                    .priority = kPriority,
                                    .version = "24",
                                    .run = &indexer_topk,
                                    .supports = &indexer_topk_supports});
  r.add_kernel<ops::LinearCrossEntropyOp>({.backend = KILN_CUDA_BACKEND_NAME,
                                           .device = c10::DeviceType::CUDA,
                                           .priority = kPriority,
                                           .version = "2",
                                           .run = &linear_cross_entropy,
                                           .supports = &linear_cross_entropy_supports});
  r.add_kernel<ops::MoeExpertsOp>({.backend = KILN_CUDA_BACKEND_NAME,
                                   .device = c10::DeviceType::CUDA,
                                   .priority = kPriority,
                                   .version = "1",
                                   .run = &moe_experts,
                                   .supports = &moe_experts_supports});
  r.add_kernel<ops::RmsNormOp>({.backend = KILN_CUDA_BACKEND_NAME,
                                .device = c10::DeviceType::CUDA,
                                .priority = kPriority,
                                .version = "1",
                                .run = &rms_norm,
                                .supports = &rms_norm_supports});
  r.add_kernel<ops::AdamwOp>({.backend = KILN_CUDA_BACKEND_NAME,
                              .device = c10::DeviceType::CUDA,
                              .priority = kPriority,
                              .version = "1",
                              .run = &adamw,
                              .supports = &adamw_supports});
}

} // namespace
} // namespace kiln::backends::cuda

KILN_PLUGIN(KILN_CUDA_BACKEND_NAME, backend, "0.1.0", kiln::backends::cuda::register_cuda_backend)
