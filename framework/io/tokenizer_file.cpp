// Reading HF tokenizer.json: every field checked against what kiln reproduces exactly; the
// messages name the file and the field. Not part of the io API.
#include "io/tokenizer_file.h"

#include "io/detail.h"
#include "io/unicode.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/log.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <stdexcept>

namespace kiln::io::detail {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

/// Reads one JSON file; every failure is a user error "FILE: FIELD: problem".
class Reader {
 public:
  explicit Reader(const fs::path& file) : file_(file.string()) {}

  [[noreturn]] void fail(std::string_view field, std::string_view problem) const {
    if (field.empty()) user_error("{}: {}", file_, problem);
    user_error("{}: {}: {}", file_, field, problem);
  }

  static std::string at(std::string_view field, std::string_view key) {
    return field.empty() ? std::string(key) : fmt::format("{}.{}", field, key);
  }
  static std::string at(std::string_view field, size_t index) {
    return fmt::format("{}[{}]", field, index);
  }

  /// VALUE (at FIELD) must be an object whose keys are among KNOWN.
  void object(const json& value, std::string_view field,
              std::initializer_list<std::string_view> known) const {
    if (!value.is_object()) fail(field, fmt::format("expected an object, found {}", brief(value)));
    for (const auto& [key, _] : value.items()) {
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        std::string names;
        for (std::string_view k : known) names += (names.empty() ? "" : ", ") + std::string(k);
        fail(at(field, key), fmt::format("unknown key (kiln reads {})", names));
      }
    }
  }

  const json* find(const json& object, std::string_view key) const {
    const auto it = object.find(std::string(key));
    return it == object.end() ? nullptr : &*it;
  }

  const json& require(const json& object, std::string_view field, std::string_view key) const {
    const json* value = find(object, key);
    if (value == nullptr) fail(at(field, key), "missing");
    return *value;
  }

  bool boolean(const json& object, std::string_view field, std::string_view key,
               std::optional<bool> fallback) const {
    const json* value = find(object, key);
    if (value == nullptr) {
      if (!fallback) fail(at(field, key), "missing (true or false)");
      return *fallback;
    }
    if (!value->is_boolean()) {
      fail(at(field, key), fmt::format("expected true or false, found {}", brief(*value)));
    }
    return value->get<bool>();
  }

  std::string string(const json& value, std::string_view field) const {
    if (!value.is_string()) fail(field, fmt::format("expected a string, found {}", brief(value)));
    return value.get<std::string>();
  }

  /// OBJECT's "type".
  std::string type(const json& object, std::string_view field) const {
    if (!object.is_object())
      fail(field, fmt::format("expected an object, found {}", brief(object)));
    return string(require(object, field, "type"), at(field, "type"));
  }

  static std::string brief(const json& value) { return detail::brief(value); }
  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

/// normalizer: null, NFC, or a Sequence of NFC. Returns whether NFC applies.
bool read_normalizer(const Reader& r, const json& value) {
  if (value.is_null()) return false;
  const std::string type = r.type(value, "normalizer");
  if (type == "NFC") {
    r.object(value, "normalizer", {"type"});
    return true;
  }
  if (type == "Sequence") {
    r.object(value, "normalizer", {"type", "normalizers"});
    const json& list = r.require(value, "normalizer", "normalizers");
    if (!list.is_array()) r.fail("normalizer.normalizers", "expected a list");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string field = Reader::at("normalizer.normalizers", i);
      const std::string inner = r.type(list[i], field);
      if (inner != "NFC") {
        r.fail(Reader::at(field, "type"),
               fmt::format("'{}' is not supported; kiln implements the normalizer NFC (or none)",
                           inner));
      }
      r.object(list[i], field, {"type"});
    }
    return !list.empty();
  }
  r.fail("normalizer.type",
         fmt::format("'{}' is not supported; kiln implements the normalizer NFC (or none)", type));
}

