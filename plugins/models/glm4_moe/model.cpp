#include "model.h"

#include "kiln/nn/checkpoint.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

namespace kiln::models::glm4_moe {

Model::Model(Config config, const sdk::ModelOptions& options)
    : config_(std::move(config)),
      options_(at::TensorOptions().dtype(options.dtype).device(options.device)),
      embed_tokens_(config_.vocab_size, config_.hidden_size, options_),
      norm_(config_.hidden_size, config_.rms_norm_eps, options_),
      lm_head_(config_.hidden_size, config_.vocab_size, /*bias=*/false, options_),
      rotary_(config_.rotary_dim(), config_.rope_theta, ops::RopeStyle::kHalf, options.device) {
  KILN_CHECK_USER(options.mtp_loss_scale == 0.0,
                  "glm4_moe: model.mtp_loss_scale = {}: this family does not train its MTP layers "
                  "(HF's Glm4MoeForCausalLM skips them too); set it to 0",
                  options.mtp_loss_scale);
  KILN_CHECK_USER(options.indexer_loss == "none",
                  "glm4_moe: model.indexer_loss = \"{}\": this family has no DSA indexer; set it "
                  "to \"none\"",
                  options.indexer_loss);
  activation_checkpointing_ = options.activation_checkpointing;
  layers_.reserve(config_.num_hidden_layers);
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i)
    layers_.emplace_back(config_, i, options_);
}

void Model::init_random(uint64_t seed) {
  at::manual_seed(seed);
  const double std = config_.initializer_range;
  nn::init_normal(embed_tokens_.weight, std);
  for (auto& layer : layers_) layer.init(std);
  lm_head_.init(std);
}

sdk::ForwardOutput Model::forward(const sdk::ForwardInput& input) {
  const at::Tensor ids = input.input_ids.to(options_.device());
  nn::SequenceLayout layout;
  at::Tensor positions = input.position_ids;
  if (input.cu_seqlens.defined()) {
    KILN_CHECK_USER(ids.dim() == 1, "glm4_moe: packed input_ids must be [T], found {} dims",
                    ids.dim());
    const at::Tensor cu_cpu = input.cu_seqlens.to(at::kCPU, at::kInt);
    KILN_CHECK_USER(cu_cpu.dim() == 1 && cu_cpu.size(0) >= 2 && cu_cpu[0].item<int>() == 0 &&
                        cu_cpu[-1].item<int64_t>() == ids.size(0),
                    "glm4_moe: cu_seqlens must run from 0 to T = {}", ids.size(0));
    layout.cu_seqlens = cu_cpu.to(options_.device());
    layout.max_seqlen = (cu_cpu.slice(0, 1) - cu_cpu.slice(0, 0, -1)).max().item<int64_t>();
    if (!positions.defined()) positions = nn::positions_from_cu_seqlens(cu_cpu, ids.size(0));
  } else {
    KILN_CHECK_USER(ids.dim() == 2, "glm4_moe: input_ids must be [B, S], found {} dims", ids.dim());
    if (!positions.defined()) positions = at::arange(ids.size(1), at::kLong).expand(ids.sizes());
  }
  const auto rope = rotary_(positions.to(options_.device())); // fp32 [..., R/2] each

  sdk::ForwardOutput out;
  at::Tensor h = embed_tokens_(ids); // [B, S, H] or [T, H]
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DecoderLayer& layer = layers_[i];
    at::Tensor load;
    if (activation_checkpointing_ && c10::GradMode::is_enabled()) {
      // The block runs again in backward: it captures copies, not references to this frame,
      // and reports its expert load only the first time.
      auto first_load = std::make_shared<at::Tensor>();
      h = nn::checkpoint(
          [&layer, layout, rope, first_load](const at::Tensor& x) {
            at::Tensor* load_out = first_load->defined() ? nullptr : first_load.get();
            return layer(x, layout, rope, load_out);
          },
          h);
      load = *first_load;
    } else {
      h = layer(h, layout, rope, layer.moe ? &load : nullptr);
    }
    if (load.defined()) out.expert_load[static_cast<int64_t>(i)] = load;
  }
  finish(h, input, out);
  return out;
}

std::unique_ptr<sdk::InferenceCache> Model::make_cache(int64_t batch_size, int64_t max_len) {
  auto cache = std::make_unique<Cache>(config_, batch_size, max_len, options_);
  cache->bind(this);
  return cache;
}

sdk::ForwardOutput Model::forward_cached(const sdk::ForwardInput& input,
                                         sdk::InferenceCache& base) {
  auto* cache = dynamic_cast<Cache*>(&base);
  KILN_CHECK_USER(cache != nullptr && cache->made_by(this),
                  "glm4_moe: forward_cached needs a cache made by this model's make_cache");
  const nn::CacheStep step = nn::CacheStep::plan(*cache, input, options_.device(), "glm4_moe");
  const auto rope = rotary_(step.positions);
  at::Tensor h = embed_tokens_(input.input_ids.to(options_.device()));
  for (size_t i = 0; i < layers_.size(); ++i) h = layers_[i](h, step, cache->layers[i], rope);
  sdk::ForwardOutput out;
  finish(h, input, out);
  step.commit(*cache);
  return out;
}

void Model::finish(at::Tensor h, const sdk::ForwardInput& input, sdk::ForwardOutput& out) const {
  h = norm_(h);
  const int64_t token_dim = h.dim() - 2;
  at::Tensor kept = h;
  if (input.logits_to_keep > 0 && input.logits_to_keep < h.size(token_dim)) {
    kept = h.narrow(token_dim, h.size(token_dim) - input.logits_to_keep, input.logits_to_keep);
  }
  if (input.compute_logits) out.logits = lm_head_(kept);
  out.hidden = h;
}

nlohmann::json Model::config_json() const {
  nlohmann::json json = config_.json;
  json["dtype"] = dtype_name(c10::typeMetaToScalarType(options_.dtype())); // as HF saves it
  return json;
}

} // namespace kiln::models::glm4_moe
