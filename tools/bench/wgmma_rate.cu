// The tensor cores' rate for the wgmma shapes the cuda backend issues, alone: no epilogue, no
// loads (the operands are whatever shared memory and registers hold), one CTA of two
// warpgroups per SM, as indexer_topk's MMA warps run. Answers "how much of the bf16 peak can this
// loop structure reach at all" before a kernel is reshaped around another shape.
//
//   tools/gpu kernels wgmma                    (the GPU machine: tools/bench/run_kernels's part)
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Iplugins/backends/cuda \
//     tools/bench/wgmma_rate.cu -o R && ./R
//
// Rows: rs64 x T: per iteration and warpgroup, T M tiles of m64n64 (8 k steps each, A from
// registers, B K-major from shared memory; one commit group a tile), then a wait for all of them
// (the tensor cores drain) and, with "+bar", the two warpgroups' barrier (indexer_topk's B1).
// ss64 x T: the same with A from shared memory (B MN-major). ss256 x 1: m64n256, the widest
// shape. Measured (H200, tools/bench/RESULTS.md "2026-12-06 (ninth session)"): rs64 x 2 +bar
// 89.0% of 989 TFLOP/s (1,130 cycles an iteration against 1,024 of tensor work), 98.2% without
// the barrier: the shape and the drain once a block cost indexer_topk ~10%, not the ~60% it
// loses.
#include "device.cuh"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

namespace dev = kiln::backends::cuda::dev;

namespace {

constexpr int kKSteps = 8; // D_I 128
constexpr int kIters = 4096;
constexpr int kSmem = 160 * 1024; // one CTA per SM

enum class Shape { kRs64, kSs64, kSs256 };

template <Shape S, int kTiles, bool kBarrier, int kAlu>
__global__ void __launch_bounds__(256, 1) rate_kernel(float* sink, long long* cycles) {
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint32_t base = (dev::smem_addr(smem) + 1023) / 1024 * 1024;
  const uint64_t b_desc = dev::sw128_desc(base);
  const uint64_t bt_desc = dev::sw128_desc_mn(base, 8192); // B MN-major: 64-column atoms
  const uint64_t a_desc = dev::sw128_desc(base + 64 * 1024);
  uint32_t qa[kKSteps][4];
#pragma unroll
  for (int ks = 0; ks < kKSteps; ++ks)
#pragma unroll
    for (int i = 0; i < 4; ++i) qa[ks][i] = 0x3f803f80u ^ (threadIdx.x + ks + i); // bf16 ~1
  constexpr int kAcc = S == Shape::kSs256 ? 128 : 32;
  float acc[kTiles][kAcc];
#pragma unroll
  for (int t = 0; t < kTiles; ++t)
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[t][i] = 0.f;
  float x[16]; // kAlu: independent FFMA chains issued while the tiles run
#pragma unroll
  for (int i = 0; i < 16; ++i) x[i] = static_cast<float>(threadIdx.x + i);
  __syncthreads();
  const long long start = clock64();
  for (int it = 0; it < kIters; ++it) {
#pragma unroll
    for (int t = 0; t < kTiles; ++t) {
      dev::wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        const uint32_t step = dev::sw128(0, 2 * ks, 64);
        if constexpr (S == Shape::kRs64) {
          dev::wgmma_m64n64k16_rs(acc[t], qa[ks], dev::desc_advance(b_desc, step), true);
        } else if constexpr (S == Shape::kSs64) {
          dev::wgmma_m64n64k16_mn<0>(acc[t], dev::desc_advance(a_desc, step),
                                     dev::desc_advance(bt_desc, 2048 * ks), true);
        } else {
          dev::wgmma_m64k16_bt<256>(acc[t], dev::desc_advance(a_desc, step),
                                    dev::desc_advance(bt_desc, 2048 * ks), true);
        }
      }
      dev::wgmma_commit();
    }
#pragma unroll
    for (int i = 0; i < kAlu; ++i) x[i % 16] = fmaf(x[i % 16], 1.0001f, 0.5f);
    dev::wgmma_wait<0>();
#pragma unroll
    for (int t = 0; t < kTiles; ++t) dev::fence_regs(acc[t]);
    if constexpr (kBarrier) dev::named_barrier_sync(1, 256);
  }
  const long long stop = clock64();
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 16; ++i) s += x[i];
#pragma unroll
  for (int t = 0; t < kTiles; ++t)
