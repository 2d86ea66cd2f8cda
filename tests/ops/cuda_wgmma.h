// One-warpgroup checks of the cuda backend's wgmma wrappers (plugins/backends/cuda/device.cuh) in
// the operand layouts its kernels use: a small exact product A B per case, its operands stored in
// shared memory by sw128(), read through sw128_desc / sw128_desc_mn, its accumulator written out
// by the documented m64nNk16 fragment mapping. Run on a GPU by kiln-cuda-wgmma-gpu-test and on the
// CPU by tools/cuda_emu (`run cuda_wgmma`): a layout the emulator and the kernels read the same
// wrong way passes the emulator and fails on the hardware, case by case. Plain C++ (no CUDA
// header): the .cu defines the launcher.
#pragma once

#include <cstdint>

namespace kiln::backends::cuda {

struct WgmmaCase {
  const char* name;
  int n;          // the wgmma N: columns of C
  int k;          // reduction length (k / 16 wgmma steps)
  int b_width;    // columns of the stored B tile (>= col0 + n)
  int col0;       // first column of B the product reads
  bool a_mn;      // A stored MN-major (transposed, tnspA); else K-major
  bool b_mn;      // B stored MN-major (tnspB); else K-major (rows of B^T)
  bool a_regs;    // A from registers (m16n8k16 A fragments per warp), not shared memory
  const char* op; // the device.cuh wrapper it runs
};

inline constexpr WgmmaCase kWgmmaCases[] = {
    {"k-major A and B, n 32, k 128, B rows 32-63 of 64", 32, 128, 64, 32, false, false, false,
     "wgmma_m64n32k16"},
    {"k-major A, mn-major B, n 64, k 64, B columns 64-127 of 128", 64, 64, 128, 64, false, true,
     false, "wgmma_m64k16_bt<64>"},
    {"k-major A, mn-major B over 4 atoms, n 256, k 64, B columns 256-511 of 512", 256, 64, 512, 256,
     false, true, false, "wgmma_m64k16_bt<256>"},
    {"mn-major A and B, n 64, k 64", 64, 64, 64, 0, true, true, false, "wgmma_m64k16_tt<64>"},
    {"A in registers, k-major B, n 64, k 128, B rows 64-127 of 128", 64, 128, 128, 64, false, false,
     true, "wgmma_m64n64k16_rs"},
};
inline constexpr int kWgmmaCaseCount = sizeof(kWgmmaCases) / sizeof(kWgmmaCases[0]);

/// C [64, n] float32 (row-major) = A [64, k] x B [k, b_width][:, col0 : col0 + n] of case `which`
/// (A, B bf16 bit patterns, row-major, device memory), on `stream` (a cudaStream_t; null = the
/// default stream). Returns a cudaError_t.
int launch_wgmma_case(int which, const uint16_t* a, const uint16_t* b, float* c, void* stream);

} // namespace kiln::backends::cuda
