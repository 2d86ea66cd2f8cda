// The cuda backend's wgmma wrappers on the hardware (cuda_wgmma.h): per case, an exact product of
// small integers (bf16, float32 accumulation: no rounding) must equal the CPU's, element for
// element. A failure names the case and so the layout or wrapper the hardware reads differently
// from device.cuh (the emulator's run of the same kernel, kiln-cuda-emu-cuda_wgmma, passes).
// Skips itself without a compute capability 9.0 GPU.
#include "cuda_wgmma.h"
#include "support/cuda_backend.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace kiln {
namespace {

using backends::cuda::kWgmmaCaseCount;
using backends::cuda::kWgmmaCases;

class CudaWgmmaTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (const std::string why = test::cuda_backend_unavailable(); !why.empty()) {
      GTEST_SKIP() << why;
    }
  }
};

TEST_P(CudaWgmmaTest, ExactProductMatchesTheCpu) {
  const auto& w = kWgmmaCases[GetParam()];
  at::manual_seed(GetParam());
  const auto cuda = at::TensorOptions().device(at::kCUDA);
  const at::Tensor a = at::randint(-3, 4, {64, w.k}, cuda.dtype(at::kBFloat16));
  const at::Tensor b = at::randint(-3, 4, {w.k, w.b_width}, cuda.dtype(at::kBFloat16));
  const at::Tensor c = at::full({64, w.n}, NAN, cuda.dtype(at::kFloat));
  const int status = backends::cuda::launch_wgmma_case(
      GetParam(), static_cast<const uint16_t*>(a.data_ptr()),
      static_cast<const uint16_t*>(b.data_ptr()), c.data_ptr<float>(),
      c10::cuda::getCurrentCUDAStream().stream());
  ASSERT_EQ(status, 0) << w.name;
  const at::Tensor expected =
      at::matmul(a.cpu().to(at::kDouble), b.cpu().to(at::kDouble).narrow(1, w.col0, w.n));
  const at::Tensor got = c.cpu().to(at::kDouble);
  const at::Tensor wrong = got.ne(expected);
  const int64_t count = wrong.sum().item<int64_t>();
  if (count > 0) {
    const at::Tensor first = wrong.nonzero()[0];
    const int64_t m = first[0].item<int64_t>(), n = first[1].item<int64_t>();
    ADD_FAILURE() << w.name << " (" << w.op << "): " << count << " of " << 64 * w.n
                  << " elements differ; first C[" << m << ", " << n
                  << "] = " << got[m][n].item<double>() << ", expected "
                  << expected[m][n].item<double>();
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaWgmmaTest, ::testing::Range(0, kWgmmaCaseCount));

} // namespace
} // namespace kiln
