// Tokenizers against HF `tokenizers` 0.23.3: ids on a held-out corpus (whole and per line) for a
// GLM-4-style and a GPT-2-style tokenizer.json, variants of every pre-tokenizer behavior and
// added-token flag, NFC, the regex classes code point by code point; the byte tokenizer; save ->
// reload; HF loading what kiln saves; the messages for files kiln refuses.
// Fixtures: tools/fixtures/make_tokenizer.py.
#include "io/tokenizer.h"

#include "io/tokenizer_regex.h"
#include "io/unicode.h"
#include "io_test_support.h"
#include "kiln/sdk/error.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace kiln::io {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using Ids = std::vector<int64_t>;

const fs::path kFixtures = fs::path(KILN_SOURCE_DIR) / "tests/fixtures/tokenizer";

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  EXPECT_TRUE(in) << file;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return std::move(buffer).str();
}

json read_json(const fs::path& file) {
  return json::parse(read_text(file));
}

void write_text(const fs::path& file, std::string_view text) {
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary) << text;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (true) {
    const size_t end = text.find('\n', start);
    lines.push_back(text.substr(start, end == std::string::npos ? end : end - start));
    if (end == std::string::npos) return lines;
    start = end + 1;
  }
}

const std::string& corpus() {
  static const std::string text = read_text(kFixtures / "corpus.txt");
  return text;
}

const json& expected() {
  static const json value = read_json(kFixtures / "expected.json");
  return value;
}

class TokenizerTest : public test::IoTest {
 protected:
  /// The message from_file gives for SPEC written as tokenizer.json.
  static std::string refusal(const json& spec);
};

// ---- parity on the corpus -------------------------------------------------------------------

struct ParityCase {
  std::string name;        // key in expected.json
  std::string file;        // tokenizer file in the fixture folder
  bool decode_round_trips; // decode(encode(x)) == x for NFC-stable lines
};

class TokenizerParity : public ::testing::TestWithParam<ParityCase> {
 protected:
  static std::unique_ptr<Tokenizer> load() {
    // from_file wants the name tokenizer.json (side files are looked up beside it).
    const fs::path dir =
        fs::temp_directory_path() / fmt::format("kiln-tok-{}-{}", GetParam().name, ::getpid());
    fs::create_directories(dir);
    fs::copy_file(kFixtures / GetParam().file, dir / "tokenizer.json",
                  fs::copy_options::overwrite_existing);
    auto tokenizer = Tokenizer::from_file(dir / "tokenizer.json");
    fs::remove_all(dir);
    return tokenizer;
  }
  static const json& want() { return expected().at(GetParam().name); }
};

TEST_P(TokenizerParity, EncodesLikeTokenizers) {
  const auto tokenizer = load();
  EXPECT_EQ(tokenizer->kind(), "bpe");
  EXPECT_EQ(tokenizer->encode(corpus()), want().at("text").get<Ids>());
  EXPECT_EQ(tokenizer->encode(corpus(), /*parse_special=*/false),
            want().at("text_special_as_text").get<Ids>());
  const auto lines = split_lines(corpus());
  const auto& ids = want().at("lines");
  ASSERT_EQ(lines.size(), ids.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(tokenizer->encode(lines[i]), ids[i].get<Ids>()) << "line " << i << ": " << lines[i];
  }
}

TEST_P(TokenizerParity, DecodesLikeTokenizers) {
  const auto tokenizer = load();
  const Ids ids = want().at("text").get<Ids>();
  const json& decoded = want().at("decoded");
  EXPECT_EQ(tokenizer->decode(ids), decoded.is_null() ? corpus() : decoded.get<std::string>());
  EXPECT_EQ(tokenizer->decode(ids, /*skip_special=*/true),
            want().at("decoded_skip_special").get<std::string>());
  EXPECT_EQ(tokenizer->vocab_size(), want().at("vocab_size").get<int64_t>());
  if (!GetParam().decode_round_trips) return; // add_prefix_space adds spaces
  size_t checked = 0;
  for (const std::string& line : split_lines(corpus())) {
    if (unicode::nfc(line) != line) continue; // NFC changes it: decode gives the NFC form
    EXPECT_EQ(tokenizer->decode(tokenizer->encode(line)), line);
    ++checked;
  }
  EXPECT_GT(checked, 150u);
}

