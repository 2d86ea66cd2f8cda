// Added and special tokens: found in text before anything else, the way HF tokenizers'
// AddedVocabulary finds them (leftmost-longest, non-overlapping, with lstrip/rstrip). Not part of
// the io API.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::io::detail {

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool special = false;
  bool lstrip = false;     // the match takes the whitespace before it
  bool rstrip = false;     // the match takes the whitespace after it
  bool normalized = false; // matched in normalized text (else in the raw text, first)
};

/// A piece of text: [begin, end) bytes, and the added token it is (nullptr: plain text).
struct TextPiece {
  size_t begin;
  size_t end;
  const AddedToken* token;
};

/// Finds a set of patterns (each an added token's content, or its normalized form) in text.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  /// PATTERNS: the text to find and the token it stands for (which must outlive the matcher).
  /// Empty patterns are ignored, as HF ignores empty tokens.
  explicit AddedTokenMatcher(
      const std::vector<std::pair<std::string, const AddedToken*>>& patterns);

  /// Splits TEXT into plain pieces and token pieces covering it (none for empty TEXT), appended
  /// to OUT. Matches are leftmost-longest and do not overlap (HF's aho-corasick
  /// LeftmostLongest); with PARSE_SPECIAL false a special token's match is skipped (its text
  /// stays plain text and is not searched again, as HF's `encode_special_tokens`). lstrip/rstrip
  /// widen a match over Unicode whitespace on that side.
  void split(std::string_view text, bool parse_special, std::vector<TextPiece>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children; // sorted by byte
    const AddedToken* token = nullptr;                       // a pattern ends here
  };
  int32_t child(int32_t node, unsigned char byte) const;

  std::vector<Node> nodes_; // nodes_[0] is the root
  bool starts_[256] = {};   // bytes some pattern starts with
};

} // namespace kiln::io::detail
