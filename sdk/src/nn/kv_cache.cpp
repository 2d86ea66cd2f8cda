#include "kiln/nn/kv_cache.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"
#include "kiln/sdk/ops/attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>

namespace kiln::nn {
namespace {

at::Tensor host_long(const std::vector<int64_t>& values) {
  return at::tensor(at::ArrayRef<int64_t>(values), at::kLong);
}

} // namespace

CacheStep CacheStep::plan(const sdk::InferenceCache& cache, const sdk::ForwardInput& input,
                          c10::Device device, const std::string& who) {
  CacheStep step;
  step.batch = cache.batch_size();
  step.max_len = cache.max_len();
  step.start = cache.lengths();
  step.packed = input.cu_seqlens.defined();
  const at::Tensor& ids = input.input_ids;
  KILN_CHECK_USER(!input.position_ids.defined(),
                  "{}: a cached forward takes its positions from the cache; pass no position_ids",
                  who);
  std::vector<int64_t> positions, slots, offsets = {0};
  if (step.packed) {
    KILN_CHECK_USER(ids.dim() == 1, "{}: packed input_ids must be [T], found {}", who,
                    shape_str(ids.sizes()));
    const at::Tensor cu = input.cu_seqlens.to(at::kCPU, at::kLong).contiguous();
    KILN_CHECK_USER(cu.dim() == 1 && cu.size(0) == step.batch + 1,
                    "{}: cu_seqlens must hold {} documents (one per cache row); found {}", who,
                    step.batch, shape_str(cu.sizes()));
    const int64_t* c = cu.data_ptr<int64_t>();
    KILN_CHECK_USER(c[0] == 0 && c[step.batch] == ids.size(0),
                    "{}: cu_seqlens must run from 0 to T = {}", who, ids.size(0));
    for (int64_t b = 0; b < step.batch; ++b) {
      const int64_t n = c[b + 1] - c[b];
      KILN_CHECK_USER(n >= 1, "{}: document {} of cu_seqlens is empty; every row needs a token",
                      who, b);
      KILN_CHECK_USER(step.start[b] == 0,
                      "{}: packed prefill needs empty cache rows, but row {} holds {} tokens; "
                      "reset() the cache or append with [B, S] input_ids",
                      who, b, step.start[b]);
      step.count.push_back(n);
    }
  } else {
    KILN_CHECK_USER(ids.dim() == 2 && ids.size(0) == step.batch && ids.size(1) >= 1,
                    "{}: input_ids must be [B = {}, S >= 1] for a cache of {} rows (or [T] with "
                    "cu_seqlens); found {}",
                    who, step.batch, step.batch, shape_str(ids.sizes()));
    step.count.assign(static_cast<size_t>(step.batch), ids.size(1));
  }
  for (int64_t b = 0; b < step.batch; ++b) {
    KILN_CHECK_USER(step.start[b] + step.count[b] <= step.max_len,
                    "{}: cache row {} holds {} of max_len {} tokens and cannot take {} more; "
                    "generate fewer tokens or make the cache longer",
                    who, b, step.start[b], step.max_len, step.count[b]);
    for (int64_t i = 0; i < step.count[b]; ++i) {
      positions.push_back(step.start[b] + i);
      slots.push_back(b * step.max_len + step.start[b] + i);
    }
    offsets.push_back(offsets.back() + step.count[b]);
    step.max_count = std::max(step.max_count, step.count[b]);
    step.max_end = std::max(step.max_end, step.start[b] + step.count[b]);
  }
  step.uniform = !step.packed && std::all_of(step.start.begin(), step.start.end(),
                                             [&](int64_t s) { return s == step.start[0]; });
  if (!step.packed && !step.uniform) {
    std::vector<int64_t> keys, key_offsets = {0};
    for (int64_t b = 0; b < step.batch; ++b) {
      for (int64_t p = 0; p < step.start[b] + step.count[b]; ++p)
        keys.push_back(b * step.max_len + p);
      key_offsets.push_back(static_cast<int64_t>(keys.size()));
    }
    step.key_slot = host_long(keys).to(device);
    step.cu_keys = host_long(key_offsets).to(device, at::kInt);
  }
  step.cu_seqlens = host_long(offsets).to(device, at::kInt);
  step.slot = host_long(slots).to(device);
  step.positions = host_long(positions).to(device);
  if (!step.packed) step.positions = step.positions.view({step.batch, ids.size(1)});
  return step;
}

int64_t CacheStep::tokens() const {
  return std::accumulate(count.begin(), count.end(), 0L);
}

TokenCache::TokenCache(int64_t batch, int64_t max_len, at::IntArrayRef shape,
                       const at::TensorOptions& options) {
  std::vector<int64_t> sizes = {batch * max_len};
  sizes.insert(sizes.end(), shape.begin(), shape.end());
  data = at::zeros(sizes, options);
}

void TokenCache::store(const CacheStep& step, const at::Tensor& values) {
  std::vector<int64_t> shape(data.sizes().begin(), data.sizes().end());
  shape[0] = step.tokens();
  data.index_copy_(0, step.slot, values.reshape(shape).to(data.scalar_type()));
}

at::Tensor TokenCache::rows(const CacheStep& step, int64_t len) const {
  return data.unflatten(0, {step.batch, step.max_len}).narrow(1, 0, len);
}

int64_t TokenCache::bytes() const {
  return data.defined() ? static_cast<int64_t>(data.nbytes()) : 0;
}

KvCache::KvCache(int64_t batch, int64_t max_len, int64_t kv_heads, int64_t head_dim,
                 int64_t v_head_dim, const at::TensorOptions& options)
    : k(batch, max_len, {kv_heads, head_dim}, options),
      v(batch, max_len, {kv_heads, v_head_dim}, options) {}

at::Tensor cached_attention(const CacheStep& step, KvCache& kv, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, double softmax_scale) {
  kv.k.store(step, k);
  kv.v.store(step, v);
  ops::AttentionArgs args{.q = q, .softmax_scale = softmax_scale};
  if (step.packed) { // empty rows: the documents attend within themselves
    args.k = k;
    args.v = v;
    args.cu_seqlens = step.cu_seqlens;
    args.max_seqlen = step.max_count;
    return ops::attention(args);
  }
  if (step.uniform) { // every row holds start + S keys: one BSHD problem
    args.k = kv.k.rows(step, step.max_end);
    args.v = kv.v.rows(step, step.max_end);
    return ops::attention(args);
  }
  // Ragged rows: each row's queries against its own keys, packed (a gather of the visible keys).
  args.q = q.flatten(0, 1);
  args.k = kv.k.data.index_select(0, step.key_slot);
  args.v = kv.v.data.index_select(0, step.key_slot);
  args.cu_seqlens = step.cu_seqlens;
  args.max_seqlen = step.max_count;
  args.cu_seqlens_k = step.cu_keys;
  args.max_seqlen_k = step.max_end;
  return ops::attention(args).unflatten(0, {step.batch, step.max_count});
}

at::Tensor gqa_attention_cached(const GqaAttention& attn, const at::Tensor& x,
                                const CacheStep& step, KvCache& kv,
                                const std::pair<at::Tensor, at::Tensor>* rope,
                                ops::RopeStyle style) {
  auto [q, k, v] = attn.project(x, rope, style);
  const at::Tensor o = cached_attention(step, kv, q, k, v, attn.softmax_scale());
  return attn.o_proj(o.flatten(-2));
}

} // namespace kiln::nn