TEST_P(TokenizerParity, SaveThenReloadGivesTheSameIds) {
  const auto tokenizer = load();
  const fs::path dir =
      fs::temp_directory_path() / fmt::format("kiln-tok-save-{}-{}", GetParam().name, ::getpid());
  fs::remove_all(dir);
  tokenizer->save(dir);
  EXPECT_TRUE(fs::exists(dir / "tokenizer_config.json"));
  const auto again = Tokenizer::from_file(dir / "tokenizer.json");
  EXPECT_EQ(again->kind(), "bpe");
  EXPECT_EQ(again->encode(corpus()), want().at("text").get<Ids>());
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerParity,
                         ::testing::Values(ParityCase{"main", "tokenizer.json", true},
                                           ParityCase{"gpt2", "tokenizer_gpt2.json", false}),
                         [](const auto& info) { return info.param.name; });

// ---- variants: each pre-tokenizer behavior, added-token flag, model quirk ---------------------

/// The edits of make_tokenizer.py's apply_edits, on the main tokenizer.json.
json apply_edits(json spec, const json& edits) {
  json& model = spec["model"];
  for (const auto& [key, value] : edits.items()) {
    if (key == "model") {
      for (const auto& [k, v] : value.items()) model[k] = v;
    } else if (key == "vocab_add") {
      for (const auto& [k, v] : value.items()) model["vocab"][k] = v;
    } else if (key == "vocab_remove") {
      for (const auto& token : value) model["vocab"].erase(token.get<std::string>());
    } else if (key == "merges_append") {
      for (const auto& merge : value) model["merges"].push_back(merge);
    } else if (key == "merges_to_strings") {
      json strings = json::array({value});
      for (const auto& merge : model["merges"]) {
        strings.push_back(merge[0].get<std::string>() + " " + merge[1].get<std::string>());
      }
      model["merges"] = strings;
    } else {
      spec[key] = value;
    }
  }
  return spec;
}

TEST_F(TokenizerTest, VariantsMatchTokenizers) {
  const json main_spec = read_json(kFixtures / "tokenizer.json");
  const json variants = read_json(kFixtures / "variants.json");
  const auto probes = variants.at("probes").get<std::vector<std::string>>();
  ASSERT_GE(variants.at("cases").size(), 30u);
  for (const auto& [name, expect] : variants.at("cases").items()) {
    SCOPED_TRACE(name);
    const fs::path file = dir_ / name / "tokenizer.json";
    write_text(file, apply_edits(main_spec, expect.at("edits")).dump());
    const auto tokenizer = Tokenizer::from_file(file);
    for (size_t i = 0; i < probes.size(); ++i) {
      const Ids ids = tokenizer->encode(probes[i]);
      EXPECT_EQ(ids, expect.at("ids")[i].get<Ids>()) << "probe " << i << ": " << probes[i];
      EXPECT_EQ(tokenizer->encode(probes[i], false), expect.at("ids_special_as_text")[i].get<Ids>())
          << "probe " << i << ": " << probes[i];
      EXPECT_EQ(tokenizer->decode(ids), expect.at("decoded")[i].get<std::string>())
          << "probe " << i;
    }
  }
}

// ---- Unicode: NFC and the regex classes -----------------------------------------------------

TEST(TokenizerUnicode, NfcMatchesTokenizers) {
  const json cases = read_json(kFixtures / "nfc.json");
  ASSERT_GT(cases.size(), 500u);
  for (const auto& c : cases) {
    const auto input = c[0].get<std::string>();
    EXPECT_EQ(unicode::nfc(input), c[1].get<std::string>()) << json(input).dump();
  }
}

