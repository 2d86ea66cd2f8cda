// `kiln generate` as a user runs it: ids in and out against HF's greedy references for every
// family, with and without the cache; text in and out on a checkpoint the quickstart saved (its
// tokenizer.json), stop strings, stats; and one-line errors for bad input.
#include "support/run_kiln.h"
#include "support/scratch_dir.h"

#include "io/safetensors.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

namespace kiln::test {
namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = fs::path(KILN_SOURCE_DIR) / "tests/fixtures";

std::string csv(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kLong).contiguous();
  std::string out;
  for (int64_t i = 0; i < c.numel(); ++i) {
    out += (i ? "," : "") + std::to_string(c.data_ptr<int64_t>()[i]);
  }
  return out;
}

class GenerateCliTest : public ScratchDirTest {};

TEST_F(GenerateCliTest, PrintIdsEqualsHfGreedyForEveryFamilyWithAndWithoutCache) {
  for (const char* fixture : {"glm4_moe/base", "glm_moe_dsa/base", "nemotron_v3/hybrid"}) {
    const fs::path dir = kFixtures / fixture;
    const io::SafetensorsFile ref(dir / "generate.safetensors");
    const std::string p0 = csv(ref.load("prompt/0")), p1 = csv(ref.load("prompt/1"));
    const std::string g0 = csv(ref.load("generated/0")), g1 = csv(ref.load("generated/1"));
    const int64_t n = ref.load("generated/0").numel() - ref.load("prompt/0").numel();
    for (const char* cache : {"", " --no-cache"}) {
      const auto r = run_kiln(fmt::format(
          "generate --model {} --input-ids {} --input-ids {} --max-new-tokens {} --print-ids{}",
          dir.string(), p0, p1, n, cache));
      ASSERT_EQ(r.code, 0) << fixture << cache << "\n" << r.out;
      EXPECT_EQ(r.out, g0 + "\n" + g1 + "\n") << fixture << cache;
    }
  }
}

TEST_F(GenerateCliTest, EosIdsOfGenerationConfigEndTheRow) {
  // A copy of a fixture whose generation_config.json names HF's 4th generated token as eos.
  const fs::path src = kFixtures / "glm4_moe/base";
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src / f, dir_ / f);
  const io::SafetensorsFile ref(src / "generate.safetensors");
  const at::Tensor prompt = ref.load("prompt/0");
  const at::Tensor generated = ref.load("generated/0").to(at::kLong).contiguous();
  const int64_t* ids = generated.data_ptr<int64_t>();
  const int64_t eos = ids[prompt.numel() + 3];
  write_file(dir_ / "generation_config.json",
             fmt::format("{{\"eos_token_id\": [{}, 100000]}}", eos));
  int64_t end = prompt.numel();
  while (ids[end] != eos) ++end; // the first time the row produces it
  const auto r =
      run_kiln(fmt::format("generate --model {} --input-ids {} --max-new-tokens 16 --print-ids",
                           dir_.string(), csv(prompt)));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, csv(generated.narrow(0, 0, end + 1)) + "\n");
}

TEST_F(GenerateCliTest, TextPromptsStreamAndStopOnAStopString) {
  // A checkpoint with a tokenizer.json: two steps of the embedded quickstart.
  const auto trained = run_kiln(
      "run --train.steps 2 --train.micro_batch 1 --data.seq_len 32 --train.val_every 0 "
      "--train.sample_tokens 0 --log-format text --run.dir run",
      fmt::format("cd {} && XDG_CACHE_HOME={}", dir_.string(), (dir_ / "cache").string()));
  ASSERT_EQ(trained.code, 0) << trained.out;
  const std::string model = (dir_ / "run/checkpoints/step-2").string();
  ASSERT_TRUE(fs::exists(model + "/tokenizer.json"));

  const auto plain = run_kiln(fmt::format(
      "generate --model {} --prompt 'ROMEO:' --max-new-tokens 12 --temperature 0.8 --seed 3",
      model));
  ASSERT_EQ(plain.code, 0) << plain.out;
  ASSERT_GE(plain.out.size(), 2u);
  EXPECT_EQ(plain.out.back(), '\n');
  const auto again = run_kiln(fmt::format(
      "generate --model {} --prompt 'ROMEO:' --max-new-tokens 12 --temperature 0.8 --seed 3 "
      "--no-cache",
      model));
  EXPECT_EQ(again.out, plain.out); // same seed, same tokens, cache or not

  // Stop at the first occurrence of one of the generated characters.
  const std::string text = plain.out.substr(0, plain.out.size() - 1);
  size_t pick = std::string::npos;
  for (size_t i = 1; i < text.size(); ++i) {
    if (std::isalpha(static_cast<unsigned char>(text[i]))) {
      pick = i;
      break;
    }
  }
  if (pick != std::string::npos) {
    const std::string stop(1, text[pick]);
    const auto stopped = run_kiln(fmt::format(
        "generate --model {} --prompt 'ROMEO:' --max-new-tokens 12 --temperature 0.8 --seed 3 "
        "--stop {}",
        model, stop));
    ASSERT_EQ(stopped.code, 0) << stopped.out;
    EXPECT_EQ(stopped.out, text.substr(0, text.find(stop) + 1) + "\n");
  }

  const auto stats = run_kiln(fmt::format(
      "generate --model {} --prompt 'ROMEO:' --prompt 'JULIET:' --max-new-tokens 4 --stats",
      model));
  ASSERT_EQ(stats.code, 0) << stats.out;
  EXPECT_NE(stats.out.find("--- 1 (length) ---\nROMEO:"), std::string::npos) << stats.out;
  EXPECT_NE(stats.out.find("--- 2 (length) ---\nJULIET:"), std::string::npos) << stats.out;
  EXPECT_NE(stats.out.find("kiln generate: 2 row(s), 13 prompt tokens, 8 generated; first token"),
            std::string::npos)
      << stats.out;
  EXPECT_NE(stats.out.find("tokens/s; cache "), std::string::npos) << stats.out;
}

TEST_F(GenerateCliTest, BadInputIsAOneLineError) {
  const std::string dir = (kFixtures / "glm4_moe/base").string();
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"--model " + dir, "kiln generate: no prompt; give --prompt TEXT"},
      {"--model " + dir + " --prompt hi", "has no tokenizer.json to encode text prompts"},
      {"--model " + dir + " --input-ids 1,x", "--input-ids: expected comma-separated token ids"},
      {"--model " + dir + " --input-ids 1,2 --top-p 0", "--top-p: expected a value in (0, 1]"},
      {"--model " + dir + " --input-ids 1,2 --temperature -1", "--temperature: expected"},
      {"--model " + dir + " --input-ids 1,2 --max-new-tokens 0", "--max-new-tokens: expected >= 1"},
      {"--model " + dir + " --input-ids 1,99999", "token id 99999 is outside the vocabulary"},
      {"--model " + dir + " --input-ids 1 --device cuda:77", "--device"},
  };
  for (const auto& c : cases) {
    const auto r = run_kiln("generate " + c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.message), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << c.args << "\n" << r.out;
  }
}

} // namespace
} // namespace kiln::test
