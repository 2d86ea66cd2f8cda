// The byte tokenizer, and byte-level BPE read from HF tokenizer.json. Loading checks every field
// against what kiln reproduces exactly; encoding follows HF tokenizers' pipeline step by step:
// added tokens in the raw text -> normalizer -> added tokens in the normalized text ->
// pre-tokenizers (Split..., ByteLevel) -> BPE model.
#include "io/tokenizer.h"

#include "io/added_tokens.h"
#include "io/bpe.h"
#include "io/detail.h"
#include "io/tokenizer_regex.h"
#include "io/unicode.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/log.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <system_error>
#include <unordered_map>

namespace kiln::io {
namespace {

namespace fs = std::filesystem;
using detail::AddedToken;
using nlohmann::json;

constexpr std::string_view kTokenizerFile = "tokenizer.json";
constexpr std::string_view kConfigFile = "tokenizer_config.json";
/// Files beside tokenizer.json that save() carries over.
constexpr std::string_view kSideFiles[] = {"tokenizer_config.json", "special_tokens_map.json",
                                           "chat_template.jinja"};
/// The regex ByteLevel applies with use_regex (GPT-2's), in Oniguruma syntax.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

/// Files to write beside tokenizer.json: name, content.
using SideFiles = std::vector<std::pair<std::string, std::string>>;

// ---- added tokens ---------------------------------------------------------------------------

/// The added tokens of one tokenizer and the two matchers over them (raw and normalized text).
/// Not movable: the matchers point into tokens_.
class AddedVocabulary {
 public:
  /// TOKENS with their final ids; NFC: normalized tokens are matched by their NFC form.
  AddedVocabulary(std::vector<AddedToken> tokens, bool nfc) : tokens_(std::move(tokens)) {
    std::vector<std::pair<std::string, const AddedToken*>> raw, normalized;
    // HF's order: special tokens, then the others, each in file order (it matters only for
    // two tokens with the same normalized form: the first wins).
    for (bool special : {true, false}) {
      for (const AddedToken& token : tokens_) {
        if (token.special != special) continue;
        if (token.normalized) {
          normalized.emplace_back(nfc ? unicode::nfc(token.content) : token.content, &token);
        } else {
          raw.emplace_back(token.content, &token);
        }
      }
    }
    for (size_t i = 0; i < tokens_.size(); ++i) {
      by_id_.emplace(tokens_[i].id, i);
      by_content_.emplace(tokens_[i].content, i);
    }
    raw_ = detail::AddedTokenMatcher(raw);
    normalized_ = detail::AddedTokenMatcher(normalized);
  }
  AddedVocabulary(const AddedVocabulary&) = delete;
  AddedVocabulary& operator=(const AddedVocabulary&) = delete;

  const AddedToken* by_id(int64_t id) const {
    const auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &tokens_[it->second];
  }
  const AddedToken* by_content(std::string_view content) const {
    const auto it = by_content_.find(content);
    return it == by_content_.end() ? nullptr : &tokens_[it->second];
  }
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  int64_t id_end() const {
    int64_t end = 0;
    for (const AddedToken& token : tokens_) end = std::max(end, token.id + 1);
    return end;
  }
  const detail::AddedTokenMatcher& raw() const { return raw_; }
  const detail::AddedTokenMatcher& normalized() const { return normalized_; }