TEST(TokenizerUnicode, RegexClassesMatchOnigurumaOnEveryCodePoint) {
  // Every code point once, in order; the matches of CLASS+ are the runs of its members.
  std::string text;
  std::vector<uint32_t> code_point_at; // byte offset -> code point
  for (char32_t c = 0; c < 0x110000; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    const size_t before = text.size();
    unicode::append_utf8(text, c);
    code_point_at.resize(text.size(), c);
    code_point_at[before] = c;
  }
  code_point_at.push_back(0x110000);
  const json classes = read_json(kFixtures / "classes.json");
  const std::map<std::string, std::string> patterns = {
      {"L", R"(\p{L})"},   {"Lu", R"(\p{Lu})"}, {"Ll", R"(\p{Ll})"}, {"Lt", R"(\p{Lt})"},
      {"Lm", R"(\p{Lm})"}, {"Lo", R"(\p{Lo})"}, {"M", R"(\p{M})"},   {"Mn", R"(\p{Mn})"},
      {"N", R"(\p{N})"},   {"Nd", R"(\p{Nd})"}, {"P", R"(\p{P})"},   {"S", R"(\p{S})"},
      {"Z", R"(\p{Z})"},   {"s", R"(\s)"},      {"d", R"(\d)"},      {"not_s", R"(\S)"}};
  ASSERT_EQ(classes.size(), patterns.size());
  for (const auto& [name, pattern] : patterns) {
    SCOPED_TRACE(name);
    const detail::Regex regex("(?:" + detail::oniguruma_to_pcre2(pattern) + ")+");
    std::vector<std::pair<size_t, size_t>> matches;
    regex.find_all(text, matches);
    // [gap, length, ...] over code points, as the fixture has them: a match across the
    // surrogates (absent from the text) is two runs there.
    std::vector<int64_t> runs;
    int64_t previous_end = 0;
    auto add = [&](int64_t first, int64_t end) {
      runs.push_back(first - previous_end);
      runs.push_back(end - first);
      previous_end = end;
    };
    for (const auto& [start, end] : matches) {
      const int64_t first = code_point_at[start];
      int64_t last_end = code_point_at[end];
      if (first < 0xD800 && last_end == 0xE000) last_end = 0xD800;
      if (first < 0xD800 && last_end > 0xE000) {
        add(first, 0xD800);
        add(0xE000, last_end);
      } else {
        add(first, last_end);
      }
    }
    EXPECT_EQ(runs, classes.at(name).get<std::vector<int64_t>>());
  }
}

