// `kiln generate`: text (or ids) from an HF checkpoint folder, with the family's generation cache,
// the sampling options, stop ids and strings, streaming and timing.
#include "common.h"

#include "bench/profile.h"
#include "generate/generator.h"
#include "io/files.h"
#include "io/tokenizer.h"
#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <iostream>
#include <optional>

namespace kiln::cli {
namespace {

/// "1,2,3" -> {1, 2, 3}.
std::vector<int64_t> parse_ids(const std::string& text) {
  std::vector<int64_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t end = std::min(text.find(',', pos), text.size());
    int64_t value = 0;
    const char* first = text.data() + pos;
    const char* last = text.data() + end;
    while (first < last && *first == ' ') ++first;
    const auto [ptr, ec] = std::from_chars(first, last, value);
    KILN_CHECK_USER(ec == std::errc() && ptr == last && first < last,
                    "--input-ids: expected comma-separated token ids like 1,2,3, found '{}'", text);
    ids.push_back(value);
    pos = end + 1;
  }
  return ids;
}

/// eos_token_id of generation_config.json (an id or a list), falling back to config.json's.
std::vector<int64_t> eos_ids(const nlohmann::json& json) {
  std::vector<int64_t> ids;
  const auto it = json.find("eos_token_id");
  if (it == json.end() || it->is_null()) return ids;
  if (it->is_number_integer()) ids.push_back(it->get<int64_t>());
  if (it->is_array()) {
    for (const auto& v : *it) {
      if (v.is_number_integer()) ids.push_back(v.get<int64_t>());
    }
  }
  return ids;
}

std::optional<nlohmann::json> read_json_if_present(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) return std::nullopt;
  const auto text = io::read_file(file);
  KILN_CHECK_USER(text.has_value(), "{}: cannot read it; check its permissions", file.string());
  try {
    return nlohmann::json::parse(*text);
  } catch (const nlohmann::json::exception& e) {
    user_error("{}: not valid JSON ({}); fix or remove the file", file.string(), e.what());
  }
}

/// Prints a row's text as it grows, holding back an incomplete UTF-8 character at the end.
class Streamer {
 public:
  explicit Streamer(const io::Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  const std::string& text() const { return text_; }
  void update(std::span<const int64_t> generated, bool print) {
    text_ = tokenizer_->decode(generated);
    if (!print) return;
    size_t end = text_.size();
    if (end >= 3 && text_.compare(end - 3, 3, "\xEF\xBF\xBD") == 0) return; // U+FFFD: wait
    if (end > printed_) {
      std::cout << text_.substr(printed_, end - printed_) << std::flush;
      printed_ = end;
    }
  }
  void finish(bool print) {
    if (print && text_.size() > printed_) std::cout << text_.substr(printed_);
    if (print) std::cout << "\n" << std::flush;
  }

 private:
  const io::Tokenizer* tokenizer_;
  std::string text_;
  size_t printed_ = 0;
};

std::string join_ids(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::string out;
  for (const auto* part : {&a, &b}) {
    for (int64_t id : *part) out += (out.empty() ? "" : ",") + std::to_string(id);
  }
  return out;
}

} // namespace

void usage_generate() {
  std::cout
      << "usage: kiln generate --model DIR [--prompt TEXT | --prompt-file F | --input-ids 1,2,3 |\n"
         "                     --input-ids-file F]...\n"
         "                     [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P]\n"
         "                     [--min-p P] [--repetition-penalty R] [--seed S] [--stop TEXT]...\n"
         "                     [--stop-id ID]... [--no-cache] [--print-ids] [--stats]\n"
         "                     [--profile TRACE.json]\n"
         "                     [--dtype float32|bfloat16] [--device cpu|cuda] [--backend NAME]\n\n"
         "Generates from the checkpoint in DIR (config.json + safetensors, HF layout). Each\n"
         "--prompt, --prompt-file or --input-ids is one row of the batch, as is each line of an\n"
         "--input-ids-file; rows may have any lengths. Text prompts need DIR/tokenizer.json.\n"
         "One text prompt streams its completion to stdout as tokens are produced; a batch\n"
         "prints each prompt and its completion when done. --print-ids prints, per row, one\n"
         "line: the comma-separated ids of prompt + generated.\n"
         "Greedy unless --temperature > 0 (or generation_config.json says do_sample); rows stop\n"
         "at an eos id of DIR/generation_config.json (or config.json), a --stop-id, a --stop\n"
         "string, or after --max-new-tokens. --no-cache recomputes every sequence each step.\n"
         "--stats prints time to first token and decode tokens/s to stderr; --profile F writes\n"
         "a Chrome trace of the generation to F and the costliest ops and kernels to stderr.\n\n"
      << plugin_options();
}

