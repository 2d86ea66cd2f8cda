// Training data: JSONL files in three formats, tokenized into documents whose tokens carry a loss
// mask. See README.md for the formats, the chat templates and how long documents are handled.
#pragma once

#include "io/tokenizer.h"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace kiln::data {

enum class Format { kText, kPromptCompletion, kChat };

/// "text" | "prompt_completion" | "chat"; nullopt for anything else.
std::optional<Format> parse_format(std::string_view name);

/// How files become documents.
struct EncodeOptions {
  Format format = Format::kText;
  int64_t seq_len = 2048;
  bool answer_only_loss = true;  ///< prompt_completion / chat: targets only in answers
  bool drop_overlong = true;     ///< prompt_completion / chat: drop (true) or truncate (false)
  std::optional<int64_t> eos_id; ///< appended to every document when set
  std::string family;            ///< picks the chat template (README.md)
};

/// Tokenized documents, stored flat. Each token has a target flag: 1 when the loss predicts it
/// from the tokens before it (the first token of a document never is).
class Corpus {
 public:
  /// Reads every line of every file (blank lines skipped). Errors name FILE:LINE and what the
  /// format expects. Text documents longer than seq_len are split into seq_len pieces; longer
  /// prompt_completion / chat examples are dropped or truncated (EncodeOptions::drop_overlong).
  static Corpus load(const std::vector<std::filesystem::path>& files,
                     const io::Tokenizer& tokenizer, const EncodeOptions& options);

  /// Adds one document (tokens and their target flags, same length, at least one token).
  void add(std::span<const int32_t> tokens, std::span<const uint8_t> targets);

  size_t size() const { return offsets_.size() - 1; }
  std::span<const int32_t> tokens(size_t doc) const;
  std::span<const uint8_t> targets(size_t doc) const;
  int64_t total_tokens() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t dropped() const { return dropped_; } ///< examples dropped as overlong
  int64_t truncated() const { return truncated_; }

 private:
  std::vector<int32_t> tokens_;
  std::vector<uint8_t> targets_;
  std::vector<int64_t> offsets_{0};
  int64_t dropped_ = 0;
  int64_t truncated_ = 0;
};

/// The chat template of a model family: what surrounds each message. Answers (assistant turns)
/// are `content` + `turn_end`; with answer_only_loss only they (and the EOS) are targets.
struct ChatTemplate {
  std::string begin;      ///< once, before the first message
  std::string turn_begin; ///< before each message; "{role}" is replaced by the role
  std::string turn_end;   ///< after each message
};
ChatTemplate chat_template(std::string_view family);

} // namespace kiln::data