/// A pattern from the file as a compiled PCRE2 regex; FIELD names it for errors.
std::unique_ptr<Regex> compile(const Reader& r, std::string_view field, std::string_view pattern,
                               bool literal) {
  try {
    if (literal) {
      if (pattern.empty()) r.fail(field, "an empty String pattern is not supported");
      return std::make_unique<Regex>(pcre2_literal(pattern));
    }
    return std::make_unique<Regex>(oniguruma_to_pcre2(pattern));
  } catch (const UnsupportedPattern& error) {
    r.fail(field, fmt::format("cannot run the regex {} as HF does: {}",
                              Reader::brief(json(pattern)), error.what()));
  }
}

SplitStep read_split(const Reader& r, const json& value, const std::string& field) {
  r.object(value, field, {"type", "pattern", "behavior", "invert"});
  const std::string pattern_field = Reader::at(field, "pattern");
  const json& pattern = r.require(value, field, "pattern");
  r.object(pattern, pattern_field, {"Regex", "String"});
  if (pattern.size() != 1)
    r.fail(pattern_field, "expected one of {\"Regex\": ...} or {\"String\": ...}");
  const bool literal = pattern.contains("String");
  const std::string kind = literal ? "String" : "Regex";
  const std::string text = r.string(pattern[kind], Reader::at(pattern_field, kind));

  static const std::pair<std::string_view, SplitBehavior> kBehaviors[] = {
      {"Removed", SplitBehavior::kRemoved},
      {"Isolated", SplitBehavior::kIsolated},
      {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
      {"MergedWithNext", SplitBehavior::kMergedWithNext},
      {"Contiguous", SplitBehavior::kContiguous}};
  const std::string behavior_field = Reader::at(field, "behavior");
  const std::string behavior = r.string(r.require(value, field, "behavior"), behavior_field);
  const auto found = std::find_if(std::begin(kBehaviors), std::end(kBehaviors),
                                  [&](const auto& b) { return b.first == behavior; });
  if (found == std::end(kBehaviors)) {
    r.fail(behavior_field, fmt::format("unknown behavior '{}' (expected Removed, Isolated, "
                                       "MergedWithPrevious, MergedWithNext or Contiguous)",
                                       behavior));
  }
  return SplitStep{.regex = compile(r, Reader::at(pattern_field, kind), text, literal),
                   .behavior = found->second,
                   .invert = r.boolean(value, field, "invert", false)};
}

void read_byte_level(const Reader& r, const json& value, const std::string& field,
                     TokenizerFile& parts) {
  r.object(value, field, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
  parts.add_prefix_space = r.boolean(value, field, "add_prefix_space", std::nullopt);
  parts.use_regex = r.boolean(value, field, "use_regex", true);
  r.boolean(value, field, "trim_offsets", true); // offsets only
}

/// pre_tokenizer: ByteLevel, or a Sequence of Split steps ending with ByteLevel.
void read_pre_tokenizer(const Reader& r, const json& value, TokenizerFile& parts) {
  constexpr std::string_view kSupported =
      "kiln supports ByteLevel, alone or last in a Sequence after Split steps";
  if (value.is_null()) r.fail("pre_tokenizer", fmt::format("missing; {}", kSupported));
  const std::string type = r.type(value, "pre_tokenizer");
  if (type == "ByteLevel") {
    read_byte_level(r, value, "pre_tokenizer", parts);
    return;
  }
  if (type != "Sequence") {
    r.fail("pre_tokenizer.type", fmt::format("'{}' is not supported; {}", type, kSupported));
  }
  r.object(value, "pre_tokenizer", {"type", "pretokenizers"});
  const json& list = r.require(value, "pre_tokenizer", "pretokenizers");
  if (!list.is_array()) r.fail("pre_tokenizer.pretokenizers", "expected a list");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string field = Reader::at("pre_tokenizer.pretokenizers", i);
    const std::string inner = r.type(list[i], field);
    const bool last = i + 1 == list.size();
    if (inner == "Split" && !last) {
      parts.splits.push_back(read_split(r, list[i], field));
    } else if (inner == "ByteLevel" && last) {
      read_byte_level(r, list[i], field, parts);
    } else {
      r.fail(Reader::at(field, "type"),
             fmt::format("'{}' {}is not supported; {}", inner,
                         inner == "Split" || inner == "ByteLevel" ? "in this place " : "",
                         kSupported));
    }
  }
  if (list.empty()) r.fail("pre_tokenizer.pretokenizers", fmt::format("empty; {}", kSupported));
}

void read_decoder(const Reader& r, const json& value) {
  constexpr std::string_view kSupported = "kiln supports the ByteLevel decoder";
  if (value.is_null()) r.fail("decoder", fmt::format("missing; {}", kSupported));
  std::string type = r.type(value, "decoder");
  const json* decoder = &value;
  std::string field = "decoder";
  if (type == "Sequence") {
    r.object(value, "decoder", {"type", "decoders"});
    const json& list = r.require(value, "decoder", "decoders");
    if (!list.is_array() || list.size() != 1) {
      r.fail("decoder.decoders", fmt::format("expected one ByteLevel decoder; {}", kSupported));
    }
    field = "decoder.decoders[0]";
    decoder = &list[0];
    type = r.type(*decoder, field);
  }
  if (type != "ByteLevel") {
    r.fail(Reader::at(field, "type"), fmt::format("'{}' is not supported; {}", type, kSupported));
  }
  r.object(*decoder, field, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
}

/// post_processor: only what adds special tokens (never, for encode) or fixes offsets.
void read_post_processor(const Reader& r, const json& value, const std::string& field) {
  if (value.is_null()) return;
  const std::string type = r.type(value, field);
  if (type == "Sequence") {
    const json& list = r.require(value, field, "processors");
    if (!list.is_array()) r.fail(Reader::at(field, "processors"), "expected a list");
    for (size_t i = 0; i < list.size(); ++i) {
      read_post_processor(r, list[i], Reader::at(Reader::at(field, "processors"), i));
    }
    return;
  }
  for (std::string_view known :
       {"ByteLevel", "TemplateProcessing", "RobertaProcessing", "BertProcessing"}) {
    if (type == known) return;
  }
  r.fail(Reader::at(field, "type"),
         fmt::format("'{}' is not supported (kiln knows ByteLevel, TemplateProcessing, "
                     "RobertaProcessing, BertProcessing and Sequence)",
                     type));
}

int32_t read_id(const Reader& r, const json& value, const std::string& field) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
      value.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
    r.fail(field, fmt::format("expected a token id (an integer from 0 to 2^31-1), found {}",
                              Reader::brief(value)));
  }
  return static_cast<int32_t>(value.get<int64_t>());
}