 private:
  std::vector<AddedToken> tokens_;
  std::unordered_map<int64_t, size_t> by_id_;
  detail::StringMap<size_t> by_content_;
  detail::AddedTokenMatcher raw_;
  detail::AddedTokenMatcher normalized_;
};

/// TOKEN (one token's text) as the ByteLevel decoder decodes it alone: the bytes its characters
/// stand for, or the text itself when one is not in the byte alphabet.
std::string byte_level_decode(std::string_view token) {
  std::string bytes;
  for (size_t at = 0; at < token.size();) {
    const auto byte = unicode::byte_level_byte(unicode::next_code_point(token, at));
    if (!byte) return std::string(token);
    bytes += static_cast<char>(*byte);
  }
  return bytes;
}

// ---- saving ---------------------------------------------------------------------------------

void save_files(const fs::path& dir, std::string_view tokenizer_json, const SideFiles& side_files,
                const std::string& generated_config) {
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) internal_error("{}: cannot create the folder: {}", dir.string(), error.message());
  detail::write_text_file(dir / kTokenizerFile, tokenizer_json);
  bool has_config = false;
  for (const auto& [name, content] : side_files) {
    detail::write_text_file(dir / name, content);
    has_config = has_config || name == kConfigFile;
  }
  if (!has_config) detail::write_text_file(dir / kConfigFile, generated_config);
  detail::sync_folder(dir);
}

/// A tokenizer_config.json for a tokenizer.json that came without one: enough for HF
/// AutoTokenizer to load tokenizer.json as is (no cleanup of spaces when decoding).
std::string minimal_config(const Tokenizer& tokenizer) {
  nlohmann::ordered_json config;
  auto name = [&](std::optional<int64_t> id) -> json {
    if (!id) return nullptr;
    return *tokenizer.id_to_token(*id);
  };
  config["bos_token"] = name(tokenizer.bos_id());
  config["eos_token"] = name(tokenizer.eos_id());
  config["pad_token"] = name(tokenizer.pad_id());
  config["clean_up_tokenization_spaces"] = false;
  config["tokenizer_class"] = "PreTrainedTokenizerFast";
  return config.dump(2) + "\n";
}

// ---- what both tokenizers share --------------------------------------------------------------

/// Added tokens, the files save() carries along, and the bos/eos/pad ids.
class TokenizerBase : public Tokenizer {
 public:
  TokenizerBase(std::vector<AddedToken> added, bool nfc, SideFiles side_files)
      : added_(std::move(added), nfc), side_files_(std::move(side_files)) {}

  void set_special_ids(std::optional<int64_t> bos, std::optional<int64_t> eos,
                       std::optional<int64_t> pad) {
    bos_id_ = bos;
    eos_id_ = eos;
    pad_id_ = pad;
  }

  bool is_special(int64_t id) const override {
    const AddedToken* token = added_.by_id(id);
    return token != nullptr && token->special;
  }

 protected:
  /// TOKENIZER_JSON and the side files into DIR (a minimal tokenizer_config.json if none).
  void save_with(const fs::path& dir, std::string_view tokenizer_json) const {
    save_files(dir, tokenizer_json, side_files_, minimal_config(*this));
  }

  AddedVocabulary added_;
  SideFiles side_files_;
};

// ---- the byte tokenizer ---------------------------------------------------------------------

class ByteTokenizer final : public TokenizerBase {
 public:
  ByteTokenizer(std::vector<AddedToken> specials, SideFiles side_files)
      : TokenizerBase(std::move(specials), /*nfc=*/false, std::move(side_files)) {}

  std::vector<int64_t> encode(std::string_view text, bool parse_special) const override {
    std::vector<int64_t> ids;
    ids.reserve(text.size());
    std::vector<detail::TextPiece> pieces;
    added_.raw().split(text, parse_special, pieces);
    for (const auto& piece : pieces) {
      if (piece.token != nullptr) {
        ids.push_back(piece.token->id);
        continue;
      }
      for (size_t i = piece.begin; i < piece.end; ++i) {
        ids.push_back(static_cast<unsigned char>(text[i]));
      }
    }
    return ids;
  }

  std::string decode(std::span<const int64_t> ids, bool skip_special) const override {
    std::string out;
    out.reserve(ids.size());
    for (int64_t id : ids) {
      if (id >= 0 && id < 256) {
        out += static_cast<char>(id);
      } else if (const AddedToken* token = added_.by_id(id)) {
        if (!(skip_special && token->special)) out += token->content;
      }
    }
    return out;
  }

  int64_t vocab_size() const override { return std::max<int64_t>(256, added_.id_end()); }

