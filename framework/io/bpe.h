// The BPE model of HF tokenizers, for byte-level vocabularies: a word (one pre-token, as raw
// bytes) becomes ids by merging adjacent symbols, lowest merge rank first, exactly as HF's
// `Word::merge_all` does. Results are cached per word. Not part of the io API.
#pragma once

#include <array>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kiln::io::detail {

/// Hash for heterogeneous (string_view) lookup in string-keyed maps.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

template <class Value>
using StringMap = std::unordered_map<std::string, Value, StringHash, std::equal_to<>>;

struct BpeOptions {
  /// A word that is itself in the vocabulary is one token, whatever the merges say.
  bool ignore_merges = false;
  /// The token for characters the vocabulary lacks (nullopt: such characters are dropped, as HF
  /// does without an unk token).
  std::optional<std::string> unk_token;
  /// Consecutive unknown characters become one unk token.
  bool fuse_unk = false;
};

class BpeModel {
 public:
  /// VOCAB maps tokens (ByteLevel characters) to ids; MERGES are token pairs, rank = position (a
  /// pair listed twice keeps its last rank, as HF's map does). Throws std::invalid_argument
  /// naming the merge when a merge's tokens or their concatenation are not in VOCAB, or the unk
  /// token is not.
  BpeModel(StringMap<int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           BpeOptions options);

  /// Appends the ids of WORD (raw bytes; the model sees each byte as its ByteLevel character).
  /// Thread-safe.
  void tokenize(std::string_view word, std::vector<int64_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  /// nullptr when ID is not in the vocabulary.
  const std::string* id_to_token(int64_t id) const;
  /// The bytes ID stands for under the ByteLevel decoder (the token's UTF-8 text where a
  /// character is not in the byte alphabet), or nullptr when ID is not in the vocabulary.
  const std::string* id_to_bytes(int64_t id) const;
  /// Highest id + 1 (0 for an empty vocabulary).
  int64_t id_end() const { return static_cast<int64_t>(tokens_.size()); }

 private:
  struct MergeResult {
    uint32_t rank;
    int32_t id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;

  StringMap<int32_t> vocab_;
  std::vector<std::optional<std::string>> tokens_; // id -> token
  std::vector<std::optional<std::string>> bytes_;  // id -> decoded bytes
  StringMap<int32_t> by_bytes_;                    // raw bytes -> id, for ignore_merges
  std::array<int32_t, 256> byte_ids_{};            // byte -> id of its character, -1 if none
  std::unordered_map<uint64_t, MergeResult> merges_;
  BpeOptions options_;
  std::optional<int32_t> unk_id_;

  /// A bounded LRU cache of word -> ids, in shards so threads rarely wait on each other.
  struct CacheShard {
    std::mutex mutex;
    std::list<std::pair<std::string, std::vector<int32_t>>> entries; // most recent first
    std::unordered_map<std::string_view, decltype(entries)::iterator> index;
  };
  static constexpr size_t kCacheShards = 16;
  static constexpr size_t kCacheEntriesPerShard = 4096;
  static constexpr size_t kCacheMaxWordBytes = 256;
  mutable std::array<CacheShard, kCacheShards> cache_;
};

} // namespace kiln::io::detail