TEST(TokenizerUnicode, FromUtf8LossyReplacesMaximalSubparts) {
  // As Rust's String::from_utf8_lossy (and Python's errors="replace").
  EXPECT_EQ(unicode::from_utf8_lossy("a\xF0\x9F\x98"
                                     "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(unicode::from_utf8_lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(unicode::from_utf8_lossy("\xED\xA0\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"); // a surrogate: three maximal subparts
  EXPECT_EQ(unicode::from_utf8_lossy("\xE2\x82\xAC\xFF"), "\xE2\x82\xAC\xEF\xBF\xBD");
}

// ---- the regex rewrite ----------------------------------------------------------------------

TEST(TokenizerRegex, RewritesWhatDiffersAndKeepsTheRest) {
  using detail::oniguruma_to_pcre2;
  EXPECT_EQ(oniguruma_to_pcre2(R"(\p{N}{,3})"),
            fmt::format("[{}]{{0,3}}", *unicode::category_class_items("N")));
  EXPECT_EQ(oniguruma_to_pcre2(R"([^\s\p{L}])"),
            fmt::format("[^{}{}]", unicode::white_space_class_items(),
                        *unicode::category_class_items("L")));
  EXPECT_EQ(oniguruma_to_pcre2(R"((?i:'s|'t)|\r\n|a(b)c\.)"), R"((?i:'s|'t)|\r\n|a(?:b)c\.)");
  EXPECT_EQ(oniguruma_to_pcre2(R"(\u00e9\x41\v)"), R"(\x{00e9}\x{41}\x{B})");
  EXPECT_EQ(oniguruma_to_pcre2("{x}"), R"(\{x})");
}

TEST(TokenizerRegex, RefusesWhatHasNoExactRewrite) {
  auto refusal = [](std::string_view pattern) -> std::string {
    try {
      detail::oniguruma_to_pcre2(pattern);
    } catch (const detail::UnsupportedPattern& error) {
      return error.what();
    }
    return "accepted";
  };
  EXPECT_EQ(refusal(R"(a\w)"),
            "at offset 1: '\\w' is not supported (its meaning differs between "
            "Oniguruma and PCRE2, or kiln has no exact rewrite)");
  EXPECT_EQ(refusal("^a"),
            "at offset 0: the anchor '^' is not supported (Oniguruma anchors it at "
            "every line, PCRE2 at the string)");
  EXPECT_EQ(refusal("(?i:st)"),
            "at offset 5: 'st' under (?i) is not supported (Oniguruma also "
            "matches the one character that folds to it, PCRE2 does not)");
  EXPECT_EQ(refusal(R"([^\S])"),
            "at offset 2: a negated class escape inside [...] is not "
            "supported (Unicode versions differ; no exact rewrite)");
  EXPECT_EQ(
      refusal(R"(\p{Han})"),
      "at offset 0: the property 'Han' is not supported (kiln knows the general categories "
      "L, Lu, Ll, Lt, Lm, Lo, M, Mn, Mc, Me, N, Nd, Nl, No, P, Pc, Pd, Ps, Pe, Pi, Pf, Po, S, "
      "Sm, Sc, Sk, So, Z, Zs, Zl, Zp)");
  EXPECT_EQ(refusal("(?m:a)"),
            "at offset 0: the group '(?m' is not supported (kiln accepts (?:, "
            "(?=, (?!, (?>, (?<=, (?<! and the flag i)");
  EXPECT_EQ(refusal("a{2}?"),
            "at offset 1: '{n}?' is not supported (Oniguruma reads it as an "
            "optional group of n)");
}

TEST(TokenizerRegex, FindsMatchesLikeOnigurumaFindIter) {
  // Empty matches: one at each position not right after a match.
  const detail::Regex regex("x*");
  std::vector<std::pair<size_t, size_t>> matches;
  regex.find_all("axxb", matches);
  const std::vector<std::pair<size_t, size_t>> want = {{0, 0}, {1, 3}, {4, 4}};
  EXPECT_EQ(matches, want);
}

// ---- the byte tokenizer ---------------------------------------------------------------------

TEST_F(TokenizerTest, ByteTokenizerRoundTripsArbitraryBytes) {
  const auto tokenizer = Tokenizer::bytes();
  EXPECT_EQ(tokenizer->kind(), "byte");
  EXPECT_EQ(tokenizer->vocab_size(), 256);
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  Ids ids = tokenizer->encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(tokenizer->decode(ids), all);

  std::mt19937 rng(6);
  for (int round = 0; round < 50; ++round) {
    std::string text(rng() % 300, '\0');
    for (char& c : text) c = static_cast<char>(rng() % 256);
    EXPECT_EQ(tokenizer->decode(tokenizer->encode(text)), text);
  }
  EXPECT_EQ(tokenizer->decode(tokenizer->encode("\xFF\xC0 not UTF-8 \xED\xA0\x80")),
            "\xFF\xC0 not UTF-8 \xED\xA0\x80");
}

TEST_F(TokenizerTest, ByteTokenizerMatchesSpecialTokensAfterTheBytes) {
  const auto tokenizer = Tokenizer::bytes(
      {.special_tokens = {"<|endoftext|>", "<|user|>"}, .eos_token = "<|endoftext|>"});
  EXPECT_EQ(tokenizer->vocab_size(), 258);
  EXPECT_EQ(tokenizer->eos_id(), 256);
  EXPECT_EQ(tokenizer->bos_id(), std::nullopt);
  EXPECT_EQ(tokenizer->encode("a<|user|>b<|endoftext|>"), (Ids{97, 257, 98, 256}));
  const Ids plain = tokenizer->encode("<|user|>", /*parse_special=*/false);
  EXPECT_EQ(plain.size(), 8u);
  EXPECT_EQ(tokenizer->decode(Ids{97, 257, 98, 256}), "a<|user|>b<|endoftext|>");
  EXPECT_EQ(tokenizer->decode(Ids{97, 257, 98, 256, 9999}, /*skip_special=*/true), "ab");
  EXPECT_TRUE(tokenizer->is_special(256));
  EXPECT_FALSE(tokenizer->is_special(97));
  EXPECT_EQ(tokenizer->token_to_id("Ġ"), 32);
  EXPECT_EQ(tokenizer->token_to_id("<|user|>"), 257);
  EXPECT_EQ(tokenizer->id_to_token(32), "Ġ");
  EXPECT_EQ(tokenizer->id_to_token(258), std::nullopt);
}

TEST_F(TokenizerTest, ByteTokenizerSaveReloadKeepsIdsAndKind) {
  const auto tokenizer =
      Tokenizer::bytes({.special_tokens = {"<|endoftext|>"}, .eos_token = "<|endoftext|>"});
  tokenizer->save("saved");
  const auto again = Tokenizer::from_file("saved"); // the folder
  EXPECT_EQ(again->kind(), "byte");
  EXPECT_EQ(again->eos_id(), 256);
  std::string text = corpus() + "<|endoftext|>\xFF\xFE";
  EXPECT_EQ(again->encode(text), tokenizer->encode(text));
  EXPECT_EQ(again->decode(again->encode(text)), text);
}

TEST_F(TokenizerTest, ByteTokenizerRefusesBadSpecialTokens) {
  EXPECT_EQ(user_error_of([] {
              Tokenizer::bytes({.special_tokens = {"<a>", "<a>"}});
            }),
            "byte tokenizer: the special token \"<a>\" is given twice");
  EXPECT_EQ(user_error_of([] { Tokenizer::bytes({.special_tokens = {"Ġ"}}); }),
            "byte tokenizer: the special token \"Ġ\" is the character of a byte (HF would give it "
            "that byte's id); choose another");
  EXPECT_EQ(
      user_error_of([] { Tokenizer::bytes({.special_tokens = {"<a>"}, .eos_token = "</s>"}); }),
      "byte tokenizer: the eos token \"</s>\" is not one of its special tokens (give it in "
      "special_tokens too)");
}

// ---- tokenizer_config.json, side files --------------------------------------------------------

TEST_F(TokenizerTest, ConfigBesideNamesSpecialIdsAndIsSavedAlong) {
  fs::copy_file(kFixtures / "tokenizer.json", "tokenizer.json");
  write_text("tokenizer_config.json",
             R"({"bos_token": {"content": "[gMASK]"}, "eos_token": "<|endoftext|>",
                 "pad_token": null, "tokenizer_class": "PreTrainedTokenizerFast"})");
  write_text("chat_template.jinja", "{{ messages }}");
  const auto tokenizer = Tokenizer::from_file("tokenizer.json");
  EXPECT_EQ(tokenizer->eos_id(), tokenizer->token_to_id("<|endoftext|>"));
  EXPECT_EQ(tokenizer->bos_id(), tokenizer->token_to_id("[gMASK]"));
  EXPECT_EQ(tokenizer->pad_id(), std::nullopt);
  tokenizer->save("out");
  EXPECT_EQ(read_text("out/tokenizer.json"), read_text("tokenizer.json"));
  EXPECT_EQ(read_text("out/tokenizer_config.json"), read_text("tokenizer_config.json"));
  EXPECT_EQ(read_text("out/chat_template.jinja"), "{{ messages }}");

  write_text("tokenizer_config.json", R"({"eos_token": "<|nope|>"})");
  EXPECT_EQ(user_error_of([] { Tokenizer::from_file("tokenizer.json"); }),
            "tokenizer_config.json: eos_token: \"<|nope|>\" is not a token of tokenizer.json");
}

// ---- HF loads what kiln saves -----------------------------------------------------------------

#ifdef KILN_PYTHON
/// What HF tokenizers and AutoTokenizer make of TEXT_FILE with the tokenizer saved in each of
/// DIRS: one JSON object per folder.
std::vector<json> hf_encode(const fs::path& text_file, const std::vector<fs::path>& dirs) {
  std::string command = fmt::format("{} {}/tools/fixtures/check_hf_tokenizer.py {}", KILN_PYTHON,
                                    KILN_SOURCE_DIR, fs::absolute(text_file).string());
  for (const fs::path& dir : dirs) command += fmt::format(" {}", fs::absolute(dir).string());
  command += " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  if (pipe == nullptr) return {};
  std::string output;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << output;
  std::vector<json> results;
  for (const std::string& line : split_lines(output)) {
    if (line.starts_with("{")) results.push_back(json::parse(line));
  }
  EXPECT_EQ(results.size(), dirs.size()) << output;
  return results;
}

TEST_F(TokenizerTest, HfLoadsWhatKilnSaves) {
  fs::copy_file(kFixtures / "corpus.txt", "corpus.txt");
  const auto bytes = Tokenizer::bytes(
      {.special_tokens = {"<|endoftext|>", "[gMASK]", "<|user|>"}, .eos_token = "<|endoftext|>"});
  bytes->save("bytes");
  fs::copy_file(kFixtures / "tokenizer_gpt2.json", "tokenizer.json");
  const auto bpe = Tokenizer::from_file("tokenizer.json");
  bpe->save("bpe");

  const auto results = hf_encode("corpus.txt", {"bytes", "bpe"});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].at("tokenizers").get<Ids>(), bytes->encode(corpus()));
  EXPECT_EQ(results[0].at("transformers").get<Ids>(), bytes->encode(corpus()));
  EXPECT_EQ(results[0].at("eos_token_id"), 256);
  EXPECT_EQ(results[1].at("tokenizers").get<Ids>(), bpe->encode(corpus()));
  EXPECT_EQ(results[1].at("transformers").get<Ids>(), bpe->encode(corpus()));
}
#endif

