// The pre-tokenizer regexes of HF tokenizer.json files, run on PCRE2. HF tokenizers compiles them
// with Oniguruma (Ruby syntax, Unicode 16.0); kiln rewrites each pattern into PCRE2 syntax whose
// matches are the same, and refuses the constructs where the two engines differ and no rewrite
// is exact. Not part of the io API.
#pragma once

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::io::detail {

/// A pattern kiln cannot run exactly as HF does; what() says which construct and why.
class UnsupportedPattern : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// PATTERN (Oniguruma syntax) as a PCRE2 pattern (for UTF + UCP mode) that matches the same
/// strings. Throws UnsupportedPattern.
std::string oniguruma_to_pcre2(std::string_view pattern);

/// PCRE2 pattern matching LITERAL exactly.
std::string pcre2_literal(std::string_view literal);

/// A compiled PCRE2 pattern (JIT-compiled where PCRE2 supports it). Thread-safe: matching uses
/// per-call match data.
class Regex {
 public:
  /// Compiles PCRE2_PATTERN (UTF, UCP, newline = LF). Throws UnsupportedPattern when PCRE2
  /// rejects it.
  explicit Regex(const std::string& pcre2_pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  /// The matches in TEXT (valid UTF-8), as [start, end) byte offsets, found the way HF's
  /// find_iter finds them: left to right, each search starting where the last match ended, an
  /// empty match right after the previous match skipped. Appended to OUT.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  struct Code;
  std::unique_ptr<Code> code_;
};

} // namespace kiln::io::detail
