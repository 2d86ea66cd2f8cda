// The byte tokenizer, and byte-level BPE read from HF tokenizer.json (tokenizer_file.cpp reads
// and checks the file). Encoding follows HF tokenizers' pipeline step by step:
// added tokens in the raw text -> normalizer -> added tokens in the normalized text ->
// pre-tokenizers (Split..., ByteLevel) -> BPE model.
#include "io/tokenizer.h"

#include "io/added_tokens.h"
#include "io/bpe.h"
#include "io/detail.h"
#include "io/tokenizer_file.h"
#include "io/tokenizer_regex.h"
#include "io/unicode.h"
#include "kiln/sdk/error.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <system_error>
#include <unordered_map>

namespace kiln::io {
namespace {

namespace fs = std::filesystem;
using detail::AddedToken;
using detail::SplitBehavior;
using detail::SplitStep;
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
  /// FILE as read from SOURCE (kept for save()).
  BpeTokenizer(detail::TokenizerFile file, std::string source, SideFiles side_files)
      : TokenizerBase(std::move(file.added), file.nfc, std::move(side_files)),
        nfc_(file.nfc),
        splits_(std::move(file.splits)),
        add_prefix_space_(file.add_prefix_space),
        model_(std::move(file.model)),
        source_(std::move(source)) {
    if (file.use_regex) {
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
        prefixed.assign(1, ' ');
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

std::unique_ptr<Tokenizer> Tokenizer::from_file(const fs::path& path) {
  const fs::path tokenizer_json = fs::is_directory(path) ? path / kTokenizerFile : path;
  std::string source = detail::read_required_file(tokenizer_json);
  detail::TokenizerFile file = detail::read_tokenizer_file(tokenizer_json, source);
  SideFiles side_files;
  for (std::string_view name : kSideFiles) {
    const fs::path path = tokenizer_json.parent_path() / name;
    if (fs::is_regular_file(path)) side_files.emplace_back(name, detail::read_required_file(path));
  }
  std::optional<detail::SpecialTokenNames> names;
  for (const auto& [name, content] : side_files) {
    if (name == kConfigFile) {
      names = detail::read_special_token_names(tokenizer_json.parent_path() / name, content);
    }
  }

  std::unique_ptr<TokenizerBase> tokenizer;
  if (file.byte_tokenizer) {
    tokenizer = std::make_unique<ByteTokenizer>(std::move(file.added), std::move(side_files));
  } else {
    tokenizer =
        std::make_unique<BpeTokenizer>(std::move(file), std::move(source), std::move(side_files));
  }
  if (names) {
    auto id_of = [&](const std::optional<std::string>& name,
                     std::string_view key) -> std::optional<int64_t> {
      if (!name) return std::nullopt;
      const auto id = tokenizer->token_to_id(*name);
      if (!id) {
        user_error("{}: {}: {} is not a token of {}",
                   (tokenizer_json.parent_path() / kConfigFile).string(), key, json(*name).dump(),
                   tokenizer_json.string());
      }
      return id;
    };
    tokenizer->set_special_ids(id_of(names->bos, "bos_token"), id_of(names->eos, "eos_token"),
                               id_of(names->pad, "pad_token"));
  }
  return tokenizer;
}

} // namespace kiln::io
