// Out-of-line virtual destructors: they anchor each interface's vtable and typeinfo in
// libkiln-sdk.so, so the host and every plugin agree on one copy.
#include "kiln/sdk/cache.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/model.h"
#include "kiln/sdk/registrar.h"
#include "kiln/sdk/weights.h"

#include <algorithm>

namespace kiln::sdk {

Policy::~Policy() = default;
Model::~Model() = default;
Registrar::~Registrar() = default;
WeightSource::~WeightSource() = default;
CachedDecoding::~CachedDecoding() = default;

InferenceCache::InferenceCache(int64_t batch_size, int64_t max_len)
    : max_len_(max_len), lengths_(static_cast<size_t>(std::max<int64_t>(batch_size, 0)), 0) {
  KILN_CHECK_USER(batch_size >= 1 && max_len >= 1,
                  "cache: batch size {} and max_len {} must both be >= 1", batch_size, max_len);
}

InferenceCache::~InferenceCache() = default;

void InferenceCache::reset() {
  std::fill(lengths_.begin(), lengths_.end(), 0);
}

void InferenceCache::advance(const std::vector<int64_t>& added) {
  KILN_CHECK_USER(added.size() == lengths_.size(), "cache: {} row counts for a batch of {} rows",
                  added.size(), lengths_.size());
  for (size_t b = 0; b < added.size(); ++b) {
    KILN_CHECK_USER(added[b] >= 0 && lengths_[b] + added[b] <= max_len_,
                    "cache: row {} holds {} of max_len {} tokens and cannot take {} more; "
                    "generate fewer tokens or make the cache longer",
                    b, lengths_[b], max_len_, added[b]);
  }
  for (size_t b = 0; b < added.size(); ++b) lengths_[b] += added[b];
}

} // namespace kiln::sdk
