#include "data/loader.h"

#include "kiln/sdk/error.h"

#include <ATen/ATen.h>

#include <numeric>
#include <random>

namespace kiln::data {
namespace {

// SplitMix64: one well-mixed 64-bit value per (seed, stream), independent of library versions, so
// an order is the same on every machine and build.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

} // namespace

nlohmann::json LoaderState::to_json() const {
  return {{"epoch", epoch}, {"cursor", cursor}, {"batches", batches}};
}

LoaderState LoaderState::from_json(const nlohmann::json& json) {
  LoaderState state;
  try {
    state.epoch = json.at("epoch").get<int64_t>();
    state.cursor = json.at("cursor").get<int64_t>();
    state.batches = json.at("batches").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    user_error("data position: expected {{\"epoch\", \"cursor\", \"batches\"}} integers: {}",
               e.what());
  }
  KILN_CHECK_USER(state.epoch >= 0 && state.cursor >= 0 && state.batches >= 0,
                  "data position: negative values in {}", json.dump());
  return state;
}

MicroBatch make_batch(const Corpus& corpus, const std::vector<size_t>& documents) {
  int64_t total = 0;
  for (const size_t doc : documents) total += static_cast<int64_t>(corpus.tokens(doc).size());
  at::Tensor ids = at::empty({total}, at::kLong);
  at::Tensor labels = at::empty({total}, at::kLong);
  at::Tensor cu = at::empty({static_cast<int64_t>(documents.size()) + 1}, at::kInt);
  auto* id_out = ids.data_ptr<int64_t>();
  auto* label_out = labels.data_ptr<int64_t>();
  auto* cu_out = cu.data_ptr<int32_t>();
  MicroBatch batch;
  int64_t at_token = 0;
  cu_out[0] = 0;
  for (size_t d = 0; d < documents.size(); ++d) {
    const auto tokens = corpus.tokens(documents[d]);
    const auto targets = corpus.targets(documents[d]);
    const auto n = static_cast<int64_t>(tokens.size());
    for (int64_t t = 0; t < n; ++t) {
      id_out[at_token + t] = tokens[t];
      const bool predicts = t + 1 < n && targets[t + 1];
      label_out[at_token + t] = predicts ? tokens[t + 1] : -100;
      batch.num_targets += predicts;
    }
    at_token += n;
    cu_out[d + 1] = static_cast<int32_t>(at_token);
  }
  batch.input_ids = ids;
  batch.labels = labels;
  batch.cu_seqlens = cu;
  batch.num_tokens = total;
  batch.num_documents = static_cast<int64_t>(documents.size());
  return batch;
}

Loader::Loader(const Corpus& corpus, LoaderOptions options, LoaderState state)
    : corpus_(corpus), options_(options), state_(state) {
  KILN_CHECK_USER(corpus_.size() > 0,
                  "the data has no documents (every example empty, or dropped as longer than "
                  "seq_len = {}); check the files and data.seq_len",
                  options_.seq_len);
  KILN_CHECK_USER(options_.world >= 1 && options_.rank >= 0 && options_.rank < options_.world,
                  "data loader: rank {} is not in a world of {}", options_.rank, options_.world);
  KILN_CHECK_USER(state_.cursor <= static_cast<int64_t>(corpus_.size()),
                  "data position: document {} of epoch {} is past the corpus' {} documents; "
                  "the data changed since the checkpoint was saved",
                  state_.cursor, state_.epoch, corpus_.size());
  start_epoch();
}

void Loader::start_epoch() {
  order_.resize(corpus_.size());
  std::iota(order_.begin(), order_.end(), size_t{0});
  if (!options_.shuffle) return;
  // Fisher-Yates with a generator of our own: std::shuffle's algorithm is implementation-defined.
  uint64_t state = mix(options_.seed ^ mix(static_cast<uint64_t>(state_.epoch) + 1));
  for (size_t i = order_.size(); i > 1; --i) {
    state = mix(state);
    const size_t j = static_cast<size_t>(state % i);
    std::swap(order_[i - 1], order_[j]);
  }
}

std::vector<size_t> Loader::take() {
  const int64_t budget = options_.micro_batch * options_.seq_len;
  std::vector<size_t> docs;
  int64_t used = 0;
  while (true) {
    if (state_.cursor == static_cast<int64_t>(order_.size())) {
      if (options_.single_epoch) {
        exhausted_ = true;
        break;
      }
      ++state_.epoch;
      state_.cursor = 0;
      start_epoch();
    }
    const size_t doc = order_[state_.cursor];
    const auto len = static_cast<int64_t>(corpus_.tokens(doc).size());
    if (options_.pack ? (!docs.empty() && used + len > budget)
                      : static_cast<int64_t>(docs.size()) == options_.micro_batch) {
      break;
    }
    docs.push_back(doc);
    used += len;
    ++state_.cursor;
  }
  ++state_.batches;
  return docs;
}

MicroBatch Loader::next() {
  while (true) {
    if (exhausted_) return {};
    const bool mine = state_.batches % options_.world == options_.rank;
    std::vector<size_t> docs = take();
    if (docs.empty()) return {};
    if (mine) return make_batch(corpus_, docs);
  }
}

MockLoader::MockLoader(int64_t vocab_size, LoaderOptions options, LoaderState state)
    : vocab_size_(vocab_size), options_(options), state_(state) {
  KILN_CHECK_USER(vocab_size_ >= 2, "mock data: vocab_size {} is too small", vocab_size_);
}

MicroBatch MockLoader::next() {
  while (state_.batches % options_.world != options_.rank) ++state_.batches;
  const int64_t n = options_.micro_batch;
  const int64_t len = options_.seq_len;
  std::mt19937_64 random(mix(options_.seed ^ mix(static_cast<uint64_t>(state_.batches))));
  Corpus corpus;
  std::vector<int32_t> tokens(len);
  const std::vector<uint8_t> targets(len, 1);
  for (int64_t s = 0; s < n; ++s) {
    for (auto& token : tokens) token = static_cast<int32_t>(random() % vocab_size_);
    corpus.add(tokens, targets);
  }
  ++state_.batches;
  std::vector<size_t> docs(n);
  std::iota(docs.begin(), docs.end(), size_t{0});
  return make_batch(corpus, docs);
}

} // namespace kiln::data