  std::optional<int64_t> token_to_id(std::string_view token) const override {
    if (const AddedToken* added = added_.by_content(token)) return added->id;
    size_t at = 0;
    if (token.empty()) return std::nullopt;
    const auto byte = unicode::byte_level_byte(unicode::next_code_point(token, at));
    if (!byte || at != token.size()) return std::nullopt;
    return *byte;
  }

  std::optional<std::string> id_to_token(int64_t id) const override {
    if (id >= 0 && id < 256) return unicode::byte_level_chars()[id];
    if (const AddedToken* token = added_.by_id(id)) return token->content;
    return std::nullopt;
  }

  std::string kind() const override { return "byte"; }

  void save(const fs::path& dir) const override { save_with(dir, tokenizer_json()); }

 private:
  /// A byte-level BPE without merges that HF tokenizers runs with these very ids.
  std::string tokenizer_json() const {
    using ordered = nlohmann::ordered_json;
    ordered added = ordered::array();
    for (const AddedToken& token : added_.tokens()) {
      added.push_back({{"id", token.id},
                       {"content", token.content},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", true}});
    }
    ordered byte_level = {{"type", "ByteLevel"},
                          {"add_prefix_space", false},
                          {"trim_offsets", true},
                          {"use_regex", false}};
    ordered vocab = ordered::object();
    for (int b = 0; b < 256; ++b) vocab[unicode::byte_level_chars()[b]] = b;
    ordered model = {{"type", "BPE"},
                     {"dropout", nullptr},
                     {"unk_token", nullptr},
                     {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr},
                     {"fuse_unk", false},
                     {"byte_fallback", false},
                     {"ignore_merges", false},
                     {"vocab", vocab},
                     {"merges", ordered::array()}};
    ordered file = {
        {"version", "1.0"},          {"truncation", nullptr}, {"padding", nullptr},
        {"added_tokens", added},     {"normalizer", nullptr}, {"pre_tokenizer", byte_level},
        {"post_processor", nullptr}, {"decoder", byte_level}, {"model", model}};
    return file.dump(2) + "\n";
  }
};

// ---- byte-level BPE -------------------------------------------------------------------------

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct SplitStep {
  std::unique_ptr<detail::Regex> regex;
  SplitBehavior behavior;
  bool invert;
};

/// Everything a BpeTokenizer is made of, as read from the file.
struct BpeParts {
  bool nfc = false;
  std::vector<SplitStep> splits;
  bool add_prefix_space = false;
  bool use_regex = true;
  std::unique_ptr<detail::BpeModel> model;
  std::vector<AddedToken> added;
  std::string source; // tokenizer.json as read
  SideFiles side_files;
};

/// TEXT cut the way HF's NormalizedString::split cuts it around REGEX's matches, non-empty pieces
/// appended to OUT.
void split_text(const detail::Regex& regex, SplitBehavior behavior, bool invert,
                std::string_view text, std::vector<std::string_view>& out) {
  struct Segment {
    size_t begin, end;
    bool is_match;
  };
  std::vector<std::pair<size_t, size_t>> matches;
  regex.find_all(text, matches);
  std::vector<Segment> segments;
  size_t previous = 0;
  for (const auto& [start, end] : matches) {
    if (previous != start) segments.push_back({previous, start, false});
    segments.push_back({start, end, true});
    previous = end;
  }
  if (previous != text.size()) segments.push_back({previous, text.size(), false});
  if (invert) {
    for (Segment& s : segments) s.is_match = !s.is_match;
  }

  std::vector<Segment> pieces;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      pieces = segments;
      break;
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments) {
        if (!s.is_match) pieces.push_back(s);
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !pieces.empty()) {
          pieces.back().end = s.end;
        } else {
          pieces.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !pieces.empty()) {
          pieces.back().begin = it->begin;
        } else {
          pieces.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    case SplitBehavior::kContiguous:
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !pieces.empty()) {
          pieces.back().end = s.end;
        } else {
          pieces.push_back(s);
        }
        previous_match = s.is_match;
      }
      break;
  }
  for (const Segment& s : pieces) {
    if (s.end > s.begin) out.push_back(text.substr(s.begin, s.end - s.begin));
  }
}

