// Unicode for the tokenizer: UTF-8 checks and repair, NFC, the GPT-2 byte alphabet, and the
// character classes that make PCRE2 match what HF tokenizers' Oniguruma matches. Tables:
// unicode_tables.inc (tools/make_unicode_tables.py). Not part of the io API.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace kiln::io::unicode {

/// Byte offset of the first byte that does not start a well-formed UTF-8 sequence (RFC 3629: no
/// overlong forms, no surrogates, nothing above U+10FFFF), or nullopt when TEXT is valid.
std::optional<size_t> find_invalid_utf8(std::string_view text);

/// Length in bytes of the UTF-8 sequence that starts with LEAD (1 for a stray byte).
inline size_t sequence_length(unsigned char lead) {
  return lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

/// The code point at TEXT[AT] (valid UTF-8); AT moves past it.
char32_t next_code_point(std::string_view text, size_t& at);

/// Appends C as UTF-8.
void append_utf8(std::string& out, char32_t c);

/// Whether C has the Unicode White_Space property (what Oniguruma's and Rust's `\s` match).
bool is_white_space(char32_t c);

/// The code point that ends just before TEXT[END] (valid UTF-8, END > 0); END moves to its start.
char32_t previous_code_point(std::string_view text, size_t& end);

/// BYTES as text the way Rust's String::from_utf8_lossy makes it: each maximal ill-formed
/// subsequence becomes U+FFFD.
std::string from_utf8_lossy(std::string_view bytes);

/// NFC exactly as HF tokenizers 0.23.3 computes it (its tables predate recent Unicode versions;
/// see tools/make_unicode_tables.py). TEXT must be valid UTF-8.
std::string nfc(std::string_view text);

/// GPT-2's byte alphabet (the ByteLevel pre-tokenizer): the character byte B stands for, as UTF-8.
const std::array<std::string, 256>& byte_level_chars();

/// The byte the ByteLevel character C stands for, or nullopt when C is not in the alphabet.
std::optional<uint8_t> byte_level_byte(char32_t c);

/// Items for a PCRE2 character class (no brackets) that match exactly what Oniguruma's `\s`
/// matches (the White_Space property; PCRE2's own `\s` adds U+180E).
const std::string& white_space_class_items();

/// Items for a PCRE2 character class (no brackets) that match exactly what Oniguruma's
/// `\p{CATEGORY}` matches in HF tokenizers (Unicode 16.0), for a general category (`L`, `Lu`,
/// ..., `Zp`; not the `C` ones). nullopt for any other name.
std::optional<std::string> category_class_items(std::string_view category);

/// ASCII strings that a single character case-folds to ("ss" for U+00DF): Oniguruma matches them
/// case-insensitively against that character, PCRE2 does not.
std::span<const std::string_view> ascii_multi_char_folds();

} // namespace kiln::io::unicode
