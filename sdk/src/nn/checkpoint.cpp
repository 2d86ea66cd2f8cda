#include "kiln/nn/checkpoint.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace kiln::nn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The block travels to backward inside the context as a capsule.
struct BlockHolder : torch::CustomClassHolder {
  explicit BlockHolder(CheckpointFn f) : fn(std::move(f)) {}
  CheckpointFn fn;
};

bool differentiable(const at::Tensor& t) {
  return t.defined() && (t.is_floating_point() || t.is_complex());
}

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  // `inputs` are all defined; `fn` takes them as they are (see checkpoint() below).
  static variable_list forward(AutogradContext* ctx, const CheckpointFn& fn,
                               at::TensorList inputs_list) {
    const variable_list inputs = inputs_list.vec();
    // Function::apply runs this with recording off: nothing of the block's graph is kept.
    variable_list outputs = fn(inputs);
    ctx->saved_data["fn"] = at::IValue::make_capsule(c10::make_intrusive<BlockHolder>(fn));
    ctx->save_for_backward(inputs);
    for (const auto& out : outputs) {
      if (out.defined() && !differentiable(out)) ctx->mark_non_differentiable({out});
    }
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto holder =
        c10::static_intrusive_pointer_cast<BlockHolder>(ctx->saved_data["fn"].toCapsule());
    variable_list inputs = ctx->get_saved_variables();
    for (auto& input : inputs) {
      if (differentiable(input)) input = input.detach().requires_grad_(true);
    }
    variable_list outputs;
    {
      at::AutoGradMode recording(true);
      outputs = holder->fn(inputs);
    }
    variable_list roots;
    variable_list grads;
    for (size_t i = 0; i < outputs.size() && i < grad_outputs.size(); ++i) {
      if (!outputs[i].defined() || !outputs[i].requires_grad() || !grad_outputs[i].defined())
        continue;
      roots.push_back(outputs[i]);
      grads.push_back(grad_outputs[i]);
    }
    if (!roots.empty()) torch::autograd::backward(roots, grads);
    variable_list input_grads{at::Tensor()}; // for `fn`
    input_grads.reserve(inputs.size() + 1);
    for (const auto& input : inputs) {
      input_grads.push_back(differentiable(input) ? input.grad() : at::Tensor());
    }
    return input_grads;
  }
};

} // namespace

std::vector<at::Tensor> checkpoint(const CheckpointFn& fn, const std::vector<at::Tensor>& inputs) {
  if (!c10::GradMode::is_enabled()) return fn(inputs);
  // The autograd node takes defined tensors only, plus one empty tensor that requires grad: the
  // block's parameters are captures, not inputs, and must get gradients even when no input
  // requires grad (the first block after a frozen embedding, say).
  std::vector<int64_t> slots; // slot in `inputs` of each node input
  variable_list node_inputs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) continue;
    slots.push_back(static_cast<int64_t>(i));
    node_inputs.push_back(inputs[i]);
  }
  node_inputs.push_back(at::empty({0}, at::kFloat).requires_grad_(true));
  const size_t arity = inputs.size();
  CheckpointFn block = [fn, slots, arity](const variable_list& given) {
    variable_list full(arity);
    for (size_t i = 0; i < slots.size(); ++i) full[slots[i]] = given[i];
    return fn(full);
  };
  return CheckpointFunction::apply(block, at::TensorList(node_inputs));
}

at::Tensor checkpoint(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x) {
  return checkpoint([fn](const std::vector<at::Tensor>& in) { return std::vector{fn(in[0])}; },
                    std::vector{x})[0];
}

} // namespace kiln::nn