class BpeTokenizer final : public TokenizerBase {
 public:
  explicit BpeTokenizer(BpeParts parts)
      : TokenizerBase(std::move(parts.added), parts.nfc, std::move(parts.side_files)),
        nfc_(parts.nfc),
        splits_(std::move(parts.splits)),
        add_prefix_space_(parts.add_prefix_space),
        model_(std::move(parts.model)),
        source_(std::move(parts.source)) {
    if (parts.use_regex) {
      byte_level_regex_ = std::make_unique<detail::Regex>(detail::oniguruma_to_pcre2(kGpt2Pattern));
    }
  }

  std::vector<int64_t> encode(std::string_view text, bool parse_special) const override {
    if (const auto bad = unicode::find_invalid_utf8(text)) {
      user_error(
          "cannot encode: the text is not valid UTF-8 (byte {} of {}, 0x{:02X}); the BPE "
          "tokenizer reads UTF-8 only",
          *bad, text.size(), static_cast<unsigned char>(text[*bad]));
    }
    std::vector<int64_t> ids;
    ids.reserve(text.size() / 3 + 1);
    std::vector<detail::TextPiece> raw_pieces, pieces;
    added_.raw().split(text, parse_special, raw_pieces);
    for (const auto& raw : raw_pieces) {
      if (raw.token != nullptr) {
        ids.push_back(raw.token->id);
        continue;
      }
      std::string_view part = text.substr(raw.begin, raw.end - raw.begin);
      std::string normalized;
      if (nfc_) {
        normalized = unicode::nfc(part);
        part = normalized;
      }
      pieces.clear();
      added_.normalized().split(part, parse_special, pieces);
      for (const auto& piece : pieces) {
        if (piece.token != nullptr) {
          ids.push_back(piece.token->id);
        } else {
          pre_tokenize_and_encode(part.substr(piece.begin, piece.end - piece.begin), ids);
        }
      }
    }
    return ids;
  }

  std::string decode(std::span<const int64_t> ids, bool skip_special) const override {
    // Runs of model tokens are decoded together (a character may span tokens); each added token
    // is decoded alone, as HF does.
    std::string out, run;
    for (int64_t id : ids) {
      if (const AddedToken* token = added_.by_id(id)) {
        if (skip_special && token->special) continue;
        out += unicode::from_utf8_lossy(run);
        run.clear();
        out += unicode::from_utf8_lossy(byte_level_decode(token->content));
      } else if (const std::string* bytes = model_->id_to_bytes(id)) {
        run += *bytes;
      }
    }
    out += unicode::from_utf8_lossy(run);
    return out;
  }

  int64_t vocab_size() const override { return std::max(model_->id_end(), added_.id_end()); }

  std::optional<int64_t> token_to_id(std::string_view token) const override {
    if (const AddedToken* added = added_.by_content(token)) return added->id;
    return model_->token_to_id(token);
  }

  std::optional<std::string> id_to_token(int64_t id) const override {
    if (const AddedToken* token = added_.by_id(id)) return token->content;
    if (const std::string* token = model_->id_to_token(id)) return *token;
    return std::nullopt;
  }

  std::string kind() const override { return "bpe"; }

  void save(const fs::path& dir) const override { save_with(dir, source_); }

 private:
  void pre_tokenize_and_encode(std::string_view text, std::vector<int64_t>& ids) const {
    std::vector<std::string_view> pieces{text}, next;
    for (const SplitStep& step : splits_) {
      next.clear();
      for (std::string_view piece : pieces) {
        split_text(*step.regex, step.behavior, step.invert, piece, next);
      }
      pieces.swap(next);
    }
    std::string prefixed;
    std::vector<std::string_view> words;
    for (std::string_view piece : pieces) {
      // ByteLevel: a space in front of each piece that lacks one, then GPT-2's regex.
      if (add_prefix_space_ && !piece.starts_with(' ')) {
        prefixed = " ";
        prefixed += piece;
        piece = prefixed;
      }
      if (!byte_level_regex_) {
        model_->tokenize(piece, ids);
        continue;
      }
      words.clear();
      split_text(*byte_level_regex_, SplitBehavior::kIsolated, false, piece, words);
      for (std::string_view word : words) model_->tokenize(word, ids);
    }
  }