std::vector<std::pair<std::string, std::string>> read_merges(const Reader& r, const json& value) {
  if (!value.is_array()) r.fail("model.merges", "expected a list");
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(value.size());
  // All "left right" strings (HF's legacy form; "#version" lines skipped) or all pairs.
  const bool strings = !value.empty() && value[0].is_string();
  for (size_t i = 0; i < value.size(); ++i) {
    const json& entry = value[i];
    const std::string field = Reader::at("model.merges", i);
    if (strings) {
      if (!entry.is_string()) {
        r.fail(field, fmt::format("expected a \"left right\" string like the first entry, "
                                  "found {}",
                                  Reader::brief(entry)));
      }
      const auto& line = entry.get_ref<const std::string&>();
      if (line.starts_with("#version")) continue;
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        const size_t parts = static_cast<size_t>(std::count(line.begin(), line.end(), ' ')) + 1;
        r.fail(field, fmt::format("{} has {} space-separated part{}; expected \"left right\"",
                                  Reader::brief(entry), parts, parts == 1 ? "" : "s"));
      }
      merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else {
      if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string() ||
          !entry[1].is_string()) {
        r.fail(field, fmt::format("expected a pair [\"left\", \"right\"] like the first entry, "
                                  "found {}",
                                  Reader::brief(entry)));
      }
      merges.emplace_back(entry[0].get<std::string>(), entry[1].get<std::string>());
    }
  }
  return merges;
}

