#include "io/bpe.h"

#include "io/unicode.h"

#include <fmt/format.h>

#include <queue>
#include <stdexcept>

namespace kiln::io::detail {
namespace {

/// The bytes TOKEN stands for when every character is in the ByteLevel alphabet.
std::optional<std::string> byte_level_bytes(std::string_view token) {
  std::string out;
  for (size_t at = 0; at < token.size();) {
    const auto byte = unicode::byte_level_byte(unicode::next_code_point(token, at));
    if (!byte) return std::nullopt;
    out += static_cast<char>(*byte);
  }
  return out;
}

} // namespace

BpeModel::BpeModel(StringMap<int32_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   BpeOptions options)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  int32_t end = 0;
  for (const auto& [token, id] : vocab_) end = std::max(end, id + 1);
  tokens_.resize(end);
  bytes_.resize(end);
  for (const auto& [token, id] : vocab_) {
    if (tokens_[id]) {
      const auto& [first, second] = std::minmax(token, *tokens_[id]);
      throw std::invalid_argument(fmt::format(
          "model.vocab: '{}' and '{}' both have id {}; ids must be unique", first, second, id));
    }
    tokens_[id] = token;
    auto bytes = byte_level_bytes(token);
    bytes_[id] = bytes ? *bytes : token;
    if (bytes) by_bytes_.emplace(std::move(*bytes), id);
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab_.find(unicode::byte_level_chars()[b]);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  auto id_of = [&](size_t rank, const std::string& token) {
    const auto it = vocab_.find(token);
    if (it == vocab_.end()) {
      throw std::invalid_argument(fmt::format(
          "model.merges[{}]: '{}' is not in the vocabulary (model.vocab)", rank, token));
    }
    return it->second;
  };
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int32_t a = id_of(rank, left), b = id_of(rank, right);
    const int32_t merged = id_of(rank, left + right);
    merges_.insert_or_assign(pair_key(a, b), MergeResult{static_cast<uint32_t>(rank), merged});
  }
  if (options_.unk_token) {
    const auto it = vocab_.find(*options_.unk_token);
    if (it == vocab_.end()) {
      throw std::invalid_argument(fmt::format(
          "model.unk_token: '{}' is not in the vocabulary (model.vocab)", *options_.unk_token));
    }
    unk_id_ = it->second;
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int64_t id) const {
  if (id < 0 || id >= id_end() || !tokens_[id]) return nullptr;
  return &*tokens_[id];
}

const std::string* BpeModel::id_to_bytes(int64_t id) const {
  if (id < 0 || id >= id_end() || !bytes_[id]) return nullptr;
  return &*bytes_[id];
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  // HF's Word: a linked list of symbols over the characters; `len` 0 marks a symbol merged away.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t len;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id, uint32_t len) {
    const auto n = static_cast<int32_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, len});
  };
  std::optional<std::pair<int32_t, uint32_t>> unk; // pending unknown run: id, length
  for (unsigned char byte : word) {
    const auto len = static_cast<uint32_t>(unicode::byte_level_chars()[byte].size());
    if (const int32_t id = byte_ids_[byte]; id >= 0) {
      if (unk) add(unk->first, unk->second);
      unk.reset();
      add(id, len);
    } else if (unk_id_) {
      if (unk && options_.fuse_unk) {
        unk->second += len;
      } else {
        if (unk) add(unk->first, unk->second);
        unk = std::pair(*unk_id_, len);
      }
    } // else: HF drops characters it has no token for
  }
  if (unk) add(unk->first, unk->second);

  // Lowest rank first, then leftmost; entries made stale by earlier merges are skipped when
  // popped (the pair at `pos` no longer merges into `id`).
  struct Merge {
    uint32_t rank;
    int32_t pos;
    int32_t id;
  };
  auto later = [](const Merge& a, const Merge& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::priority_queue<Merge, std::vector<Merge>, decltype(later)> queue(later);
  auto find = [&](int32_t a, int32_t b) -> const MergeResult* {
    const auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const MergeResult* m = find(symbols[i].id, symbols[i + 1].id)) {
      queue.push({m->rank, static_cast<int32_t>(i), m->id});
    }
  }
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& current = symbols[top.pos];
    if (current.len == 0 || current.next == -1) continue;
    const int32_t next_pos = current.next;
    const Symbol right = symbols[next_pos];
    const MergeResult* still = find(current.id, right.id);
    if (still == nullptr || still->id != top.id) continue;

    current.id = top.id;
    current.len += right.len;
    current.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (current.prev >= 0) {
      if (const MergeResult* m = find(symbols[current.prev].id, current.id)) {
        queue.push({m->rank, current.prev, m->id});
      }
    }
    if (current.next >= 0) {
      if (const MergeResult* m = find(current.id, symbols[current.next].id)) {
        queue.push({m->rank, top.pos, m->id});
      }
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) ids.push_back(s.id);
  }
}

void BpeModel::tokenize(std::string_view word, std::vector<int64_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (const auto it = by_bytes_.find(word); it != by_bytes_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() == 1) {
    std::vector<int32_t> ids;
    merge_word(word, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  CacheShard& shard = cache_[std::hash<std::string_view>{}(word) % kCacheShards];
  if (cacheable) {
    std::lock_guard lock(shard.mutex);
    if (const auto it = shard.index.find(word); it != shard.index.end()) {
      shard.entries.splice(shard.entries.begin(), shard.entries, it->second);
      const auto& ids = it->second->second;
      out.insert(out.end(), ids.begin(), ids.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (!cacheable) return;
  std::lock_guard lock(shard.mutex);
  if (shard.index.contains(word)) return; // another thread got there first
  shard.entries.emplace_front(std::string(word), std::move(ids));
  shard.index.emplace(shard.entries.front().first, shard.entries.begin());
  if (shard.entries.size() > kCacheEntriesPerShard) {
    shard.index.erase(shard.entries.back().first);
    shard.entries.pop_back();
  }
}

} // namespace kiln::io::detail