// ---- what kiln refuses, and how it says so ----------------------------------------------------

/// A small valid byte-level BPE tokenizer.json: the byte alphabet, "ab" and "abc".
json small_tokenizer() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[unicode::byte_level_chars()[b]] = b;
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  return {
      {"version", "1.0"},
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a b", "ab c"})}}}};
}

std::string TokenizerTest::refusal(const json& spec) {
  write_text("tokenizer.json", spec.dump(1));
  return user_error_of([] { Tokenizer::from_file("tokenizer.json"); });
}

TEST_F(TokenizerTest, SmallTokenizerLoadsAndMerges) {
  write_text("tokenizer.json", small_tokenizer().dump());
  const auto tokenizer = Tokenizer::from_file("tokenizer.json");
  EXPECT_EQ(tokenizer->encode("abc ab"), (Ids{257, 32, 256}));
}

TEST_F(TokenizerTest, MissingModelIsNamed) {
  json spec = small_tokenizer();
  spec.erase("model");
  EXPECT_EQ(refusal(spec), "tokenizer.json: missing 'model' (the BPE model: vocab and merges)");
}

TEST_F(TokenizerTest, UnknownModelTypeIsNamed) {
  json spec = small_tokenizer();
  spec["model"]["type"] = "WordPiece";
  EXPECT_EQ(refusal(spec),
            "tokenizer.json: model.type: 'WordPiece' is not supported; kiln reads "
            "byte-level BPE models ('BPE')");
}

