// Micro-batches from a corpus: documents packed into THD (`cu_seqlens`, labels per document),
// shuffled by seed and epoch, with a position that can be saved and restored exactly.
#pragma once

#include "data/dataset.h"

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>

namespace kiln::data {

/// One forward pass's input: documents one after another (THD).
struct MicroBatch {
  at::Tensor input_ids;    ///< int64 [T]
  at::Tensor labels;       ///< int64 [T]: the next token of the same document, or -100
  at::Tensor cu_seqlens;   ///< int32 [N + 1], document boundaries
  int64_t num_targets = 0; ///< labels that are not -100
  int64_t num_tokens = 0;
  int64_t num_documents = 0;
};

/// Where a loader is: enough to continue exactly.
struct LoaderState {
  int64_t epoch = 0;   ///< passes over the corpus started
  int64_t cursor = 0;  ///< next document within the epoch's order
  int64_t batches = 0; ///< global micro-batches produced (all ranks)

  nlohmann::json to_json() const;
  static LoaderState from_json(const nlohmann::json& json); ///< throws kiln::Error (user)
  bool operator==(const LoaderState&) const = default;
};

struct LoaderOptions {
  int64_t micro_batch = 1; ///< sequences of seq_len tokens per micro-batch
  int64_t seq_len = 2048;
  bool pack = true;    ///< true: whole documents up to micro_batch * seq_len tokens
  bool shuffle = true; ///< a new order each epoch, from (seed, epoch)
  uint64_t seed = 0;
  int64_t rank = 0; ///< this process takes global micro-batches rank, rank + world, ...
  int64_t world = 1;
  bool single_epoch = false; ///< validation: stop after one pass (next() returns empty)
};

class Loader {
 public:
  /// The corpus must outlive the loader. Throws kiln::Error (user) for an empty corpus.
  Loader(const Corpus& corpus, LoaderOptions options, LoaderState state = {});

  /// The next micro-batch of this rank; with single_epoch, a batch with num_tokens == 0 once the
  /// pass is over.
  MicroBatch next();
  const LoaderState& state() const { return state_; }

 private:
  // Documents of the next global micro-batch (advances the state).
  std::vector<size_t> take();
  size_t document_at(int64_t position) const; // in the current epoch's order
  void start_epoch();

  const Corpus& corpus_;
  LoaderOptions options_;
  LoaderState state_;
  std::vector<size_t> order_; // the current epoch's permutation
  bool exhausted_ = false;
};

/// Random tokens for benchmarks: micro_batch sequences of seq_len, from (seed, batch index).
class MockLoader {
 public:
  MockLoader(int64_t vocab_size, LoaderOptions options, LoaderState state = {});
  MicroBatch next();
  const LoaderState& state() const { return state_; }

 private:
  int64_t vocab_size_;
  LoaderOptions options_;
  LoaderState state_;
};

/// THD tensors for the given documents of a corpus (labels shifted within each document).
MicroBatch make_batch(const Corpus& corpus, const std::vector<size_t>& documents);

} // namespace kiln::data
