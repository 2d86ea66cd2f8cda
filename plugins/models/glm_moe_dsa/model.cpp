#include "model.h"

#include "kiln/nn/checkpoint.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

namespace kiln::models::glm_moe_dsa {

Model::Model(Config config, const sdk::ModelOptions& options)
    : config_(std::move(config)),
      options_(options),
      tensor_options_(at::TensorOptions().dtype(options.dtype).device(options.device)),
      embed_tokens_(config_.vocab_size, config_.hidden_size, tensor_options_),
      norm_(config_.hidden_size, config_.rms_norm_eps, tensor_options_),
      lm_head_(config_.hidden_size, config_.vocab_size, /*bias=*/false, tensor_options_),
      rotary_(config_.qk_rope_head_dim, config_.rope_theta, ops::RopeStyle::kInterleaved,
              options.device) {
  KILN_CHECK_USER(options.mtp_loss_scale == 0.0,
                  "glm_moe_dsa: mtp_loss_scale = {} (model.mtp_loss_scale), but this family does "
                  "not train its MTP layer (HF 5.17 never runs it; its weights are only kept); "
                  "set it to 0",
                  options.mtp_loss_scale);
  KILN_CHECK_USER(options.indexer_loss == "none" || options.indexer_loss == "kl",
                  "glm_moe_dsa: unknown indexer_loss '{}' (model.indexer_loss); expected \"none\" "
                  "or \"kl\" (the DeepSeek-V3.2 KL to the main attention)",
                  options.indexer_loss);
  indexer_kl_ = options.indexer_loss == "kl";
  layers_.reserve(config_.num_hidden_layers);
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    layers_.emplace_back(config_, i, tensor_options_);
  }
}

void Model::init_random(uint64_t seed) {
  at::manual_seed(seed);
  const double std = config_.initializer_range;
  nn::init_normal(embed_tokens_.weight, std);
  for (auto& layer : layers_) layer.init(std);
  lm_head_.init(std);
}

LayerResult Model::run_layer(size_t index, const at::Tensor& h, const TokenLayout& layout,
                             const std::pair<at::Tensor, at::Tensor>& rope,
                             const at::Tensor& topk) {
  const DecoderLayer* layer = &layers_[index];
  const bool kl = indexer_kl_ && layer->self_attn.indexer.has_value();
  if (!options_.activation_checkpointing || !c10::GradMode::is_enabled()) {
    return (*layer)(h, layout, rope, topk, kl);
  }
  // Outputs travel as a list: hidden, topk, then the expert load (MoE layers) and the indexer
  // loss (when asked for), so that checkpoint() can recompute all of them in backward.
  auto block = [layer, layout, rope, kl](const std::vector<at::Tensor>& in) {
    LayerResult r = (*layer)(in[0], layout, rope, in[1], kl);
    std::vector<at::Tensor> out{r.hidden, r.topk};
    if (r.expert_load.defined()) out.push_back(r.expert_load);
    if (r.indexer_kl.defined()) out.push_back(r.indexer_kl);
    return out;
  };
  const std::vector<at::Tensor> out = nn::checkpoint(block, {h, topk});
  LayerResult r{.hidden = out[0], .topk = out[1]};
  size_t next = 2;
  if (layer->moe) r.expert_load = out[next++];
  if (kl) r.indexer_kl = out[next++];
  return r;
}

sdk::ForwardOutput Model::forward(const sdk::ForwardInput& input) {
  const auto device = tensor_options_.device();
  const at::Tensor ids = input.input_ids.to(device);
  TokenLayout layout;
  at::Tensor positions = input.position_ids;
  std::vector<int64_t> batch_shape; // [B, S] for BSHD: the shape to restore at the end
  if (input.cu_seqlens.defined()) {
    KILN_CHECK_USER(ids.dim() == 1, "glm_moe_dsa: packed input_ids must be [T], found {}",
                    shape_str(ids.sizes()));
    const at::Tensor cu = input.cu_seqlens.to(at::kCPU, at::kLong).contiguous();
    const int64_t total = ids.size(0);
    KILN_CHECK_USER(cu.dim() == 1 && cu.size(0) >= 2 && cu[0].item<int64_t>() == 0 &&
                        cu[-1].item<int64_t>() == total &&
                        (cu.slice(0, 1) >= cu.slice(0, 0, -1)).all().item<bool>(),
                    "glm_moe_dsa: cu_seqlens must run from 0 to T = {}, non-decreasing; found {}",
                    total, shape_str(cu.sizes()));
    layout.cu_seqlens = cu.to(device, at::kInt);
    layout.max_len = (cu.slice(0, 1) - cu.slice(0, 0, -1)).max().item<int64_t>();
    if (!positions.defined()) positions = nn::positions_from_cu_seqlens(cu, total);
  } else {
    KILN_CHECK_USER(ids.dim() == 2, "glm_moe_dsa: input_ids must be [B, S], found {}",
                    shape_str(ids.sizes()));
    batch_shape = ids.sizes().vec();
    const int64_t rows = ids.size(0), seq = ids.size(1);
    layout.cu_seqlens = at::arange(0, rows * seq + 1, std::max<int64_t>(seq, 1),
                                   at::TensorOptions().dtype(at::kInt).device(device));
    layout.max_len = seq;
    if (!positions.defined()) positions = at::arange(seq, at::kLong).expand({rows, seq});
  }
  const int64_t tokens = ids.numel();
  const auto rope = rotary_(positions.to(device).reshape({-1})); // float32 [N, R/2] each

  at::Tensor topk = seed_topk(input, tokens); // the running IndexShare selection

  sdk::ForwardOutput out;
  at::Tensor h = embed_tokens_(ids.reshape({-1})); // [N, hidden]
  at::Tensor indexer_kl;
  for (size_t i = 0; i < layers_.size(); ++i) {
    LayerResult r = run_layer(i, h, layout, rope, topk);
    h = r.hidden;
    topk = r.topk;
    if (r.expert_load.defined()) out.expert_load[static_cast<int64_t>(i)] = r.expert_load;
    if (r.indexer_kl.defined()) {
      indexer_kl = indexer_kl.defined() ? indexer_kl + r.indexer_kl : r.indexer_kl;
    }
  }
  finish(h, input, batch_shape, out);
  if (topk.defined()) out.extra[kTopkKey] = topk;
  if (indexer_kl.defined()) {
    out.aux_losses[kIndexerKlKey] = indexer_kl * options_.indexer_loss_coef;
  }
  return out;
}