int cmd_generate(const std::vector<std::string>& args) {
  po::options_description options("generate options");
  options.add_options()("model", po::value<std::string>()->required(),
                        "checkpoint folder (config.json + weights [+ tokenizer.json])")(
      "prompt", po::value<std::vector<std::string>>(), "prompt text (repeatable: a batch)")(
      "prompt-file", po::value<std::vector<std::string>>(), "file whose text is one prompt")(
      "input-ids", po::value<std::vector<std::string>>(), "prompt token ids, comma-separated")(
      "input-ids-file", po::value<std::vector<std::string>>(),
      "file of prompts as ids: one row per line, comma-separated")(
      "max-new-tokens", po::value<int64_t>(), "tokens to generate per row (default 64)")(
      "temperature", po::value<double>(), "0 = greedy; > 0 samples")(
      "top-k", po::value<int64_t>(), "keep the k most likely tokens (0 = off)")(
      "top-p", po::value<double>(), "nucleus sampling threshold in (0, 1]")(
      "min-p", po::value<double>(), "drop tokens below min-p x the top probability")(
      "repetition-penalty", po::value<double>(), "> 1 discourages repeating seen tokens")(
      "seed", po::value<uint64_t>()->default_value(0), "sampling seed")(
      "stop", po::value<std::vector<std::string>>(), "stop string (repeatable)")(
      "stop-id", po::value<std::vector<int64_t>>(), "stop token id (repeatable)")(
      "no-cache", po::bool_switch(), "recompute the whole sequence every step")(
      "print-ids", po::bool_switch(), "print prompt + generated ids instead of text")(
      "stats", po::bool_switch(), "print timing to stderr")(
      "profile", po::value<std::string>(), "write a Chrome trace of the generation here")(
      "dtype", po::value<std::string>()->default_value("float32"), "float32 or bfloat16")(
      "device", po::value<std::string>()->default_value("cpu"), "cpu, cuda or cuda:N")(
      "backend", po::value<std::string>()->default_value("auto"), "backend or policy for all ops");
  options.add(plugin_options());
  const auto vm = parse(args, options, {});
  auto strings = [&](const char* name) {
    return vm.count(name) ? vm[name].as<std::vector<std::string>>() : std::vector<std::string>{};
  };

  const std::filesystem::path dir = vm["model"].as<std::string>();
  std::unique_ptr<io::Tokenizer> tokenizer;
  if (std::filesystem::exists(dir / "tokenizer.json")) {
    tokenizer = io::Tokenizer::from_file(dir / "tokenizer.json");
  }
  const auto text_prompts = strings("prompt");
  const auto prompt_files = strings("prompt-file");
  auto id_prompts = strings("input-ids");
  for (const auto& file : strings("input-ids-file")) {
    const auto text = io::read_file(file);
    KILN_CHECK_USER(text.has_value(), "--input-ids-file {}: cannot read it; check the path", file);
    size_t pos = 0;
    while (pos < text->size()) {
      size_t end = text->find('\n', pos);
      if (end == std::string::npos) end = text->size();
      std::string line = text->substr(pos, end - pos);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) id_prompts.push_back(line);
      pos = end + 1;
    }
  }
  KILN_CHECK_USER(!text_prompts.empty() || !prompt_files.empty() || !id_prompts.empty(),
                  "kiln generate: no prompt; give --prompt TEXT, --prompt-file F or --input-ids "
                  "1,2,3");
  KILN_CHECK_USER(tokenizer || (text_prompts.empty() && prompt_files.empty()),
                  "kiln generate: {} has no tokenizer.json to encode text prompts; pass "
                  "--input-ids or add the checkpoint's tokenizer.json",
                  dir.string());
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& text : text_prompts) prompts.push_back(tokenizer->encode(text));
  for (const auto& file : prompt_files) {
    const auto text = io::read_file(file);
    KILN_CHECK_USER(text.has_value(), "--prompt-file {}: cannot read it; check the path", file);
    prompts.push_back(tokenizer->encode(*text));
  }
  for (const auto& ids : id_prompts) prompts.push_back(parse_ids(ids));
  for (size_t b = 0; b < prompts.size(); ++b) {
    KILN_CHECK_USER(!prompts[b].empty(), "kiln generate: prompt {} encodes to no tokens", b + 1);
  }

  // generation_config.json, as HF's generate reads it: eos ids always; its sampling settings
  // when it asks for sampling and the command line does not override them.
  const auto gen_config = read_json_if_present(dir / "generation_config.json");
  const auto model_config = read_json_if_present(dir / "config.json");
  generate::GenerationOptions gen;
  gen.max_new_tokens = 64;
  if (gen_config) {
    gen.stop_ids = eos_ids(*gen_config);
    if (gen_config->value("do_sample", false)) {
      gen.sampling.temperature = gen_config->value("temperature", 1.0);
      gen.sampling.top_k = gen_config->value("top_k", int64_t{50});
      gen.sampling.top_p = gen_config->value("top_p", 1.0);
    }
    if (gen_config->contains("max_new_tokens") && (*gen_config)["max_new_tokens"].is_number()) {
      gen.max_new_tokens = (*gen_config)["max_new_tokens"].get<int64_t>();
    }
  }
  if (gen.stop_ids.empty() && model_config) gen.stop_ids = eos_ids(*model_config);
  if (vm.count("stop-id")) {
    const auto extra = vm["stop-id"].as<std::vector<int64_t>>();
    gen.stop_ids.insert(gen.stop_ids.end(), extra.begin(), extra.end());
  }
  if (vm.count("max-new-tokens")) gen.max_new_tokens = vm["max-new-tokens"].as<int64_t>();
  if (vm.count("temperature")) gen.sampling.temperature = vm["temperature"].as<double>();
  if (vm.count("top-k")) gen.sampling.top_k = vm["top-k"].as<int64_t>();
  if (vm.count("top-p")) gen.sampling.top_p = vm["top-p"].as<double>();
  if (vm.count("min-p")) gen.sampling.min_p = vm["min-p"].as<double>();
  if (vm.count("repetition-penalty")) {
    gen.sampling.repetition_penalty = vm["repetition-penalty"].as<double>();
  }
  gen.sampling.seed = vm["seed"].as<uint64_t>();
  gen.use_cache = !vm["no-cache"].as<bool>();
  KILN_CHECK_USER(gen.max_new_tokens >= 1, "--max-new-tokens: expected >= 1, found {}",
                  gen.max_new_tokens);
  gen.sampling.validate("--");
  const auto stops = strings("stop");
  for (const auto& s : stops) {
    KILN_CHECK_USER(!s.empty(), "--stop: expected a non-empty string");
  }
  KILN_CHECK_USER(tokenizer || stops.empty(),
                  "--stop: {} has no tokenizer.json to decode the generated text; use --stop-id",
                  dir.string());

  load_plugins(vm, {});
  sdk::Dispatcher::global().configure({.default_backend = vm["backend"].as<std::string>()});
  auto model = load_checkpoint(dir, vm["device"].as<std::string>(), vm["dtype"].as<std::string>());
  generate::Generator generator(*model, gen);

  const bool print_ids = vm["print-ids"].as<bool>() || !tokenizer;
  const bool stream = !print_ids && prompts.size() == 1;
  std::vector<Streamer> streamers;
  if (tokenizer) streamers.assign(prompts.size(), Streamer(*tokenizer));
  const auto on_token = [&](int64_t row, std::span<const int64_t> generated) {
    if (streamers.empty()) return false;
    Streamer& s = streamers[row];
    s.update(generated, stream);
    return std::any_of(stops.begin(), stops.end(), [&](const std::string& stop) {
      return s.text().find(stop) != std::string::npos;
    });
  };
  generate::Generation result;
  if (vm.count("profile")) {
    const std::string trace = vm["profile"].as<std::string>();
    bench::Profile profile(model->lm_head_weight().is_cuda());
    result = generator.generate(prompts, on_token);
    std::cerr << profile.finish(trace) << fmt::format("profile: {}\n", trace);
  } else {
    result = generator.generate(prompts, on_token);
  }

  if (print_ids) {
    for (size_t b = 0; b < prompts.size(); ++b) {
      std::cout << join_ids(prompts[b], result.tokens[b]) << "\n";
    }
  } else if (stream) {
    streamers[0].finish(true);
  } else {
    for (size_t b = 0; b < prompts.size(); ++b) {
      std::cout << fmt::format("--- {} ({}) ---\n{}{}\n", b + 1,
                               generate::finish_reason_name(result.finish[b]),
                               tokenizer->decode(prompts[b]), streamers[b].text());
    }
  }
  std::cout << std::flush;
  if (vm["stats"].as<bool>()) {
    const auto& st = result.stats;
    const auto* cache = generator.cache();
    std::cerr << fmt::format(
        "kiln generate: {} row(s), {} prompt tokens, {} generated; first token {:.1f} ms; "
        "decode {} tokens in {:.3f} s = {:.1f} tokens/s{}\n",
        prompts.size(), st.prompt_tokens, st.generated_tokens, st.first_token_s * 1e3,
        st.decode_tokens, st.decode_s, st.decode_tokens_per_s(),
        cache ? fmt::format("; cache {:.2f} MiB", static_cast<double>(cache->bytes()) / (1 << 20))
              : std::string("; no cache"));
  }
  return 0;
}

} // namespace kiln::cli
