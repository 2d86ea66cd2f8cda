#include "io/added_tokens.h"

#include "io/unicode.h"

#include <algorithm>

namespace kiln::io::detail {

AddedTokenMatcher::AddedTokenMatcher(
    const std::vector<std::pair<std::string, const AddedToken*>>& patterns) {
  nodes_.emplace_back();
  for (const auto& [pattern, token] : patterns) {
    if (pattern.empty()) continue;
    int32_t node = 0;
    for (unsigned char byte : pattern) {
      int32_t next = child(node, byte);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        auto& children = nodes_[node].children;
        children.insert(std::lower_bound(children.begin(), children.end(), std::pair(byte, 0)),
                        std::pair(byte, next));
      }
      node = next;
    }
    // Two tokens with one pattern (a normalized form shared by two contents): the first wins.
    if (nodes_[node].token == nullptr) nodes_[node].token = token;
    starts_[static_cast<unsigned char>(pattern[0])] = true;
  }
}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char byte) const {
  const auto& children = nodes_[node].children;
  const auto it = std::lower_bound(children.begin(), children.end(), std::pair(byte, 0),
                                   [](const auto& a, const auto& b) { return a.first < b.first; });
  return it != children.end() && it->first == byte ? it->second : -1;
}

void AddedTokenMatcher::split(std::string_view text, bool parse_special,
                              std::vector<TextPiece>& out) const {
  size_t start_offset = 0; // end of the last piece emitted
  size_t at = 0;           // where the search goes on (the end of the last match)
  while (at < text.size()) {
    if (!starts_[static_cast<unsigned char>(text[at])]) {
      ++at;
      continue;
    }
    // The longest pattern that starts here.
    const AddedToken* found = nullptr;
    size_t found_end = 0;
    int32_t node = 0;
    for (size_t i = at; i < text.size(); ++i) {
      node = child(node, static_cast<unsigned char>(text[i]));
      if (node < 0) break;
      if (nodes_[node].token != nullptr) {
        found = nodes_[node].token;
        found_end = i + 1;
      }
    }
    if (found == nullptr) {
      ++at;
      continue;
    }
    size_t start = at, stop = found_end;
    at = found_end;
    if (!parse_special && found->special) continue;
    if (found->lstrip) {
      size_t left = start;
      while (left > 0) {
        size_t prev = left;
        if (!unicode::is_white_space(unicode::previous_code_point(text, prev))) break;
        left = prev;
      }
      // Whitespace an earlier piece already took stays there.
      start = std::max(left, start_offset);
    }
    if (found->rstrip) {
      while (stop < text.size()) {
        size_t next = stop;
        if (!unicode::is_white_space(unicode::next_code_point(text, next))) break;
        stop = next;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, nullptr});
    out.push_back({start, stop, found});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), nullptr});
}

} // namespace kiln::io::detail