TEST_F(TokenizerTest, UnsupportedPreTokenizerIsNamed) {
  json spec = small_tokenizer();
  spec["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array({{{"type", "Metaspace"}, {"replacement", "_"}}, spec["pre_tokenizer"]})}};
  EXPECT_EQ(refusal(spec),
            "tokenizer.json: pre_tokenizer.pretokenizers[0].type: 'Metaspace' is "
            "not supported; kiln supports ByteLevel, alone or last in a Sequence "
            "after Split steps");
}

TEST_F(TokenizerTest, BadMergesEntryIsNamed) {
  json spec = small_tokenizer();
  spec["model"]["merges"] = json::array({"a b", "ab c d"});
  EXPECT_EQ(refusal(spec),
            "tokenizer.json: model.merges[1]: \"ab c d\" has 3 space-separated "
            "parts; expected \"left right\"");
  spec["model"]["merges"] = json::array({json::array({"a", "b"}), "ab c"});
  EXPECT_EQ(refusal(spec),
            "tokenizer.json: model.merges[1]: expected a pair [\"left\", \"right\"] "
            "like the first entry, found \"ab c\"");
  spec["model"]["merges"] = json::array({"a q"});
  spec["model"]["vocab"].erase("q");
  EXPECT_EQ(refusal(spec),
            "tokenizer.json: model.merges[0]: 'q' is not in the vocabulary (model.vocab)");
}

TEST_F(TokenizerTest, UnsupportedFieldsAreNamed) {
  json spec = small_tokenizer();
  spec["model"]["byte_fallback"] = true;
  EXPECT_EQ(refusal(spec),
            "tokenizer.json: model.byte_fallback: true is not supported (kiln "
            "reads byte-level BPE, whose pre-tokenizer already maps every byte to "
            "a character)");
  spec = small_tokenizer();
  spec["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_EQ(refusal(spec),
            "tokenizer.json: normalizer.type: 'Lowercase' is not supported; kiln "
            "implements the normalizer NFC (or none)");
  spec = small_tokenizer();
  spec["added_tokens"] = json::array({{{"id", 258}, {"content", "<m>"}, {"single_word", true}}});
  EXPECT_EQ(refusal(spec),
            "tokenizer.json: added_tokens[0].single_word: true is not supported (HF "
            "decides word boundaries with its own Unicode tables); expected false");
  spec = small_tokenizer();
  spec["pre_tokenizer"] = {{"type", "Sequence"},
                           {"pretokenizers", json::array({{{"type", "Split"},
                                                           {"pattern", {{"Regex", R"(\w+)"}}},
                                                           {"behavior", "Isolated"},
                                                           {"invert", false}},
                                                          spec["pre_tokenizer"]})}};
  EXPECT_EQ(refusal(spec),
            "tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex: cannot run the regex "
            "\"\\\\w+\" as HF does: at offset 0: '\\w' is not supported (its meaning differs "
            "between Oniguruma and PCRE2, or kiln has no exact rewrite)");
  spec = small_tokenizer();
  spec["model"]["merges_extra"] = 1;
  EXPECT_EQ(refusal(spec),
            "tokenizer.json: model.merges_extra: unknown key (kiln reads type, "
            "dropout, unk_token, continuing_subword_prefix, end_of_word_suffix, "
            "fuse_unk, byte_fallback, ignore_merges, vocab, merges)");
}

TEST_F(TokenizerTest, InvalidJsonSaysWhere) {
  write_text("tokenizer.json", "{\n  \"model\": [1,\n}");
  EXPECT_EQ(user_error_of([] { Tokenizer::from_file("tokenizer.json"); }),
            "tokenizer.json:3:1: invalid JSON: syntax error while parsing value - unexpected '}'; "
            "expected '[', '{', or a literal");
}

TEST_F(TokenizerTest, BpeRefusesTextThatIsNotUtf8) {
  write_text("tokenizer.json", small_tokenizer().dump());
  const auto tokenizer = Tokenizer::from_file("tokenizer.json");
  EXPECT_EQ(user_error_of([&] { tokenizer->encode("ab\xC3(c"); }),
            "cannot encode: the text is not valid UTF-8 (byte 2 of 5, 0xC3); the BPE tokenizer "
            "reads UTF-8 only");
}

// ---- speed --------------------------------------------------------------------------------------

TEST_F(TokenizerTest, EncodesAtLeastOneMegabytePerSecond) {
#ifndef NDEBUG
  GTEST_SKIP() << "timed only in optimized builds";
#endif
  fs::copy_file(kFixtures / "tokenizer.json", "tokenizer.json");
  const auto tokenizer = Tokenizer::from_file("tokenizer.json");
  std::string text;
  while (text.size() < (2u << 20)) text += corpus();
  const auto start = std::chrono::steady_clock::now();
  const Ids ids = tokenizer->encode(text);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double mb_per_s = static_cast<double>(text.size()) / 1e6 / seconds;
  std::printf("[ info ] encoded %.1f MB into %zu tokens at %.1f MB/s\n",
              static_cast<double>(text.size()) / 1e6, ids.size(), mb_per_s);
  EXPECT_GT(mb_per_s, 1.0);
}

} // namespace
} // namespace kiln::io