std::unique_ptr<BpeModel> read_model(const Reader& r, const json& root) {
  const json* found = r.find(root, "model");
  if (found == nullptr) r.fail("", "missing 'model' (the BPE model: vocab and merges)");
  const json& model = *found;
  if (!model.is_object()) {
    r.fail("model", fmt::format("expected an object, found {}", Reader::brief(model)));
  }
  if (!model.contains("type")) r.fail("model.type", "missing; kiln reads 'BPE' models");
  const std::string type = r.type(model, "model");
  if (type != "BPE") {
    r.fail("model.type",
           fmt::format("'{}' is not supported; kiln reads byte-level BPE models ('BPE')", type));
  }
  r.object(model, "model",
           {"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
            "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges"});
  if (const json* dropout = r.find(model, "dropout");
      dropout != nullptr && !dropout->is_null() &&
      !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    r.fail("model.dropout", fmt::format("{} is not supported (BPE dropout makes encoding "
                                        "random); expected null",
                                        Reader::brief(*dropout)));
  }
  for (std::string_view key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json* affix = r.find(model, key);
    if (affix != nullptr && !affix->is_null() && !(affix->is_string() && affix->empty())) {
      r.fail(Reader::at("model", key),
             fmt::format("{} is not supported (byte-level BPE uses none); expected null",
                         Reader::brief(*affix)));
    }
  }
  if (r.boolean(model, "model", "byte_fallback", false)) {
    r.fail("model.byte_fallback",
           "true is not supported (kiln reads byte-level BPE, whose pre-tokenizer already maps "
           "every byte to a character)");
  }
  BpeOptions options;
  options.ignore_merges = r.boolean(model, "model", "ignore_merges", false);
  options.fuse_unk = r.boolean(model, "model", "fuse_unk", false);
  if (const json* unk = r.find(model, "unk_token"); unk != nullptr && !unk->is_null()) {
    options.unk_token = r.string(*unk, "model.unk_token");
  }

  const json& vocab_json = r.require(model, "model", "vocab");
  if (!vocab_json.is_object()) {
    r.fail("model.vocab",
           fmt::format("expected an object of token: id, found {}", Reader::brief(vocab_json)));
  }
  StringMap<int32_t> vocab;
  vocab.reserve(vocab_json.size());
  for (const auto& [token, id] : vocab_json.items()) {
    vocab.emplace(token, read_id(r, id, fmt::format("model.vocab[{}]", json(token).dump())));
  }
  const auto merges = read_merges(r, r.require(model, "model", "merges"));
  try {
    return std::make_unique<BpeModel>(std::move(vocab), merges, std::move(options));
  } catch (const std::invalid_argument& error) {
    r.fail("", error.what());
  }
}

