// The cuda backend's adamw (adamw.cu) against the torch reference (ATen's fused AdamW): the same
// parameters, gradients and state through ops::adamw with each backend forced strictly, three
// steps with weight decay and clipping. Both compute in float32 in the same order, so the
// masters and moments agree to float32 rounding (1e-6 of their largest magnitude) and the bf16
// parameters are each the bf16 rounding of their own master; a float32 parameter that is its own
// master likewise. The kernel declines what it cannot load 16 bytes at a time (a view with gaps,
// an unaligned start) and float16 parameters: under strict dispatch that is an error naming the
// backend, otherwise the reference runs. Under `auto` the update runs once, untimed. Every test
// skips itself without a GPU.
#include "kiln/sdk/error.h"
#include "kiln/sdk/ops.h"
#include "support/cuda_op_test.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kiln {
namespace {

const std::string kBackend = test::cuda_backend_under_test(); // "cuda" unless told

const c10::Device kCuda(c10::DeviceType::CUDA, 0);

using CudaAdamwTest = test::CudaOpTest;

struct State {
  at::Tensor param, master, exp_avg, exp_avg_sq;
  State clone() const {
    return {param.clone(), master.defined() ? master.clone() : at::Tensor(), exp_avg.clone(),
            exp_avg_sq.clone()};
  }
};

State make_state(std::vector<int64_t> sizes, at::ScalarType dtype, bool master) {
  const at::Tensor init = at::randn(sizes, at::TensorOptions().device(kCuda));
  State s{init.to(dtype), at::Tensor(), at::zeros_like(init), at::zeros_like(init)};
  if (master) s.master = s.param.to(at::kFloat);
  return s;
}

// Update `step` of `s` with `grad` under the dispatcher's current selection.
void update(State& s, const at::Tensor& grad, int64_t step, double grad_scale) {
  ops::adamw({.param = s.param,
              .grad = grad,
              .master = s.master,
              .exp_avg = s.exp_avg,
              .exp_avg_sq = s.exp_avg_sq,
              .lr = 1e-2,
              .beta1 = 0.9,
              .beta2 = 0.95,
              .weight_decay = 0.1,
              .step = step,
              .grad_scale = grad_scale});
}

// Updates of `s` under `backend` (strict), one per gradient of `grads`.
void run_steps(State& s, const std::vector<at::Tensor>& grads, const std::string& backend,
               double grad_scale) {
  sdk::Dispatcher::global().configure({.default_backend = backend, .strict = true});
  for (size_t i = 0; i < grads.size(); ++i) {
    update(s, grads[i], static_cast<int64_t>(i) + 1, grad_scale);
  }
  test::expect_ran_on("adamw", backend);
}

void expect_backends_agree(const State& init, double grad_scale) {
  std::vector<at::Tensor> grads;
  for (int i = 0; i < 3; ++i)
    grads.push_back(at::randn_like(init.param, at::kFloat).mul_(1e-2).to(init.param.scalar_type()));
  State ref = init.clone(), got = init.clone();
  run_steps(ref, grads, "torch", grad_scale);
  run_steps(got, grads, kBackend, grad_scale);
  const at::Tensor& ref_w = ref.master.defined() ? ref.master : ref.param;
  const at::Tensor& got_w = got.master.defined() ? got.master : got.param;
  EXPECT_TRUE(test::near_max(got_w, ref_w, 1e-6)) << "master";
  EXPECT_TRUE(test::near_max(got.exp_avg, ref.exp_avg, 1e-6)) << "exp_avg";
  EXPECT_TRUE(test::near_max(got.exp_avg_sq, ref.exp_avg_sq, 1e-6)) << "exp_avg_sq";
  if (got.master.defined()) {
    EXPECT_TRUE(at::equal(got.param, got.master.to(got.param.scalar_type())));
  }
  EXPECT_FALSE(at::equal(got.param, init.param)); // it moved
}

TEST_F(CudaAdamwTest, Bf16ParameterWithMasterMatchesTheReference) {
  at::manual_seed(0);
  expect_backends_agree(make_state({1003}, at::kBFloat16, true), 1.0); // 3 past the last vector
  expect_backends_agree(make_state({2048, 1536}, at::kBFloat16, true), 0.3);
  expect_backends_agree(make_state({5}, at::kBFloat16, true), 1.0); // no whole vector
}

TEST_F(CudaAdamwTest, Float32ParametersMatchTheReference) {
  at::manual_seed(1);
  expect_backends_agree(make_state({777, 33}, at::kFloat, false), 2.0); // its own master
  expect_backends_agree(make_state({64, 8}, at::kFloat, true), 1.0);    // and with one
}

TEST_F(CudaAdamwTest, DeclinesWhatItCannotLoadAndTheReferenceRunsIt) {
  at::manual_seed(2);
  const auto declined = [](const State& s, const at::Tensor& grad) {
    sdk::Dispatcher::global().configure({.default_backend = kBackend, .strict = true});
    ops::AdamwArgs a{.param = s.param,
                     .grad = grad,
                     .master = s.master,
                     .exp_avg = s.exp_avg,
                     .exp_avg_sq = s.exp_avg_sq};
    EXPECT_THROW(ops::adamw(a), Error);
    sdk::Dispatcher::global().configure({.default_backend = kBackend});
    ops::adamw(a); // falls back
    test::expect_ran_on("adamw", "torch");
  };
  const State wide = make_state({16, 24}, at::kBFloat16, true);
  const auto narrow = [](const at::Tensor& t) { return t.narrow(1, 0, 16); }; // rows with gaps
  declined({narrow(wide.param), narrow(wide.master), narrow(wide.exp_avg), narrow(wide.exp_avg_sq)},
           at::randn({16, 16}, at::TensorOptions().device(kCuda)).to(at::kBFloat16));
  const State flat = make_state({65}, at::kBFloat16, true);
  const auto shifted = [](const at::Tensor& t) { return t.narrow(0, 1, 64); }; // 2-byte offset
  declined(
      {shifted(flat.param), shifted(flat.master), shifted(flat.exp_avg), shifted(flat.exp_avg_sq)},
      at::randn({64}, at::TensorOptions().device(kCuda)).to(at::kBFloat16));
  const State half = make_state({64}, at::kHalf, true);
  declined(half, at::randn({64}, at::TensorOptions().device(kCuda)).to(at::kHalf));
}

TEST_F(CudaAdamwTest, AutoRunsTheUpdateOnceUntimed) {
  at::manual_seed(3);
  const State init = make_state({4096}, at::kBFloat16, true);
  const std::vector<at::Tensor> grads{
      at::randn({4096}, at::TensorOptions().device(kCuda)).to(at::kBFloat16)};
  State under_auto = init.clone(), once = init.clone();
  sdk::Dispatcher::global().configure({.default_backend = "auto"});
  update(under_auto, grads[0], 1, 1.0);
  // The highest-priority cuda build (cuda and cuda_variant tie; the name orders them), untimed.
  const auto resolved = sdk::Dispatcher::global().resolved();
  ASSERT_EQ(resolved.size(), 1u);
  const std::string chosen = resolved[0].chosen;
  EXPECT_NE(chosen, "torch");
  EXPECT_NE(resolved[0].note.find("not consulted"), std::string::npos) << resolved[0].note;
  run_steps(once, grads, chosen, 1.0);
  EXPECT_TRUE(at::equal(under_auto.master, once.master)); // one update, not four
  EXPECT_TRUE(at::equal(under_auto.exp_avg, once.exp_avg));
}

} // namespace
} // namespace kiln
