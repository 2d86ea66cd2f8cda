#include "data/dataset.h"

#include "io/files.h"
#include "kiln/sdk/error.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>

namespace kiln::data {
namespace {

using nlohmann::json;

// A document being assembled from pieces, each with its target flag.
struct Builder {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> targets;

  void add(const io::Tokenizer& tokenizer, std::string_view text, bool target) {
    for (const int64_t id : tokenizer.encode(text)) {
      tokens.push_back(static_cast<int32_t>(id));
      targets.push_back(target ? 1 : 0);
    }
  }
  void add_id(int64_t id, bool target) {
    tokens.push_back(static_cast<int32_t>(id));
    targets.push_back(target ? 1 : 0);
  }
};

std::string replace_role(std::string_view pattern, std::string_view role) {
  std::string out(pattern);
  for (size_t at = out.find("{role}"); at != std::string::npos; at = out.find("{role}", at)) {
    out.replace(at, 6, role);
    at += role.size();
  }
  return out;
}

const json& string_field(const json& object, const char* key, const std::string& where,
                         std::string_view format) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_string()) {
    user_error("{}: format '{}' needs a string field \"{}\"{}; found {}", where, format, key,
               it == object.end() ? "" : fmt::format(" (it is {})", it->type_name()),
               object.dump().substr(0, 120));
  }
  return *it;
}

} // namespace

std::optional<Format> parse_format(std::string_view name) {
  if (name == "text") return Format::kText;
  if (name == "prompt_completion") return Format::kPromptCompletion;
  if (name == "chat") return Format::kChat;
  return std::nullopt;
}

ChatTemplate chat_template(std::string_view family) {
  // GLM-4.5 / GLM-5: "[gMASK]<sop><|user|>\n...<|assistant|>\n..." (the turn ends where the next
  // role tag begins). Everything else: ChatML, as Nemotron 3 uses.
  if (family == "glm4_moe" || family == "glm_moe_dsa") {
    return {.begin = "[gMASK]<sop>", .turn_begin = "<|{role}|>\n", .turn_end = ""};
  }
  return {.begin = "", .turn_begin = "<|im_start|>{role}\n", .turn_end = "<|im_end|>\n"};
}

void Corpus::add(std::span<const int32_t> tokens, std::span<const uint8_t> targets) {
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  targets_.insert(targets_.end(), targets.begin(), targets.end());
  offsets_.push_back(static_cast<int64_t>(tokens_.size()));
}

std::span<const int32_t> Corpus::tokens(size_t doc) const {
  return {tokens_.data() + offsets_[doc], static_cast<size_t>(offsets_[doc + 1] - offsets_[doc])};
}

std::span<const uint8_t> Corpus::targets(size_t doc) const {
  return {targets_.data() + offsets_[doc], static_cast<size_t>(offsets_[doc + 1] - offsets_[doc])};
}

Corpus Corpus::load(const std::vector<std::filesystem::path>& files, const io::Tokenizer& tokenizer,
                    const EncodeOptions& options) {
  KILN_CHECK_USER(options.seq_len >= 2, "data.seq_len: expected >= 2, found {}", options.seq_len);
  KILN_CHECK_USER(tokenizer.vocab_size() <= std::numeric_limits<int32_t>::max(),
                  "tokenizer: {} ids do not fit the corpus' int32 storage", tokenizer.vocab_size());
  const std::string_view format_name = options.format == Format::kText   ? "text"
                                       : options.format == Format::kChat ? "chat"
                                                                         : "prompt_completion";
  const ChatTemplate chat = chat_template(options.family);
  const bool all_targets = !options.answer_only_loss;
  Corpus corpus;
  for (const auto& file : files) {
    const auto text = io::read_file(file);
    KILN_CHECK_USER(text.has_value(),
                    "cannot read data file '{}': {}; check data.train / "
                    "data.validation",
                    file.string(),
                    std::filesystem::exists(file) ? "not a readable file" : "no such file");
    size_t line_number = 0;
    for (size_t begin = 0; begin < text->size();) {
      size_t end = text->find('\n', begin);
      if (end == std::string::npos) end = text->size();
      const std::string_view line(text->data() + begin, end - begin);
      begin = end + 1;
      ++line_number;
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      const std::string where = fmt::format("{}:{}", file.string(), line_number);
      json record;
      try {
        record = json::parse(line);
      } catch (const json::parse_error& e) {
        user_error("{}: not a JSON line ({}); each line of a JSONL file is one JSON object", where,
                   std::string(e.what()).substr(std::string(e.what()).find(' ') + 1));
      }
      KILN_CHECK_USER(record.is_object(), "{}: expected a JSON object, found {}", where,
                      record.type_name());

      Builder doc;
      switch (options.format) {
        case Format::kText:
          doc.add(tokenizer, string_field(record, "text", where, format_name).get<std::string>(),
                  true);
          break;
        case Format::kPromptCompletion:
          doc.add(tokenizer, string_field(record, "prompt", where, format_name).get<std::string>(),
                  all_targets);
          doc.add(tokenizer,
                  string_field(record, "completion", where, format_name).get<std::string>(), true);
          break;
        case Format::kChat: {
          const auto messages = record.find("messages");
          KILN_CHECK_USER(messages != record.end() && messages->is_array() && !messages->empty(),
                          "{}: format 'chat' needs \"messages\": a non-empty array of {{\"role\", "
                          "\"content\"}} objects",
                          where);
          doc.add(tokenizer, chat.begin, all_targets);
          bool any_answer = false;
          for (size_t m = 0; m < messages->size(); ++m) {
            const json& message = (*messages)[m];
            const std::string at = fmt::format("{} (message {})", where, m);
            KILN_CHECK_USER(message.is_object(), "{}: expected an object with role and content",
                            at);
            const std::string role = string_field(message, "role", at, format_name);
            const std::string content = string_field(message, "content", at, format_name);
            KILN_CHECK_USER(
                role == "system" || role == "user" || role == "assistant" || role == "tool",
                "{}: role '{}': expected system, user, assistant or tool", at, role);
            const bool answer = role == "assistant";
            any_answer |= answer;
            doc.add(tokenizer, replace_role(chat.turn_begin, role), all_targets);
            doc.add(tokenizer, content, answer || all_targets);
            doc.add(tokenizer, chat.turn_end, answer || all_targets);
          }
          KILN_CHECK_USER(any_answer || all_targets,
                          "{}: no assistant message, so nothing to learn with "
                          "data.answer_only_loss = true",
                          where);
          break;
        }
      }
      if (options.eos_id) doc.add_id(*options.eos_id, true);
      if (doc.tokens.empty()) continue;

      const auto n = static_cast<int64_t>(doc.tokens.size());
      if (options.format == Format::kText) {
        for (int64_t start = 0; start < n; start += options.seq_len) {
          const int64_t len = std::min(options.seq_len, n - start);
          if (len < 2) continue; // nothing to predict
          corpus.add(std::span(doc.tokens).subspan(start, len),
                     std::span(doc.targets).subspan(start, len));
        }
      } else if (n > options.seq_len) {
        if (options.drop_overlong) {
          ++corpus.dropped_;
        } else {
          ++corpus.truncated_;
          corpus.add(std::span(doc.tokens).first(options.seq_len),
                     std::span(doc.targets).first(options.seq_len));
        }
      } else {
        corpus.add(doc.tokens, doc.targets);
      }
    }
  }
  return corpus;
}

} // namespace kiln::data
