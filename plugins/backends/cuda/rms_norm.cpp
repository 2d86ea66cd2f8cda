// `rms_norm` on the cuda backend: the kernels of rms_norm.cu (forward saves the float32 rstd of
// each row; backward reads it back) behind an autograd Function. x is viewed as rows of its last
// dimension (a copy only where no such view exists or its rows are not 16-byte aligned).
//
// supports(): a compute capability 9.0 GPU (runs_on), bfloat16 x and weight (y is then bf16, as
// the contract's promotion gives), a last dimension the kernels take (rms_norm_supported: a
// multiple of 8, at most 8192); others go to the reference.
#include "kernels.h"
#include "launch.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

namespace kiln::backends::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps) {
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t dim = x.size(-1);
    const at::Tensor rows = rows_16b(x.reshape({-1, dim}));
    const at::Tensor w = rows_16b(weight);
    at::Tensor y = at::empty(rows.sizes(), x.options());
    at::Tensor rstd = at::empty({rows.size(0)}, x.options().dtype(at::kFloat));
    RmsNormParams p;
    p.x = rows.data_ptr();
    p.weight = w.data_ptr();
    p.y = y.data_ptr();
    p.rstd = rstd.data_ptr<float>();
    p.rows = rows.size(0);
    p.x_row = rows.stride(0);
    p.dim = static_cast<int>(dim);
    p.eps = static_cast<float>(eps);
    check_launch(launch_rms_norm_fwd(p, c10::cuda::getCurrentCUDAStream()), "rms_norm forward");
    ctx->save_for_backward({rows, w, rstd});
    ctx->saved_data["sizes"] = x.sizes().vec();
    return y.view(x.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& rows = saved[0];
    const at::Tensor& w = saved[1];
    const c10::cuda::CUDAGuard guard(rows.device());
    const int64_t dim = rows.size(1);
    const at::Tensor dy = rows_16b(grads[0].to(rows.scalar_type()).reshape({-1, dim}));
    at::Tensor dx = at::empty(rows.sizes(), rows.options());
    at::Tensor d_weight = at::empty(w.sizes(), w.options());
    RmsNormParams p;
    p.x = rows.data_ptr();
    p.weight = w.data_ptr();
    p.rstd = saved[2].data_ptr<float>();
    p.dy = dy.data_ptr();
    p.dx = dx.data_ptr();
    p.d_weight = d_weight.data_ptr();
    p.rows = rows.size(0);
    p.x_row = rows.stride(0);
    p.dy_row = dy.stride(0);
    p.dim = static_cast<int>(dim);
    p.partial_rows = rms_norm_bwd_ctas(p);
    at::Tensor partial =
        at::empty({std::max(p.partial_rows, 1), dim}, rows.options().dtype(at::kFloat));
    p.d_weight_partial = partial.data_ptr<float>();
    check_launch(launch_rms_norm_bwd(p, c10::cuda::getCurrentCUDAStream()), "rms_norm backward");
    return {dx.view(ctx->saved_data["sizes"].toIntVector()), d_weight, at::Tensor()};
  }
};

} // namespace

bool rms_norm_supports(const ops::RmsNormArgs& a) {
  return a.x.is_cuda() && a.x.scalar_type() == at::kBFloat16 &&
         a.weight.scalar_type() == at::kBFloat16 && runs_on(a.x.device()) &&
         rms_norm_supported(a.x.size(-1));
}

at::Tensor rms_norm(const ops::RmsNormArgs& a) {
  return RmsNormFunction::apply(a.x, a.weight, a.eps);
}

} // namespace kiln::backends::cuda
