#include "io/tokenizer_regex.h"

#include "io/unicode.h"
#include "kiln/sdk/error.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>

#include <cctype>
#include <optional>

namespace kiln::io::detail {
namespace {

bool is_ascii_alnum(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0;
}
bool is_hex(char c) {
  return std::isxdigit(static_cast<unsigned char>(c)) != 0;
}

/// One left-to-right pass over an Oniguruma pattern. Everything that reads the same in both
/// engines is copied; `\s`, `\d`, `\p{..}` become explicit classes with Oniguruma's Unicode
/// data; the rest is refused with the reason.
class Translator {
 public:
  explicit Translator(std::string_view pattern) : p_(pattern) {}

  std::string run() {
    while (at_ < p_.size()) {
      const char c = p_[at_];
      switch (c) {
        case '\\':
          escape(/*in_class=*/false);
          break;
        case '[':
          char_class();
          break;
        case '(':
          open_group();
          break;
        case ')':
          close_group();
          break;
        case '^':
        case '$':
          refuse(at_, fmt::format("the anchor '{}' is not supported (Oniguruma anchors it at "
                                  "every line, PCRE2 at the string)",
                                  c));
        case '{':
          interval();
          break;
        case '*':
        case '+':
        case '?':
        case '.':
        case '|':
          out_ += c;
          ++at_;
          letters_.clear();
          break;
        default:
          literal();
          break;
      }
    }
    if (!outer_caseless_.empty()) refuse(p_.size(), "a group is not closed");
    return std::move(out_);
  }

 private:
  [[noreturn]] void refuse(size_t at, std::string_view why) {
    throw UnsupportedPattern(fmt::format("at offset {}: {}", at, why));
  }

  void literal() {
    const size_t length = unicode::sequence_length(static_cast<unsigned char>(p_[at_]));
    const std::string_view ch = p_.substr(at_, length);
    if (caseless_) {
      if (length > 1) {
        refuse(at_, fmt::format("the non-ASCII literal '{}' under (?i) is not supported (the "
                                "engines fold case differently beyond ASCII)",
                                ch));
      }
      const char c = ch[0];
      if (std::isalpha(static_cast<unsigned char>(c))) {
        letters_ += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        for (std::string_view fold : unicode::ascii_multi_char_folds()) {
          if (letters_.ends_with(fold)) {
            refuse(at_, fmt::format("'{}' under (?i) is not supported (Oniguruma also matches "
                                    "the one character that folds to it, PCRE2 does not)",
                                    fold));
          }
        }
      } else {
        letters_.clear();
      }
    }
    out_ += ch;
    at_ += length;
  }

  /// `\x{HHHH}`, `\xHH` or `\uHHHH` at at_ (the backslash), as PCRE2's `\x{HHHH}`.
  void hex_escape() {
    const size_t start = at_;
    const char kind = p_[at_ + 1];
    size_t i = at_ + 2;
    std::string digits;
    if (kind == 'x' && i < p_.size() && p_[i] == '{') {
      ++i;
      while (i < p_.size() && is_hex(p_[i])) digits += p_[i++];
      if (i >= p_.size() || p_[i] != '}' || digits.empty()) refuse(start, "malformed '\\x{...}'");
      ++i;
    } else {
      const size_t wanted = kind == 'x' ? 2 : 4;
      while (digits.size() < wanted && i < p_.size() && is_hex(p_[i])) digits += p_[i++];
      if (digits.empty() || (kind == 'u' && digits.size() != 4)) {
        refuse(start, fmt::format("malformed '\\{}' escape", kind));
      }
    }
    if (caseless_) refuse(start, "hex escapes under (?i) are not supported");
    out_ += fmt::format("\\x{{{}}}", digits);
    at_ = i;
  }

  /// `\p{NAME}`, `\p{^NAME}` or `\P{NAME}` at at_: the class items and whether it is negated.
  std::pair<std::string, bool> property() {
    const size_t start = at_;
    bool negated = p_[at_ + 1] == 'P';
    size_t i = at_ + 2;
    if (i >= p_.size() || p_[i] != '{') refuse(start, "'\\p' without '{NAME}'");
    ++i;
    if (i < p_.size() && p_[i] == '^') {
      negated = !negated;
      ++i;
    }
    const size_t close = p_.find('}', i);
    if (close == std::string_view::npos) refuse(start, "'\\p{' is not closed");
    const std::string_view name = p_.substr(i, close - i);
    auto items = unicode::category_class_items(name);
    if (!items) {
      refuse(start, fmt::format("the property '{}' is not supported (kiln knows the general "
                                "categories L, Lu, Ll, Lt, Lm, Lo, M, Mn, Mc, Me, N, Nd, Nl, "
                                "No, P, Pc, Pd, Ps, Pe, Pi, Pf, Po, S, Sm, Sc, Sk, So, Z, Zs, "
                                "Zl, Zp)",
                                name));
    }
    if (caseless_) refuse(start, "'\\p{..}' under (?i) is not supported");
    at_ = close + 1;
    return {std::move(*items), negated};
  }