  bool nfc_;
  std::vector<SplitStep> splits_;
  bool add_prefix_space_;
  std::unique_ptr<detail::Regex> byte_level_regex_;
  std::unique_ptr<detail::BpeModel> model_;
  std::string source_;
};

// ---- reading tokenizer.json -----------------------------------------------------------------

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
std::unique_ptr<detail::Regex> compile(const Reader& r, std::string_view field,
                                       std::string_view pattern, bool literal) {
  try {
    if (literal) {
      if (pattern.empty()) r.fail(field, "an empty String pattern is not supported");
      return std::make_unique<detail::Regex>(detail::pcre2_literal(pattern));
    }
    return std::make_unique<detail::Regex>(detail::oniguruma_to_pcre2(pattern));
  } catch (const detail::UnsupportedPattern& error) {
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
                     BpeParts& parts) {
  r.object(value, field, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
  parts.add_prefix_space = r.boolean(value, field, "add_prefix_space", std::nullopt);
  parts.use_regex = r.boolean(value, field, "use_regex", true);
  r.boolean(value, field, "trim_offsets", true); // offsets only
}

/// pre_tokenizer: ByteLevel, or a Sequence of Split steps ending with ByteLevel.
void read_pre_tokenizer(const Reader& r, const json& value, BpeParts& parts) {
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

std::unique_ptr<detail::BpeModel> read_model(const Reader& r, const json& root) {
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
  detail::BpeOptions options;
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
  detail::StringMap<int32_t> vocab;
  vocab.reserve(vocab_json.size());
  for (const auto& [token, id] : vocab_json.items()) {
    vocab.emplace(token, read_id(r, id, fmt::format("model.vocab[{}]", json(token).dump())));
  }
  const auto merges = read_merges(r, r.require(model, "model", "merges"));
  try {
    return std::make_unique<detail::BpeModel>(std::move(vocab), merges, std::move(options));
  } catch (const std::invalid_argument& error) {
    r.fail("", error.what());
  }
}

/// added_tokens with the ids HF tokenizers gives them: the id in the file is only a check (HF
/// warns when it differs and uses its own): a token in the vocabulary keeps its vocabulary id,
/// the others are numbered on from the vocabulary's size in file order.
std::vector<AddedToken> read_added_tokens(const Reader& r, const json& root,
                                          const detail::BpeModel* model, size_t model_size) {
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

/// tokenizer_config.json's bos_token / eos_token / pad_token: a string, {"content": ...}, or null.
std::optional<int64_t> read_special_id(const Reader& r, const json& config, std::string_view key,
                                       const Tokenizer& tokenizer, const fs::path& tokenizer_json) {
  const json* value = r.find(config, key);
  if (value == nullptr || value->is_null()) return std::nullopt;
  std::string content;
  if (value->is_object() && value->contains("content")) {
    content = r.string((*value)["content"], Reader::at(key, "content"));
  } else {
    content = r.string(*value, key);
  }
  const auto id = tokenizer.token_to_id(content);
  if (!id) {
    r.fail(key,
           fmt::format("{} is not a token of {}", json(content).dump(), tokenizer_json.string()));
  }
  return id;
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

Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::bytes() {
  return bytes(ByteTokenizerOptions{});
}

std::unique_ptr<Tokenizer> Tokenizer::bytes(const ByteTokenizerOptions& options) {
  std::vector<AddedToken> specials;
  for (const std::string& content : options.special_tokens) {
    KILN_CHECK_USER(!content.empty(), "byte tokenizer: a special token is empty");
    KILN_CHECK_USER(!unicode::find_invalid_utf8(content),
                    "byte tokenizer: special token {} of {} is not valid UTF-8",
                    specials.size() + 1, options.special_tokens.size());
    size_t at = 0;
    const bool one_byte_char =
        unicode::byte_level_byte(unicode::next_code_point(content, at)) && at == content.size();
    KILN_CHECK_USER(!one_byte_char,
                    "byte tokenizer: the special token {} is the character of a byte (HF would "
                    "give it that byte's id); choose another",
                    json(content).dump());
    for (const AddedToken& other : specials) {
      KILN_CHECK_USER(other.content != content,
                      "byte tokenizer: the special token {} is given twice", json(content).dump());
    }
    specials.push_back(
        {.content = content, .id = 256 + static_cast<int64_t>(specials.size()), .special = true});
  }
  auto tokenizer = std::make_unique<ByteTokenizer>(specials, SideFiles{});
  auto id_of = [&](const std::optional<std::string>& name,
                   std::string_view role) -> std::optional<int64_t> {
    if (!name) return std::nullopt;
    for (const AddedToken& token : specials) {
      if (token.content == *name) return token.id;
    }
    user_error(
        "byte tokenizer: the {} token {} is not one of its special tokens (give it in "
        "special_tokens too)",
        role, json(*name).dump());
  };
  tokenizer->set_special_ids(id_of(options.bos_token, "bos"), id_of(options.eos_token, "eos"),
                             id_of(options.pad_token, "pad"));
  return tokenizer;
}

std::unique_ptr<Tokenizer> Tokenizer::from_file(const fs::path& tokenizer_json) {
  const Reader r(tokenizer_json);
  std::string source = detail::read_file(tokenizer_json);
  const json root = detail::parse_json_file(tokenizer_json, source);
  if (!root.is_object()) r.fail("", "expected a JSON object (an HF tokenizer.json)");
  r.object(root, "",
           {"version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer",
            "post_processor", "decoder", "model"});

  SideFiles side_files;
  for (std::string_view name : kSideFiles) {
    const fs::path file = tokenizer_json.parent_path() / name;
    if (fs::is_regular_file(file)) side_files.emplace_back(name, detail::read_file(file));
  }

  // Everything is checked, whichever tokenizer it becomes.
  BpeParts parts;
  parts.model = read_model(r, root);
  parts.nfc = read_normalizer(r, root.value("normalizer", json()));
  read_pre_tokenizer(r, root.value("pre_tokenizer", json()), parts);
  read_decoder(r, root.value("decoder", json()));
  read_post_processor(r, root.value("post_processor", json()), "post_processor");
  const size_t model_size = root.at("model").at("vocab").size();
  parts.added = read_added_tokens(r, root, parts.model.get(), model_size);

  // bos/eos/pad from tokenizer_config.json, once the ids are known.
  const auto config = std::find_if(side_files.begin(), side_files.end(),
                                   [](const auto& f) { return f.first == kConfigFile; });
  auto set_ids = [&](auto& t) {
    if (config == side_files.end()) return;
    const fs::path config_file = tokenizer_json.parent_path() / kConfigFile;
    const Reader c(config_file);
    const json values = detail::parse_json_file(config_file, config->second);
    if (!values.is_object()) c.fail("", "expected a JSON object");
    t.set_special_ids(read_special_id(c, values, "bos_token", t, tokenizer_json),
                      read_special_id(c, values, "eos_token", t, tokenizer_json),
                      read_special_id(c, values, "pad_token", t, tokenizer_json));
  };
  if (is_byte_tokenizer(root)) {
    auto bytes = std::make_unique<ByteTokenizer>(std::move(parts.added), side_files);
    set_ids(*bytes);
    return bytes;
  }
  parts.source = std::move(source);
  parts.side_files = side_files;
  auto bpe = std::make_unique<BpeTokenizer>(std::move(parts));
  set_ids(*bpe);
  return bpe;
}

} // namespace kiln::io