#pragma unroll
    for (int i = 0; i < kAcc; ++i) s += acc[t][i];
  sink[blockIdx.x * blockDim.x + threadIdx.x] = s;
  if (threadIdx.x == 0) cycles[blockIdx.x] = stop - start;
}

template <Shape S, int kTiles, bool kBarrier, int kAlu = 0>
void row(const char* name, int sms, float* sink, long long* cycles) {
  auto* kernel = &rate_kernel<S, kTiles, kBarrier, kAlu>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  kernel<<<sms, 256, kSmem>>>(sink, cycles); // warm-up
  cudaEventRecord(a);
  kernel<<<sms, 256, kSmem>>>(sink, cycles);
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", name, cudaGetErrorString(status));
    std::exit(1);
  }
  float ms = 0.f;
  cudaEventElapsedTime(&ms, a, b);
  long long host_cycles = 0;
  cudaMemcpy(&host_cycles, cycles, sizeof host_cycles, cudaMemcpyDeviceToHost);
  const double n = S == Shape::kSs256 ? 256 : 64;
  const double flop_cta_iter = 2.0 /* warpgroups */ * kTiles * kKSteps * 64 * n * 16 * 2;
  const double tflops = flop_cta_iter * kIters * sms / (ms * 1e-3) / 1e12;
  const double per_cycle = flop_cta_iter * kIters / static_cast<double>(host_cycles);
  std::printf(
      "%-24s %9.1f TFLOP/s %6.1f%% of 989   %7.0f FLOP/cycle/SM (%5.1f%% of 4096)  "
      "%6.0f cycles/iteration\n",
      name, tflops, 100.0 * tflops / 989.0, per_cycle, 100.0 * per_cycle / 4096.0,
      static_cast<double>(host_cycles) / kIters);
}

} // namespace

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  float* sink = nullptr;
  long long* cycles = nullptr;
  cudaMalloc(&sink, sizeof(float) * sms * 256);
  cudaMalloc(&cycles, sizeof(long long) * sms);
  row<Shape::kRs64, 2, true>("rs64 x 2 +bar", sms, sink, cycles);
  row<Shape::kRs64, 2, false>("rs64 x 2", sms, sink, cycles);
  row<Shape::kRs64, 3, true>("rs64 x 3 +bar", sms, sink, cycles);
  row<Shape::kSs64, 2, true>("ss64 x 2 +bar", sms, sink, cycles);
  row<Shape::kSs64, 4, true>("ss64 x 4 +bar", sms, sink, cycles);
  row<Shape::kSs256, 1, true>("ss256 x 1 +bar", sms, sink, cycles);
  // CUDA-core work under the tiles (indexer_topk's MMA warps run ~300 instructions a block there):
  // does a wgmma reading A from registers hold back the warp's other instructions? ptxas (CUDA
  // 13.0) spreads these FFMAs between the tiles' wgmma issues, so the rows also time later issues:
  // compare RS with SS, not either with the rows above.
  row<Shape::kRs64, 2, true, 256>("rs64 x 2 +bar +256 FFMA", sms, sink, cycles);
  row<Shape::kSs64, 2, true, 256>("ss64 x 2 +bar +256 FFMA", sms, sink, cycles);
  row<Shape::kRs64, 2, true, 512>("rs64 x 2 +bar +512 FFMA", sms, sink, cycles);
  row<Shape::kSs64, 2, true, 512>("ss64 x 2 +bar +512 FFMA", sms, sink, cycles);
  return 0;
}
