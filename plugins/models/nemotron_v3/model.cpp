#include "model.h"

#include "kiln/nn/checkpoint.h"
#include "kiln/nn/loss.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"
#include "kiln/sdk/ops/linear_cross_entropy.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>

namespace kiln::models::nemotron_v3 {
namespace {

// t shifted left by `d` positions along its token axis, never across a sequence end: position t
// gets t[t + d] when that is in the same sequence (BSHD row, THD document), `fill` otherwise.
// BSHD: [B, S]; THD: [T] with `ends` int64 [T], the end offset of each token's document.
at::Tensor shift_left(const at::Tensor& t, int64_t d, int64_t fill, const at::Tensor& ends) {
  if (!ends.defined()) {
    const int64_t s = t.size(1), keep = std::max<int64_t>(s - d, 0);
    return at::cat(
        {t.narrow(1, s - keep, keep), at::full({t.size(0), s - keep}, fill, t.options())}, 1);
  }
  const int64_t total = t.size(0);
  const at::Tensor index = at::arange(d, total + d, ends.options()); // [T]
  const at::Tensor taken = t.index_select(0, index.clamp_max(std::max<int64_t>(total - 1, 0)));
  return at::where(index < ends, taken, at::full({}, fill, t.options()));
}

} // namespace

Model::Model(Config config, const sdk::ModelOptions& options)
    : config_(std::move(config)),
      options_(options),
      tensor_options_(at::TensorOptions().dtype(options.dtype).device(options.device)),
      embeddings_(config_.vocab_size, config_.hidden_size, tensor_options_),
      norm_f_(config_.hidden_size, config_.layer_norm_epsilon, tensor_options_),
      lm_head_(config_.hidden_size, config_.vocab_size, /*bias=*/false, tensor_options_) {
  KILN_CHECK_USER(
      options.indexer_loss == "none",
      "nemotron_v3: indexer_loss '{}' (model.indexer_loss) is not supported: Nemotron-H "
      "has no sparse-attention indexer; use \"none\"",
      options.indexer_loss);
  KILN_CHECK_USER(options.mtp_loss_scale >= 0,
                  "nemotron_v3: mtp_loss_scale (model.mtp_loss_scale) must be >= 0, found {}",
                  options.mtp_loss_scale);
  KILN_CHECK_USER(options.mtp_loss_scale == 0 || config_.num_nextn_predict_layers > 0,
                  "nemotron_v3: mtp_loss_scale = {} (model.mtp_loss_scale) needs MTP layers, but "
                  "the config has num_nextn_predict_layers = 0; set mtp_loss_scale = 0",
                  options.mtp_loss_scale);
  layers_.reserve(config_.num_hidden_layers());
  for (BlockType type : config_.layers) layers_.emplace_back(config_, type, tensor_options_);
  const int64_t per_depth = static_cast<int64_t>(config_.mtp_layers.size());
  mtp_.reserve(config_.num_mtp_sublayers());
  for (int64_t d = 0; d < config_.num_nextn_predict_layers; ++d) {
    for (int64_t s = 0; s < per_depth; ++s) {
      mtp_.emplace_back(config_, config_.mtp_layers[s], /*fusion=*/s == 0,
                        /*final_norm=*/s == per_depth - 1, tensor_options_);
    }
  }
}

void Model::init_random(uint64_t seed) {
  at::manual_seed(seed);
  const double std = config_.initializer_range;
  nn::init_normal(embeddings_.weight, std);
  for (auto& layer : layers_) layer.init(config_);
  lm_head_.init(std);
  for (auto& sub : mtp_) sub.init(config_);
}

at::Tensor Model::run_block(
    const std::function<at::Tensor(const at::Tensor&, const at::Tensor&, at::Tensor*)>& block,
    const at::Tensor& h, const at::Tensor& embeds, bool is_moe, int64_t layer,
    sdk::ForwardOutput& out) const {
  if (!options_.activation_checkpointing || !c10::GradMode::is_enabled()) {
    at::Tensor load;
    at::Tensor y = block(h, embeds, is_moe ? &load : nullptr);
    if (is_moe) out.expert_load[layer] = load;
    return y;
  }
  // The block's outputs are h and, for MoE, its int64 load (no gradient): the load is read from
  // the first run, the recomputation in backward only rebuilds the graph.
  const auto outputs = nn::checkpoint(
      [block, is_moe](const std::vector<at::Tensor>& in) {
        at::Tensor load;
        at::Tensor y = block(in[0], in[1], is_moe ? &load : nullptr);
        return is_moe ? std::vector<at::Tensor>{y, load} : std::vector<at::Tensor>{y};
      },
      {h, embeds});
  if (is_moe) out.expert_load[layer] = outputs[1];
  return outputs[0];
}

sdk::ForwardOutput Model::forward(const sdk::ForwardInput& input) {
  const c10::Device device = tensor_options_.device();
  const at::Tensor ids = input.input_ids.to(device);
  nn::SequenceLayout layout;
  if (input.cu_seqlens.defined()) {
    KILN_CHECK_USER(ids.dim() == 1, "nemotron_v3: packed input_ids must be [T], found {}",
                    shape_str(ids.sizes()));
    const at::Tensor cu_cpu = input.cu_seqlens.to(at::kCPU, at::kInt);
    KILN_CHECK_USER(cu_cpu.dim() == 1 && cu_cpu.size(0) >= 2 && cu_cpu[0].item<int>() == 0 &&
                        cu_cpu[-1].item<int64_t>() == ids.size(0),
                    "nemotron_v3: cu_seqlens must be int32 [N + 1] running from 0 to T = {}",
                    ids.size(0));
    layout.cu_seqlens = cu_cpu.to(device);
    layout.max_seqlen = (cu_cpu.slice(0, 1) - cu_cpu.slice(0, 0, -1)).max().item<int64_t>();
  } else {
    KILN_CHECK_USER(ids.dim() == 2, "nemotron_v3: input_ids must be [B, S], found {}",
                    shape_str(ids.sizes()));
  }
  // position_ids are not needed: no rope; Mamba2 state and attention restart per document.
  // Blocks capture `layout` by value: activation checkpointing re-runs them in backward.

  sdk::ForwardOutput out;
  at::Tensor h = embeddings_(ids); // [B, S, H] or [T, H]
  for (int64_t i = 0; i < config_.num_hidden_layers(); ++i) {
    const Block& layer = layers_[i];
    h = run_block([&layer, layout](const at::Tensor& x, const at::Tensor&,
                                   at::Tensor* load) { return layer(x, layout, load); },
                  h, at::Tensor(), layer.type == BlockType::kMoe, i, out);
  }
  h = finish(h, input, out);
  if (options_.mtp_loss_scale > 0 && input.labels.defined()) {
    out.aux_losses["mtp"] = mtp_loss(ids, h, input.labels, layout, out);
  }
  return out;
}

at::Tensor Model::finish(const at::Tensor& last, const sdk::ForwardInput& input,
                         sdk::ForwardOutput& out) const {
  const at::Tensor h = norm_f_(last);
  out.hidden = h;
  if (input.compute_logits) {
    const int64_t token_dim = h.dim() - 2;
    at::Tensor kept = h;
    if (input.logits_to_keep > 0 && input.logits_to_keep < h.size(token_dim)) {
      kept = h.narrow(token_dim, h.size(token_dim) - input.logits_to_keep, input.logits_to_keep);
    }
    out.logits = lm_head_(kept).to(at::kFloat); // HF: lm_head in the model dtype, then .float()
  }
  return h;
}

std::unique_ptr<sdk::InferenceCache> Model::make_cache(int64_t batch_size, int64_t max_len) {
  // No positional limit: without rope, max_len only sizes the attention layers' K/V.
  auto cache = std::make_unique<Cache>(layers_, batch_size, max_len, tensor_options_);
  cache->bind(this);
  return cache;
}

sdk::ForwardOutput Model::forward_cached(const sdk::ForwardInput& input,
                                         sdk::InferenceCache& base) {
  auto* cache = dynamic_cast<Cache*>(&base);
  KILN_CHECK_USER(cache != nullptr && cache->made_by(this),
                  "nemotron_v3: forward_cached needs a cache made by this model's make_cache");
  c10::NoGradGuard no_grad; // inference only: the states must not record a graph
  const c10::Device device = tensor_options_.device();
  const nn::CacheStep step = nn::CacheStep::plan(*cache, input, device, "nemotron_v3");
  at::Tensor h = embeddings_(input.input_ids.to(device)); // [B, S, H] or [T, H]
  for (size_t i = 0; i < layers_.size(); ++i) {
    h = layers_[i](h, step, cache->layers[i].kv, cache->layers[i].mamba);
  }
  sdk::ForwardOutput out;
  finish(h, input, out);
  step.commit(*cache);
  return out;
}

at::Tensor Model::mtp_loss(const at::Tensor& ids, const at::Tensor& hidden,
                           const at::Tensor& labels_in, const nn::SequenceLayout& layout,
                           sdk::ForwardOutput& out) const {
  const at::Tensor labels = labels_in.to(ids.device(), at::kLong);
  KILN_CHECK_USER(labels.sizes() == ids.sizes(),
                  "nemotron_v3: labels {} must have input_ids' shape {}", shape_str(labels.sizes()),
                  shape_str(ids.sizes()));
  at::Tensor ends; // THD: each token's document end
  if (layout.packed()) {
    const at::Tensor cu = layout.cu_seqlens.to(at::kLong);
    ends = at::repeat_interleave(cu.slice(0, 1), cu.slice(0, 1) - cu.slice(0, 0, -1));
  }
  // NeMo: the per-depth sums of cross-entropy share the main loss's denominator, the number of
  // valid labels; their sum is weighted by scale / D.
  const at::Tensor valid = (labels != nn::kIgnoreIndex).sum().clamp_min(1).to(at::kFloat);
  const int64_t depths = config_.num_nextn_predict_layers;
  const int64_t per_depth = static_cast<int64_t>(config_.mtp_layers.size());
  at::Tensor h = hidden;
  at::Tensor total = at::zeros({}, hidden.options().dtype(at::kFloat));
  for (int64_t d = 1; d <= depths; ++d) {
    const at::Tensor embeds = embeddings_(shift_left(ids, d, /*fill=*/0, ends));
    for (int64_t s = 0; s < per_depth; ++s) {
      const int64_t j = (d - 1) * per_depth + s;
      const MtpSublayer& sub = mtp_[j];
      h = run_block([&sub, layout](const at::Tensor& x, const at::Tensor& e,
                                   at::Tensor* load) { return sub(x, e, layout, load); },
                    h, s == 0 ? embeds : at::Tensor(), sub.block.type == BlockType::kMoe,
                    config_.num_hidden_layers() + j, out);
    }
    ops::LinearCrossEntropyArgs ce{
        .hidden = h.reshape({-1, h.size(-1)}),
        .weight = lm_head_.weight,
        .labels = shift_left(labels, d, nn::kIgnoreIndex, ends).reshape({-1})};
    ce.reduction = ops::LossReduction::kSum;
    total = total + ops::linear_cross_entropy(ce).loss;
  }
  return total / valid * (options_.mtp_loss_scale / static_cast<double>(depths));
}

nlohmann::json Model::config_json() const {
  nlohmann::json json = config_.json;
  json["dtype"] = dtype_name(c10::typeMetaToScalarType(tensor_options_.dtype())); // as HF saves
  return json;
}

} // namespace kiln::models::nemotron_v3