  void escape(bool in_class) {
    const size_t start = at_;
    if (at_ + 1 >= p_.size()) refuse(start, "the pattern ends with a backslash");
    const char e = p_[at_ + 1];
    std::string items;
    bool negated = false;
    switch (e) {
      case 's':
      case 'S':
        items = unicode::white_space_class_items();
        negated = e == 'S';
        at_ += 2;
        break;
      case 'd':
      case 'D':
        items = *unicode::category_class_items("Nd");
        negated = e == 'D';
        at_ += 2;
        break;
      case 'p':
      case 'P':
        std::tie(items, negated) = property();
        break;
      case 'n':
      case 'r':
      case 't':
      case 'f':
        out_ += '\\';
        out_ += e;
        at_ += 2;
        letters_.clear();
        return;
      case 'v': // Oniguruma: the vertical tab; PCRE2: any vertical space
        out_ += "\\x{B}";
        at_ += 2;
        letters_.clear();
        return;
      case 'a':
        out_ += "\\x{7}";
        at_ += 2;
        letters_.clear();
        return;
      case 'e':
        out_ += "\\x{1B}";
        at_ += 2;
        letters_.clear();
        return;
      case 'x':
      case 'u':
        hex_escape();
        letters_.clear();
        return;
      case 'A':
      case 'z':
      case 'Z':
        if (in_class) refuse(start, fmt::format("'\\{}' inside a class is not supported", e));
        out_ += '\\';
        out_ += e;
        at_ += 2;
        letters_.clear();
        return;
      default:
        if (is_ascii_alnum(e)) {
          refuse(start, fmt::format("'\\{}' is not supported (its meaning differs between "
                                    "Oniguruma and PCRE2, or kiln has no exact rewrite)",
                                    e));
        }
        if (static_cast<unsigned char>(e) < 0x80) {
          out_ += '\\'; // escaped punctuation: a literal in both
          out_ += e;
          at_ += 2;
        } else {
          ++at_; // a backslash before a non-ASCII character: the character itself
          literal();
          return;
        }
        letters_.clear();
        return;
    }
    // A class: \s \S \d \D \p \P.
    letters_.clear();
    if (in_class) {
      if (negated) {
        refuse(start,
               "a negated class escape inside [...] is not supported (Unicode versions "
               "differ; no exact rewrite)");
      }
      out_ += items;
    } else {
      out_ += negated ? "[^" : "[";
      out_ += items;
      out_ += ']';
    }
  }

  void char_class() {
    const size_t start = at_;
    if (caseless_) refuse(start, "a character class under (?i) is not supported");
    out_ += '[';
    ++at_;
    if (at_ < p_.size() && p_[at_] == '^') {
      out_ += '^';
      ++at_;
    }
    if (at_ < p_.size() && p_[at_] == ']') refuse(at_, "']' first in a class is not supported");
    while (true) {
      if (at_ >= p_.size()) refuse(start, "the class '[' is not closed");
      const char c = p_[at_];
      if (c == ']') {
        out_ += ']';
        ++at_;
        break;
      }
      if (c == '[') refuse(at_, "nested classes and POSIX brackets are not supported");
      if (c == '&' && at_ + 1 < p_.size() && p_[at_ + 1] == '&') {
        refuse(at_, "class intersection '&&' is not supported");
      }
      if (c == '\\') {
        escape(/*in_class=*/true);
        continue;
      }
      const size_t length = unicode::sequence_length(static_cast<unsigned char>(c));
      out_ += p_.substr(at_, length);
      at_ += length;
    }
    letters_.clear();
  }

  void open_group() {
    const size_t start = at_;
    letters_.clear();
    if (at_ + 1 >= p_.size() || p_[at_ + 1] != '?') {
      out_ += "(?:"; // capture numbers are never used
      outer_caseless_.push_back(caseless_);
      ++at_;
      return;
    }
    const std::string_view rest = p_.substr(at_ + 2);
    for (std::string_view kind : {":", "=", "!", ">", "<=", "<!"}) {
      if (rest.starts_with(kind)) {
        out_ += "(?";
        out_ += kind;
        outer_caseless_.push_back(caseless_);
        at_ += 2 + kind.size();
        return;
      }
    }
    // Option flags: (?i:...), (?-i:...), (?i), (?-i).
    size_t i = at_ + 2;
    bool on = true;
    bool seen = false;
    for (; i < p_.size() && p_[i] != ':' && p_[i] != ')'; ++i) {
      if (p_[i] == '-' && !seen) {
        on = false;
      } else if (p_[i] == 'i') {
        seen = true;
      } else {
        refuse(start, fmt::format("the group '(?{}' is not supported (kiln accepts (?:, (?=, "
                                  "(?!, (?>, (?<=, (?<! and the flag i)",
                                  p_.substr(at_ + 2, i + 1 - (at_ + 2))));
      }
    }
    if (i >= p_.size() || !seen) refuse(start, "malformed group options");
    if (p_[i] == ':') {
      outer_caseless_.push_back(caseless_);
      out_ += on ? "(?i:" : "(?-i:";
    } else {
      out_ += on ? "(?i)" : "(?-i)";
    }
    caseless_ = on;
    at_ = i + 1;
  }