/// added_tokens with the ids HF tokenizers gives them: the id in the file is only a check (HF
/// warns when it differs and uses its own): a token in the vocabulary keeps its vocabulary id,
/// the others are numbered on from the vocabulary's size in file order.
std::vector<AddedToken> read_added_tokens(const Reader& r, const json& root, const BpeModel* model,
                                          size_t model_size) {
  std::vector<AddedToken> tokens;
  const json* list = r.find(root, "added_tokens");
  if (list == nullptr || list->is_null()) return tokens;
  if (!list->is_array()) r.fail("added_tokens", "expected a list");
  std::optional<int64_t> max_added;
  for (size_t i = 0; i < list->size(); ++i) {
    const json& entry = (*list)[i];
    const std::string field = Reader::at("added_tokens", i);
    r.object(entry, field,
             {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"});
    AddedToken token;
    token.content = r.string(r.require(entry, field, "content"), Reader::at(field, "content"));
    const int32_t file_id = read_id(r, r.require(entry, field, "id"), Reader::at(field, "id"));
    if (r.boolean(entry, field, "single_word", false)) {
      r.fail(Reader::at(field, "single_word"),
             "true is not supported (HF decides word boundaries with its own Unicode tables); "
             "expected false");
    }
    token.lstrip = r.boolean(entry, field, "lstrip", false);
    token.rstrip = r.boolean(entry, field, "rstrip", false);
    token.normalized = r.boolean(entry, field, "normalized", true);
    token.special = r.boolean(entry, field, "special", false);
    if (token.content.empty()) continue; // HF ignores empty tokens
    const auto same = std::find_if(tokens.begin(), tokens.end(),
                                   [&](const AddedToken& t) { return t.content == token.content; });
    if (same != tokens.end()) {
      r.fail(Reader::at(field, "content"),
             fmt::format("{} appears twice in added_tokens; keep one", json(token.content).dump()));
    }
    if (const auto in_vocab = model != nullptr ? model->token_to_id(token.content) : std::nullopt) {
      token.id = *in_vocab;
    } else if (!max_added) {
      token.id = static_cast<int64_t>(model_size);
    } else {
      token.id = *max_added >= static_cast<int64_t>(model_size) || model_size == 0
                     ? *max_added + 1
                     : static_cast<int64_t>(model_size);
    }
    max_added = std::max(max_added.value_or(token.id), token.id);
    if (token.id != file_id) {
      log_warn(
          "{}: {}: {} has id {} in the file, but HF tokenizers gives it id {}, and so does "
          "kiln",
          r.file(), field, json(token.content).dump(), file_id, token.id);
    }
    tokens.push_back(std::move(token));
  }
  return tokens;
}

/// Whether the file is what ByteTokenizer::save writes (any byte tokenizer): then it loads as the
/// byte tokenizer again.
bool is_byte_tokenizer(const json& root) {
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", true},
                           {"use_regex", false}};
  if (!root.contains("pre_tokenizer") || root["pre_tokenizer"] != byte_level) return false;
  if (root.contains("normalizer") && !root["normalizer"].is_null()) return false;
  const json& model = root["model"];
  if (!model.contains("merges") || !model["merges"].empty()) return false;
  if (!model.contains("vocab") || model["vocab"].size() != 256) return false;
  for (int b = 0; b < 256; ++b) {
    const auto it = model["vocab"].find(unicode::byte_level_chars()[b]);
    if (it == model["vocab"].end() || *it != b) return false;
  }
  if (model.contains("unk_token") && !model["unk_token"].is_null()) return false;
  int64_t next = 256;
  for (const json& token : root.value("added_tokens", json::array())) {
    if (token.value("id", -1) != next++ || !token.value("special", false) ||
        token.value("normalized", true) || token.value("lstrip", false) ||
        token.value("rstrip", false)) {
      return false;
    }
  }
  return true;
}
} // namespace

TokenizerFile read_tokenizer_file(const fs::path& file, std::string_view text) {
  const Reader r(file);
  const json root = parse_json_file(file, text);
  if (!root.is_object()) r.fail("", "expected a JSON object (an HF tokenizer.json)");
  r.object(root, "",
           {"version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer",
            "post_processor", "decoder", "model"});
  TokenizerFile parts;
  parts.model = read_model(r, root);
  parts.nfc = read_normalizer(r, root.value("normalizer", json()));
  read_pre_tokenizer(r, root.value("pre_tokenizer", json()), parts);
  read_decoder(r, root.value("decoder", json()));
  read_post_processor(r, root.value("post_processor", json()), "post_processor");
  const size_t model_size = root.at("model").at("vocab").size();
  parts.added = read_added_tokens(r, root, parts.model.get(), model_size);
  parts.byte_tokenizer = is_byte_tokenizer(root);
  return parts;
}

SpecialTokenNames read_special_token_names(const fs::path& file, std::string_view text) {
  const Reader r(file);
  const json config = parse_json_file(file, text);
  if (!config.is_object()) r.fail("", "expected a JSON object");
  // Each a string, {"content": ...}, or null.
  auto name = [&](std::string_view key) -> std::optional<std::string> {
    const json* value = r.find(config, key);
    if (value == nullptr || value->is_null()) return std::nullopt;
    if (value->is_object() && value->contains("content")) {
      return r.string((*value)["content"], Reader::at(key, "content"));
    }
    return r.string(*value, key);
  };
  return {.bos = name("bos_token"), .eos = name("eos_token"), .pad = name("pad_token")};
}

} // namespace kiln::io::detail
