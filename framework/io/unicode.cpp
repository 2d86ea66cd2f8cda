#include "io/unicode.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace kiln::io::unicode {
namespace {

struct CodeRange {
  char32_t first;
  char32_t last;
};

struct CategoryTable {
  enum Kind { kAdd, kReplace };
  std::string_view name;
  Kind kind;
  std::span<const CodeRange> ranges;
};

struct CombiningClassRange {
  char32_t first;
  char32_t last;
  uint8_t ccc;
};

struct DecompositionEntry {
  char32_t code_point;
  char32_t parts[4]; // 0 where unused
};

struct CompositionEntry {
  char32_t first;
  char32_t second;
  char32_t composite;
};

#include "io/unicode_tables.inc"

// Hangul syllables compose and decompose by arithmetic (Unicode 3.12).
constexpr char32_t kHangulFirst = 0xAC00, kHangulLast = 0xD7A3;
constexpr char32_t kLeadFirst = 0x1100, kLeadLast = 0x1112;
constexpr char32_t kVowelFirst = 0x1161, kVowelLast = 0x1175;
constexpr char32_t kTrailBase = 0x11A7, kTrailLast = 0x11C2;
constexpr char32_t kVowelCount = 21, kTrailCount = 28;

uint8_t combining_class(char32_t c) {
  if (c < 0x300) return 0;
  const auto* end = std::end(kCombiningClasses);
  const auto* it = std::upper_bound(std::begin(kCombiningClasses), end, c,
                                    [](char32_t x, const auto& r) { return x < r.first; });
  if (it == std::begin(kCombiningClasses)) return 0;
  --it;
  return c <= it->last ? it->ccc : 0;
}

void decompose(char32_t c, std::vector<char32_t>& out) {
  if (c >= kHangulFirst && c <= kHangulLast) {
    const char32_t s = c - kHangulFirst;
    out.push_back(kLeadFirst + s / (kVowelCount * kTrailCount));
    out.push_back(kVowelFirst + (s % (kVowelCount * kTrailCount)) / kTrailCount);
    if (s % kTrailCount != 0) out.push_back(kTrailBase + s % kTrailCount);
    return;
  }
  const auto* end = std::end(kDecompositions);
  const auto* it = std::lower_bound(std::begin(kDecompositions), end, c,
                                    [](const auto& e, char32_t x) { return e.code_point < x; });
  if (it == end || it->code_point != c) {
    out.push_back(c);
    return;
  }
  for (char32_t part : it->parts) {
    if (part != 0) out.push_back(part);
  }
}

std::optional<char32_t> compose(char32_t first, char32_t second) {
  if (first >= kLeadFirst && first <= kLeadLast && second >= kVowelFirst && second <= kVowelLast) {
    return kHangulFirst +
           ((first - kLeadFirst) * kVowelCount + (second - kVowelFirst)) * kTrailCount;
  }
  if (first >= kHangulFirst && first <= kHangulLast && (first - kHangulFirst) % kTrailCount == 0 &&
      second > kTrailBase && second <= kTrailLast) {
    return first + (second - kTrailBase);
  }
  const auto* end = std::end(kCompositions);
  const auto* it = std::lower_bound(std::begin(kCompositions), end, std::pair(first, second),
                                    [](const auto& e, const std::pair<char32_t, char32_t>& x) {
                                      return std::pair(e.first, e.second) < x;
                                    });
  if (it == end || it->first != first || it->second != second) return std::nullopt;
  return it->composite;
}

std::string range_items(std::span<const CodeRange> ranges) {
  std::string out;
  for (const CodeRange& r : ranges) {
    out += fmt::format("\\x{{{:X}}}", static_cast<uint32_t>(r.first));
    if (r.last != r.first) out += fmt::format("-\\x{{{:X}}}", static_cast<uint32_t>(r.last));
  }
  return out;
}

// The continuation bytes a UTF-8 sequence may have after LEAD (Unicode table 3-7): the allowed
// range for the second byte (the others are always 80..BF), and how many follow. count 0: LEAD
// starts nothing.
struct SequenceShape {
  unsigned char second_low, second_high;
  int count;
};

SequenceShape shape_of(unsigned char lead) {
  if (lead < 0x80) return {0, 0, 0};
  if (lead >= 0xC2 && lead <= 0xDF) return {0x80, 0xBF, 1};
  if (lead == 0xE0) return {0xA0, 0xBF, 2};
  if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF) return {0x80, 0xBF, 2};
  if (lead == 0xED) return {0x80, 0x9F, 2};
  if (lead == 0xF0) return {0x90, 0xBF, 3};
  if (lead >= 0xF1 && lead <= 0xF3) return {0x80, 0xBF, 3};
  if (lead == 0xF4) return {0x80, 0x8F, 3};
  return {0, 0, -1};
}