  void close_group() {
    if (outer_caseless_.empty()) refuse(at_, "')' closes no group");
    caseless_ = outer_caseless_.back();
    outer_caseless_.pop_back();
    out_ += ')';
    ++at_;
    letters_.clear();
  }

  /// `{n}`, `{n,}`, `{n,m}`, `{,m}` (Oniguruma's {0,m}); anything else is a literal '{'.
  void interval() {
    const size_t start = at_;
    size_t i = at_ + 1;
    std::string low, high;
    while (i < p_.size() && std::isdigit(static_cast<unsigned char>(p_[i]))) low += p_[i++];
    const bool comma = i < p_.size() && p_[i] == ',';
    if (comma) {
      ++i;
      while (i < p_.size() && std::isdigit(static_cast<unsigned char>(p_[i]))) high += p_[i++];
    }
    if (i >= p_.size() || p_[i] != '}' || (low.empty() && high.empty())) {
      out_ += "\\{";
      ++at_;
      letters_.clear();
      return;
    }
    ++i;
    if (i < p_.size() && p_[i] == '+') {
      refuse(start,
             "'{n,m}+' is not supported (in Oniguruma it is two quantifiers, in PCRE2 "
             "a possessive one)");
    }
    if (!comma && i < p_.size() && p_[i] == '?') {
      refuse(start, "'{n}?' is not supported (Oniguruma reads it as an optional group of n)");
    }
    out_ += '{';
    out_ += low.empty() ? "0" : low;
    if (comma) out_ += "," + high;
    out_ += '}';
    at_ = i;
    letters_.clear();
  }

  std::string_view p_;
  size_t at_ = 0;
  std::string out_;
  bool caseless_ = false;
  std::vector<bool> outer_caseless_; // per open group: the case mode outside it
  std::string letters_;              // the run of ASCII letters just read under (?i), lowercased
};

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) {
    return fmt::format("error {}", code);
  }
  return reinterpret_cast<const char*>(buffer);
}

} // namespace

std::string oniguruma_to_pcre2(std::string_view pattern) {
  return Translator(pattern).run();
}

std::string pcre2_literal(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x80 && !is_ascii_alnum(c)) out += '\\';
    out += c;
  }
  return out;
}

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

Regex::Regex(const std::string& pcre2_pattern) : code_(std::make_unique<Code>()) {
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_->code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre2_pattern.data()), pcre2_pattern.size(),
                    PCRE2_UTF | PCRE2_UCP, &error, &offset, context);
  pcre2_compile_context_free(context);
  if (code_->code == nullptr) {
    throw UnsupportedPattern(
        fmt::format("PCRE2 rejects it at offset {}: {}", offset, pcre2_message(error)));
  }
  // Where PCRE2 has no JIT for this machine, the interpreter matches the same.
  pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE);
}

Regex::~Regex() = default;

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code_->code, nullptr), &pcre2_match_data_free);
  if (!data) internal_error("out of memory for PCRE2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t last_end = 0;
  std::optional<size_t> last_match_end;
  while (last_end <= text.size()) {
    // The caller checked TEXT is valid UTF-8 once; PCRE2 would check it again on every call.
    int rc = pcre2_match(code_->code, subject, text.size(), last_end, PCRE2_NO_UTF_CHECK,
                         data.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) { // the interpreter keeps its backtracking on the heap
      rc = pcre2_match(code_->code, subject, text.size(), last_end,
                       PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data.get(), nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      user_error("the pre-tokenizer regex failed at byte {} of a {}-byte text: {}", last_end,
                 text.size(), pcre2_message(rc));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t start = ovector[0], end = ovector[1];
    if (start == end && last_match_end == end) {
      // No empty match right after a match: move one character on and search again.
      last_end += last_end < text.size()
                      ? unicode::sequence_length(static_cast<unsigned char>(text[last_end]))
                      : 1;
      continue;
    }
    last_end = end;
    last_match_end = end;
    out.emplace_back(start, end);
  }
}

} // namespace kiln::io::detail
