// Tokenizers: the built-in byte tokenizer and HF `tokenizer.json` byte-level BPE, with the ids HF
// `tokenizers` gives. What is supported and what is refused: framework/io/README.md.
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

/// What bytes() builds besides the 256 byte ids.
struct ByteTokenizerOptions {
  /// Special tokens, ids 256, 257, ... in this order; matched in text like HF special tokens.
  std::vector<std::string> special_tokens;
  /// Which of them is the beginning/end-of-text and padding token, if any.
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
};

/// Text <-> token ids. Immutable after construction; every method is thread-safe.
class Tokenizer {
 public:
  virtual ~Tokenizer();

  /// The built-in byte-level tokenizer: id = byte value (0..255), no special tokens.
  static std::unique_ptr<Tokenizer> bytes();
  /// The byte tokenizer with special tokens after the bytes. Throws kiln::Error (user) for an
  /// empty or repeated special token, or a bos/eos/pad token that is not one of them.
  static std::unique_ptr<Tokenizer> bytes(const ByteTokenizerOptions& options);
  /// An HF tokenizer.json (byte-level BPE), or a folder holding one (a checkpoint). Reads
  /// `tokenizer_config.json` beside it when present (bos/eos/pad tokens; kept for save()).
  /// Throws kiln::Error (kUser) naming the file and the field for anything it cannot reproduce
  /// exactly. A tokenizer.json that save() wrote for the byte tokenizer loads as the byte
  /// tokenizer again.
  static std::unique_ptr<Tokenizer> from_file(const std::filesystem::path& tokenizer_json);

  /// Text -> ids, as HF `tokenizers` encodes with add_special_tokens=False: no BOS/EOS or other
  /// template tokens are added (callers insert them). Special tokens that appear literally in
  /// TEXT become their ids when PARSE_SPECIAL, else plain text (HF's `encode_special_tokens`;
  /// non-special added tokens are matched either way, as HF does). The BPE tokenizer throws
  /// kiln::Error (user) when TEXT is not valid UTF-8; the byte tokenizer takes any bytes.
  virtual std::vector<int64_t> encode(std::string_view text, bool parse_special = true) const = 0;
  /// Ids -> text, as HF `tokenizers` decodes: ids that name no token are skipped, special tokens
  /// too with SKIP_SPECIAL; byte sequences that are not valid UTF-8 become U+FFFD (BPE). The
  /// byte tokenizer returns the bytes as they are, so decode(encode(x)) == x for any bytes.
  virtual std::string decode(std::span<const int64_t> ids, bool skip_special = false) const = 0;
  /// Highest id + 1, added tokens included.
  virtual int64_t vocab_size() const = 0;
  /// TOKEN's id: added tokens first, then the vocabulary (byte tokenizer: the ByteLevel
  /// character of a byte, e.g. "Ġ" for a space, as in the tokenizer.json save() writes).
  virtual std::optional<int64_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int64_t id) const = 0;
  /// Whether ID is a special token (skipped by decode with skip_special).
  virtual bool is_special(int64_t id) const = 0;
  /// "byte" or "bpe".
  virtual std::string kind() const = 0;
  /// Writes tokenizer.json and tokenizer_config.json into DIR (created if missing) so that HF
  /// `AutoTokenizer` and `tokenizers` load it with identical ids. BPE: the tokenizer.json as
  /// read, and the tokenizer_config.json, special_tokens_map.json and chat_template.jinja that
  /// were beside it (a minimal tokenizer_config.json where there was none). Byte tokenizer: a
  /// byte-level BPE with no merges whose vocabulary maps each byte's ByteLevel character to id =
  /// byte value, special tokens as added tokens. Files are fsync'ed; failures to write are
  /// internal errors.
  virtual void save(const std::filesystem::path& dir) const = 0;

  /// The ids of the tokens tokenizer_config.json names bos_token, eos_token, pad_token (or that
  /// bytes() was given); nullopt where none.
  std::optional<int64_t> bos_id() const { return bos_id_; }
  std::optional<int64_t> eos_id() const { return eos_id_; }
  std::optional<int64_t> pad_id() const { return pad_id_; }

 protected:
  std::optional<int64_t> bos_id_;
  std::optional<int64_t> eos_id_;
  std::optional<int64_t> pad_id_;
};

} // namespace kiln::io