// Bytes of the well-formed prefix of the sequence at TEXT[AT] (1 + continuation bytes that fit),
// and whether it is complete.
std::pair<size_t, bool> well_formed_prefix(std::string_view text, size_t at) {
  const auto lead = static_cast<unsigned char>(text[at]);
  const SequenceShape shape = shape_of(lead);
  if (shape.count == 0) return {1, true};
  if (shape.count < 0) return {1, false};
  size_t n = 1;
  for (int k = 0; k < shape.count; ++k) {
    if (at + n >= text.size()) return {n, false};
    const auto b = static_cast<unsigned char>(text[at + n]);
    const unsigned char low = k == 0 ? shape.second_low : 0x80;
    const unsigned char high = k == 0 ? shape.second_high : 0xBF;
    if (b < low || b > high) return {n, false};
    ++n;
  }
  return {n, true};
}

} // namespace

std::optional<size_t> find_invalid_utf8(std::string_view text) {
  size_t at = 0;
  while (at < text.size()) {
    if (static_cast<unsigned char>(text[at]) < 0x80) {
      ++at;
      continue;
    }
    const auto [length, complete] = well_formed_prefix(text, at);
    if (!complete) return at;
    at += length;
  }
  return std::nullopt;
}

char32_t next_code_point(std::string_view text, size_t& at) {
  const auto lead = static_cast<unsigned char>(text[at]);
  const size_t n = sequence_length(lead);
  char32_t c = n == 1 ? lead : lead & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) c = (c << 6) | (static_cast<unsigned char>(text[at + k]) & 0x3F);
  at += n;
  return c;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

bool is_white_space(char32_t c) {
  return std::any_of(std::begin(kWhiteSpace), std::end(kWhiteSpace),
                     [c](const CodeRange& r) { return c >= r.first && c <= r.last; });
}

char32_t previous_code_point(std::string_view text, size_t& end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  size_t at = start;
  const char32_t c = next_code_point(text, at);
  end = start;
  return c;
}

std::string from_utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t at = 0;
  while (at < bytes.size()) {
    const auto [length, complete] = well_formed_prefix(bytes, at);
    if (complete) {
      out.append(bytes.substr(at, length));
    } else {
      out += "\xEF\xBF\xBD"; // U+FFFD
    }
    at += length;
  }
  return out;
}

