// Reading HF tokenizer.json and tokenizer_config.json for the tokenizers. Not part of the io API.
#pragma once

#include "io/added_tokens.h"
#include "io/bpe.h"
#include "io/tokenizer_regex.h"

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::io::detail {

/// HF's SplitDelimiterBehavior: what happens to a regex match and the text around it.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

/// One Split pre-tokenizer.
struct SplitStep {
  std::unique_ptr<Regex> regex;
  SplitBehavior behavior;
  bool invert; // the pieces between matches are the "matches"
};

/// What a byte-level BPE tokenizer.json says that decides ids. (The post-processor, truncation
/// and padding never change what kiln's encode returns; decoder options only concern offsets.)
struct TokenizerFile {
  bool nfc = false;              // the normalizer
  std::vector<SplitStep> splits; // pre-tokenizers before ByteLevel
  bool add_prefix_space = false; // ByteLevel's
  bool use_regex = true;         // ByteLevel's: split with GPT-2's regex
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added; // with the ids HF tokenizers gives them
  bool byte_tokenizer = false;   // exactly what the byte tokenizer's save() writes
};

/// TEXT, the content of FILE, read and checked. Throws kiln::Error (user) "FILE: FIELD: problem"
/// for anything kiln cannot reproduce exactly.
TokenizerFile read_tokenizer_file(const std::filesystem::path& file, std::string_view text);

struct SpecialTokenNames {
  std::optional<std::string> bos;
  std::optional<std::string> eos;
  std::optional<std::string> pad;
};

/// bos_token, eos_token and pad_token of a tokenizer_config.json (TEXT, the content of FILE):
/// each a string, {"content": ...} or null. Throws kiln::Error (user) naming FILE and the key.
SpecialTokenNames read_special_token_names(const std::filesystem::path& file,
                                           std::string_view text);

} // namespace kiln::io::detail
