// Cached decoding: the state a model keeps between generation steps, and the interface a model
// family implements to use it (SDK ABI 1.1).
//
// A cache holds `batch_size()` independent rows (one per sequence being generated), each with room
// for `max_len()` tokens, preallocated once. A family's cache keeps whatever its layers need (K/V,
// MLA latents, conv windows, SSM states) in tensors it owns; this base class keeps the row lengths
// on the host, so that building a step never waits for the device.
//
// A forward through the cache appends tokens to rows:
//   * packed prefill: input_ids int64 [T] with cu_seqlens int32 [B+1]: document n is appended to
//     row n. Every row must be empty (lengths 0): prompts of different lengths are prefilled in
//     one forward without padding.
//   * append: input_ids int64 [B, S]: S tokens are appended to every row (S = 1 when decoding).
//     Rows may hold different lengths (ragged batches); each row's new tokens take the positions
//     after its own last token.
// Positions come from the row lengths (position_ids must be undefined). `reset()` empties every
// row and keeps the memory for the next request.
#pragma once

#include "kiln/sdk/export.h"
#include "kiln/sdk/model.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace kiln::sdk {

class KILN_SDK_API InferenceCache {
 public:
  InferenceCache(int64_t batch_size, int64_t max_len);
  virtual ~InferenceCache();
  InferenceCache(const InferenceCache&) = delete;
  InferenceCache& operator=(const InferenceCache&) = delete;

  int64_t batch_size() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t max_len() const { return max_len_; }
  /// Tokens held by each row.
  const std::vector<int64_t>& lengths() const { return lengths_; }
  /// Empties every row; the memory is kept.
  virtual void reset();
  /// Device memory held by the cache's tensors, in bytes.
  virtual int64_t bytes() const = 0;
  /// Records that row b grew by added[b] tokens (families call it once their layers have stored
  /// a forward's tokens). Throws kiln::Error past max_len().
  void advance(const std::vector<int64_t>& added);
  /// The model whose make_cache made this cache (families set it there and check it in
  /// forward_cached: a cache of another model of the same family has other shapes).
  void bind(const void* model) { owner_ = model; }
  bool made_by(const void* model) const { return owner_ != nullptr && owner_ == model; }

 private:
  const void* owner_ = nullptr;
  int64_t max_len_;
  std::vector<int64_t> lengths_;
};

/// What a model family implements, next to sdk::Model, to generate with a cache. The host finds it
/// with dynamic_cast<CachedDecoding*>(model); a family without it generates without a cache only.
class KILN_SDK_API CachedDecoding {
 public:
  virtual ~CachedDecoding();
  /// A cache of `batch_size` empty rows of `max_len` tokens on the model's device and dtype
  /// (families keep SSM states in float32). Throws kiln::Error when max_len exceeds what the
  /// model supports.
  virtual std::unique_ptr<InferenceCache> make_cache(int64_t batch_size, int64_t max_len) = 0;
  /// Runs `input` as the continuation of the cache's rows (see the top of this header), stores
  /// its tokens in `cache` and advances it. Outputs as Model::forward (no aux losses); `hidden`
  /// and `logits` have input_ids' token layout. Inference only: call it under no-grad.
  virtual ForwardOutput forward_cached(const ForwardInput& input, InferenceCache& cache) = 0;
};

} // namespace kiln::sdk