namespace {

/// NFC of TEXT by the book: full decomposition, canonical ordering, canonical composition.
void nfc_segment(std::string_view text, std::string& out) {
  std::vector<char32_t> chars;
  chars.reserve(text.size());
  for (size_t at = 0; at < text.size();) decompose(next_code_point(text, at), chars);

  // Canonical ordering: a stable sort of each run of non-starters by combining class.
  std::vector<uint8_t> classes(chars.size());
  for (size_t i = 0; i < chars.size(); ++i) classes[i] = combining_class(chars[i]);
  for (size_t i = 0; i < chars.size();) {
    size_t j = i;
    while (j < chars.size() && classes[j] != 0) ++j;
    if (j - i > 1) {
      std::vector<std::pair<uint8_t, char32_t>> run;
      for (size_t k = i; k < j; ++k) run.emplace_back(classes[k], chars[k]);
      std::stable_sort(run.begin(), run.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      for (size_t k = i; k < j; ++k) std::tie(classes[k], chars[k]) = run[k - i];
    }
    i = j == i ? i + 1 : j;
  }

  // Canonical composition: each character joins the last starter unless blocked (something
  // between them has class 0 or a class not below its own).
  std::vector<char32_t> result;
  result.reserve(chars.size());
  std::optional<size_t> starter;
  int last_class = -1;
  for (size_t i = 0; i < chars.size(); ++i) {
    const char32_t c = chars[i];
    const int k = classes[i];
    if (starter) {
      const bool adjacent = *starter + 1 == result.size();
      if (adjacent || last_class < k) {
        if (auto composite = compose(result[*starter], c)) {
          result[*starter] = *composite;
          continue;
        }
      }
    }
    if (k == 0) starter = result.size();
    last_class = k;
    result.push_back(c);
  }
  for (char32_t c : result) append_utf8(out, c);
}

/// Code points NFC leaves alone and never looks past: starters that do not decompose and never
/// compose with what comes before them. NFC of a text is NFC of the pieces between them.
bool is_inert(char32_t c) {
  static const std::vector<bool> active = [] {
    std::vector<bool> out(0x110000, false);
    for (const auto& r : kCombiningClasses) {
      for (char32_t c = r.first; c <= r.last; ++c) out[c] = true;
    }
    for (const auto& d : kDecompositions) out[d.code_point] = true;
    for (const auto& pair : kCompositions) out[pair.second] = true;
    for (char32_t c = kVowelFirst; c <= kVowelLast; ++c) out[c] = true;
    for (char32_t c = kTrailBase + 1; c <= kTrailLast; ++c) out[c] = true;
    return out;
  }();
  return c < 0x300 || (c < active.size() && !active[c]);
}

} // namespace

std::string nfc(std::string_view text) {
  // Below U+0300 nothing decomposes, combines or composes: those code points are lead bytes
  // up to 0xCB, so text without a byte from 0xCC up is already NFC.
  if (std::none_of(text.begin(), text.end(),
                   [](char b) { return static_cast<unsigned char>(b) >= 0xCC; })) {
    return std::string(text);
  }
  std::string out;
  out.reserve(text.size());
  size_t copied = 0;  // text before this is in OUT
  size_t settled = 0; // the last inert code point seen starts here: NFC may start over there
  for (size_t at = 0; at < text.size();) {
    const size_t start = at;
    if (is_inert(next_code_point(text, at))) {
      settled = start;
      continue;
    }
    // From the last inert code point (it may compose with what follows) to the next one.
    size_t end = at;
    while (end < text.size()) {
      size_t next = end;
      if (is_inert(next_code_point(text, next))) break;
      end = next;
    }
    const size_t begin = std::max(settled, copied);
    out.append(text.substr(copied, begin - copied));
    nfc_segment(text.substr(begin, end - begin), out);
    copied = end;
    at = end;
  }
  out.append(text.substr(copied));
  return out;
}

const std::array<std::string, 256>& byte_level_chars() {
  // Printable Latin-1 bytes stand for themselves; the others, in byte order, for U+0100 onwards.
  static const std::array<std::string, 256> chars = [] {
    std::array<std::string, 256> out;
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      append_utf8(out[b], printable ? static_cast<char32_t>(b) : next++);
    }
    return out;
  }();
  return chars;
}

std::optional<uint8_t> byte_level_byte(char32_t c) {
  static const std::vector<int16_t> bytes = [] {
    std::vector<int16_t> out(0x144, -1);
    for (int b = 0; b < 256; ++b) {
      size_t at = 0;
      out[next_code_point(byte_level_chars()[b], at)] = static_cast<int16_t>(b);
    }
    return out;
  }();
  if (c >= bytes.size() || bytes[c] < 0) return std::nullopt;
  return static_cast<uint8_t>(bytes[c]);
}

const std::string& white_space_class_items() {
  static const std::string items = range_items(kWhiteSpace);
  return items;
}

std::optional<std::string> category_class_items(std::string_view category) {
  for (const CategoryTable& table : kCategories) {
    if (table.name != category) continue;
    if (table.kind == CategoryTable::kReplace) return range_items(table.ranges);
    return fmt::format("\\p{{{}}}", category) + range_items(table.ranges);
  }
  return std::nullopt;
}

std::span<const std::string_view> ascii_multi_char_folds() {
  return kAsciiMultiCharFolds;
}

} // namespace kiln::io::unicode