at::Tensor Model::seed_topk(const sdk::ForwardInput& input, int64_t tokens) const {
  auto it = input.extra.find(kTopkKey);
  if (it == input.extra.end()) return {};
  const at::Tensor& topk = it->second;
  KILN_CHECK_USER(topk.scalar_type() == at::kInt && topk.dim() == 3 && topk.size(0) == tokens &&
                      topk.size(1) == 1,
                  "glm_moe_dsa: extra[\"{}\"] must be int32 [N = {}, 1, K] (rows of the "
                  "flattened tokens); found {} {}",
                  kTopkKey, tokens, dtype_name(topk.scalar_type()), shape_str(topk.sizes()));
  return topk.to(tensor_options_.device());
}

void Model::finish(at::Tensor h, const sdk::ForwardInput& input, at::IntArrayRef batch_shape,
                   sdk::ForwardOutput& out) const {
  h = norm_(h);
  if (!batch_shape.empty()) h = h.view({batch_shape[0], batch_shape[1], config_.hidden_size});
  if (input.compute_logits) {
    const int64_t token_dim = h.dim() - 2;
    at::Tensor kept = h;
    if (input.logits_to_keep > 0 && input.logits_to_keep < h.size(token_dim)) {
      kept = h.narrow(token_dim, h.size(token_dim) - input.logits_to_keep, input.logits_to_keep);
    }
    out.logits = lm_head_(kept);
  }
  out.hidden = h;
}

std::unique_ptr<sdk::InferenceCache> Model::make_cache(int64_t batch_size, int64_t max_len) {
  auto cache = std::make_unique<Cache>(config_, batch_size, max_len, tensor_options_);
  cache->bind(this);
  return cache;
}

namespace {

// The TokenLayout of a cached forward (indexer.h): cache row b is document b, holding its
// start + count keys from flat row b * max_len on; the new tokens sit at step.slot.
TokenLayout cached_layout(const nn::CacheStep& step) {
  std::vector<int64_t> ends = {0}, starts;
  for (int64_t b = 0; b <= step.batch; ++b) {
    starts.push_back(b * step.max_len);
    if (b < step.batch) ends.push_back(ends.back() + step.start[b] + step.count[b]);
  }
  const auto device = step.slot.device();
  TokenLayout layout;
  layout.cu_seqlens = at::tensor(ends, at::kLong).to(device, at::kInt);
  layout.starts = at::tensor(starts, at::kLong).to(device, at::kInt);
  layout.query_rows = step.slot.to(at::kInt);
  layout.max_len = step.max_end;
  return layout;
}

} // namespace

sdk::ForwardOutput Model::forward_cached(const sdk::ForwardInput& input,
                                         sdk::InferenceCache& base) {
  auto* cache = dynamic_cast<Cache*>(&base);
  KILN_CHECK_USER(cache != nullptr && cache->made_by(this),
                  "glm_moe_dsa: forward_cached needs a cache made by this model's make_cache");
  const auto device = tensor_options_.device();
  const nn::CacheStep step = nn::CacheStep::plan(*cache, input, device, "glm_moe_dsa");
  const TokenLayout layout = cached_layout(step);
  const auto rope = rotary_(step.positions.reshape({-1})); // float32 [N, R/2] each
  const at::Tensor ids = input.input_ids.to(device);
  at::Tensor topk = seed_topk(input, step.tokens()); // flat cache rows

  sdk::ForwardOutput out;
  at::Tensor h = embed_tokens_(ids.reshape({-1})); // [N, hidden]
  for (size_t i = 0; i < layers_.size(); ++i) {
    LayerResult r = layers_[i](h, layout, rope, topk, step, cache->layers[i]);
    h = r.hidden;
    topk = r.topk;
    if (r.expert_load.defined()) out.expert_load[static_cast<int64_t>(i)] = r.expert_load;
  }
  finish(h, input, ids.dim() == 2 ? ids.sizes() : at::IntArrayRef{}, out);
  if (topk.defined()) out.extra[kTopkKey] = topk;
  step.commit(*cache);
  return out;
}

nlohmann::json Model::config_json() const {
  nlohmann::json json = config_.json;
  json["dtype"] = dtype_name(c10::typeMetaToScalarType(tensor_options_.dtype())); // as HF saves
  return json;
}

} // namespace kiln::models::glm_moe_dsa
