// Tokenizers: the built-in byte-level one and HF tokenizer.json (byte-level BPE).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::io {

class Tokenizer {
 public:
  virtual ~Tokenizer();
  /// The built-in byte-level tokenizer: id = byte value (0..255), no special tokens unless given.
  static std::unique_ptr<Tokenizer> bytes();
  /// An HF tokenizer.json (byte-level BPE). Throws kiln::Error (kUser) naming the file and the
  /// unsupported component/field for anything it cannot reproduce exactly.
  static std::unique_ptr<Tokenizer> from_file(const std::filesystem::path& tokenizer_json);
  /// Text -> ids. Special/added tokens that appear literally in the text are matched as HF does
  /// (`parse_special` true) or treated as plain text (false).
  virtual std::vector<int64_t> encode(std::string_view text, bool parse_special = true) const = 0;
  virtual std::string decode(std::span<const int64_t> ids, bool skip_special = false) const = 0;
  virtual int64_t vocab_size() const = 0; ///< highest id + 1, added tokens included
  virtual std::optional<int64_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int64_t id) const = 0;
  virtual std::string kind() const = 0; ///< "byte" | "bpe"
  /// Writes tokenizer.json (+ tokenizer_config.json) into `dir` so HF loads it with identical ids.
  virtual void save(const std::filesystem::path& dir) const = 0;
};

} // namespace kiln::io
