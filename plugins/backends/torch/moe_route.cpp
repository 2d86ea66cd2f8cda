// Reference `moe_route`: HF's "noaux_tc" TopkRouter after its GEMM (models.md §1.3), line by line:
//   s = sigmoid(logits.float())  (or softmax(logits.float(), -1))               [N, E] float32
//   c = s + e_score_correction_bias                      selection only, no gradient
//   groups (n_group > 1): score = sum of the top-2 c of each group; the topk_group best groups
//     (topk, sorted=False) are kept, c = -inf elsewhere (HF 5.17; older HF masked with 0.0, which
//     differs only when a kept score + bias is negative)
//   indices = topk(c, top_k, sorted=False).indices       at::topk, so ties fall as in HF
//   w = s.gather(indices); norm_topk_prob: w / (sum(w) + 1e-20); w * routed_scaling_factor
// Everything is float32; the gradient reaches the logits through the gathered unbiased scores
// and the normalisation (autograd through sigmoid/softmax, gather, sum, div), as in HF.
#include "kernels.h"

#include <ATen/ATen.h>

#include <limits>

namespace kiln::backends::torch_ref {

ops::MoeRouteResult moe_route(const ops::MoeRouteArgs& args) {
  const at::Tensor logits = args.logits.to(at::kFloat);
  const at::Tensor scores = args.score_func == ops::MoeScoreFunc::kSigmoid
                                ? at::sigmoid(logits)
                                : at::softmax(logits, -1); // [N, E]

  at::Tensor choice = scores.detach();
  if (args.e_score_correction_bias.defined()) choice = choice + args.e_score_correction_bias;
  if (args.n_group > 1) {
    const int64_t n = choice.size(0);
    const int64_t e = choice.size(1);
    const at::Tensor grouped = choice.view({n, args.n_group, e / args.n_group});
    const at::Tensor group_scores = std::get<0>(grouped.topk(2, -1)).sum(-1); // [N, n_group]
    const at::Tensor kept_groups =
        std::get<1>(group_scores.topk(args.topk_group, -1, /*largest=*/true, /*sorted=*/false));
    const at::Tensor group_mask = at::zeros_like(group_scores).scatter_(1, kept_groups, 1.0);
    const at::Tensor expert_kept = group_mask.unsqueeze(-1).expand_as(grouped).reshape({n, e});
    choice =
        choice.masked_fill(expert_kept.logical_not(), -std::numeric_limits<double>::infinity());
  }
  at::Tensor indices =
      std::get<1>(choice.topk(args.top_k, -1, /*largest=*/true, /*sorted=*/false)); // [N, k]

  at::Tensor weights = scores.gather(1, indices);
  if (args.norm_topk_prob) weights = weights / (weights.sum(-1, /*keepdim=*/true) + 1e-20);
  weights = weights * args.routed_scaling_factor;
  return {std::move(indices), std::move(weights)};
}

} // namespace kiln::backends::torch_ref
