// HF checkpoint folders: config.json, single-file and sharded saves, the index, lazy shard
// loading, atomic replacement, and the reader's messages for broken folders.
#include "io/checkpoint.h"

#include "io/safetensors.h"
#include "io_test_support.h"
#include "kiln/sdk/error.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace kiln::io {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using test::bit_identical;
using Named = std::vector<std::pair<std::string, at::Tensor>>;

class CheckpointTest : public test::IoTest {};

// Five tensors of 64 bytes each (mixed dtypes), plus a 0-d one.
Named model_tensors() {
  at::manual_seed(3);
  return {{"model.embed_tokens.weight", at::randn({4, 4})},
          {"model.layers.0.mlp.weight", at::randn({8, 4}).to(at::kBFloat16)},
          {"model.layers.0.scale", at::randn({16})},
          {"model.layers.1.mlp.weight", at::randn({8, 8}).to(at::kFloat8_e4m3fn)},
          {"model.norm.weight", at::randn({32}).to(at::kHalf)},
          {"model.step", at::scalar_tensor(7, at::kLong)}};
}

const json kConfig = {{"architectures", {"Glm4MoeForCausalLM"}},
                      {"hidden_size", 4},
                      {"model_type", "glm4_moe"},
                      {"rope_scaling", nullptr}};

std::vector<std::string> names_of(const std::vector<sdk::TensorInfo>& infos) {
  std::vector<std::string> out;
  for (const auto& info : infos) out.push_back(info.name);
  return out;
}

std::vector<std::string> names_of(const Named& tensors) {
  std::vector<std::string> out;
  for (const auto& [name, tensor] : tensors) out.push_back(name);
  return out;
}

void expect_same_tensors(const sdk::WeightSource& source, const Named& expected) {
  EXPECT_EQ(names_of(source.list()), names_of(expected));
  for (const auto& [name, tensor] : expected) {
    EXPECT_TRUE(source.contains(name)) << name;
    EXPECT_TRUE(bit_identical(source.load(name), tensor)) << name;
  }
}

TEST_F(CheckpointTest, SavesOneFileWithConfigAndLoadsIt) {
  const Named tensors = model_tensors();
  save_checkpoint("ckpt", kConfig, tensors);
  EXPECT_EQ(tree(),
            (std::vector<std::string>{"ckpt", "ckpt/config.json", "ckpt/model.safetensors"}));
  // HF writes json.dumps(config, indent=2, sort_keys=True) + "\n".
  EXPECT_EQ(read_file("ckpt/config.json"),
            "{\n"
            "  \"architectures\": [\n"
            "    \"Glm4MoeForCausalLM\"\n"
            "  ],\n"
            "  \"hidden_size\": 4,\n"
            "  \"model_type\": \"glm4_moe\",\n"
            "  \"rope_scaling\": null\n"
            "}\n");
  EXPECT_EQ(read_config("ckpt"), kConfig);
  EXPECT_EQ(SafetensorsFile("ckpt/model.safetensors").metadata(),
            (SafetensorsMetadata{{"format", "pt"}}));

  CheckpointReader reader("ckpt");
  EXPECT_EQ(reader.describe(), "ckpt/model.safetensors");
  expect_same_tensors(reader, tensors);
  EXPECT_FALSE(reader.contains("lm_head.weight"));
}

TEST_F(CheckpointTest, ShardedSaveLoadsLikeTheSingleFile) {
  const Named tensors = model_tensors();
  save_checkpoint("single", kConfig, tensors);
  // 64-byte tensors, 128-byte shards: two per shard, the last with the 8-byte scalar.
  save_checkpoint("sharded", kConfig, tensors, {.max_shard_bytes = 128});
  EXPECT_EQ(tree(),
            (std::vector<std::string>{
                "sharded", "sharded/config.json", "sharded/model-00001-of-00003.safetensors",
                "sharded/model-00002-of-00003.safetensors",
                "sharded/model-00003-of-00003.safetensors", "sharded/model.safetensors.index.json",
                "single", "single/config.json", "single/model.safetensors"}));

  const json index = json::parse(read_file("sharded/model.safetensors.index.json"));
  EXPECT_EQ(index, (json{{"metadata", {{"total_size", 5 * 64 + 8}}},
                         {"weight_map",
                          {{"model.embed_tokens.weight", "model-00001-of-00003.safetensors"},
                           {"model.layers.0.mlp.weight", "model-00001-of-00003.safetensors"},
                           {"model.layers.0.scale", "model-00002-of-00003.safetensors"},
                           {"model.layers.1.mlp.weight", "model-00002-of-00003.safetensors"},
                           {"model.norm.weight", "model-00003-of-00003.safetensors"},
                           {"model.step", "model-00003-of-00003.safetensors"}}}}));
  EXPECT_EQ(read_file("sharded/model.safetensors.index.json"), index.dump(2) + "\n");

  CheckpointReader sharded("sharded");
  CheckpointReader single("single");
  EXPECT_EQ(sharded.describe(), "sharded/model.safetensors.index.json");
  EXPECT_EQ(sharded.files().size(), 3u);
  expect_same_tensors(sharded, tensors);
  for (const auto& [name, tensor] : tensors) {
    EXPECT_TRUE(bit_identical(sharded.load(name), single.load(name))) << name;
  }
}

TEST_F(CheckpointTest, ATensorLargerThanTheShardLimitGetsItsOwnShard) {
  const Named tensors = {{"small.a", at::zeros({2})},
                         {"big", at::ones({64})},
                         {"small.b", at::zeros({2})},
                         {"small.c", at::zeros({2})}};
  save_checkpoint("ckpt", nullptr, tensors, {.max_shard_bytes = 16});
  const json map = json::parse(read_file("ckpt/model.safetensors.index.json"))["weight_map"];
  EXPECT_EQ(map, (json{{"small.a", "model-00001-of-00003.safetensors"},
                       {"big", "model-00002-of-00003.safetensors"},
                       {"small.b", "model-00003-of-00003.safetensors"},
                       {"small.c", "model-00003-of-00003.safetensors"}}));
  EXPECT_FALSE(fs::exists("ckpt/config.json")); // a null config writes none
  expect_same_tensors(CheckpointReader("ckpt"), tensors);
}

TEST_F(CheckpointTest, ASaveThatFitsOneShardIsOneFile) {
  save_checkpoint("ckpt", kConfig, model_tensors(), {.max_shard_bytes = 1 << 20});
  EXPECT_EQ(tree(),
            (std::vector<std::string>{"ckpt", "ckpt/config.json", "ckpt/model.safetensors"}));
}

TEST_F(CheckpointTest, ReadsASingleSafetensorsFileOrAnIndexPath) {
  const Named tensors = model_tensors();
  save_checkpoint("one", nullptr, tensors);
  save_checkpoint("many", nullptr, tensors, {.max_shard_bytes = 64});
  expect_same_tensors(CheckpointReader("one/model.safetensors"), tensors);
  expect_same_tensors(CheckpointReader("many/model.safetensors.index.json"), tensors);
}

TEST_F(CheckpointTest, TensorsOutliveTheReader) {
  const Named tensors = model_tensors();
  save_checkpoint("ckpt", nullptr, tensors, {.max_shard_bytes = 64});
  std::vector<at::Tensor> loaded;
  {
    CheckpointReader reader("ckpt");
    for (const auto& [name, tensor] : tensors) loaded.push_back(reader.load(name));
  }
  fs::remove_all("ckpt");
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_TRUE(bit_identical(loaded[i], tensors[i].second)) << tensors[i].first;
  }
}

TEST_F(CheckpointTest, ShardsAreOpenedOnlyWhenNeeded) {
  save_checkpoint("ckpt", nullptr, model_tensors(), {.max_shard_bytes = 128});
  // Break the last shard: opening the checkpoint and loading from the others still works.
  write_file("ckpt/model-00003-of-00003.safetensors", "junk");
  CheckpointReader reader("ckpt");
  EXPECT_TRUE(reader.contains("model.norm.weight"));
  EXPECT_EQ(reader.load("model.embed_tokens.weight").sizes(), (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(user_error_of([&] { reader.load("model.norm.weight"); }),
            "ckpt/model-00003-of-00003.safetensors: file is 4 bytes, smaller than the 8-byte "
            "header length; the file is truncated or not safetensors");
}

// ---- atomic saves -------------------------------------------------------------------------------

TEST_F(CheckpointTest, ReplacesAnExistingCheckpointWhole) {
  save_checkpoint("ckpt", kConfig, model_tensors(), {.max_shard_bytes = 128});
  const Named second = {{"w", at::ones({3})}};
  save_checkpoint("ckpt/", json{{"hidden_size", 8}}, second);
  EXPECT_EQ(tree(),
            (std::vector<std::string>{"ckpt", "ckpt/config.json", "ckpt/model.safetensors"}));
  EXPECT_EQ(read_config("ckpt"), (json{{"hidden_size", 8}}));
  expect_same_tensors(CheckpointReader("ckpt"), second);
}

TEST_F(CheckpointTest, SavesIntoAnEmptyFolderAndCreatesParents) {
  fs::create_directory("empty");
  save_checkpoint("empty", nullptr, Named{{"w", at::ones({3})}});
  save_checkpoint("runs/a/step-1", nullptr, Named{{"w", at::ones({3})}});
  EXPECT_TRUE(fs::exists("empty/model.safetensors"));
  EXPECT_TRUE(fs::exists("runs/a/step-1/model.safetensors"));
}

TEST_F(CheckpointTest, AFailedSaveLeavesTheOldCheckpointUntouched) {
  save_checkpoint("ckpt", kConfig, model_tensors(), {.max_shard_bytes = 128});
  const std::vector<std::string> before = tree();
  const std::string index_before = read_file("ckpt/model.safetensors.index.json");
  const std::string shard_before = read_file("ckpt/model-00002-of-00003.safetensors");

  // Caught by the checks before anything is written.
  EXPECT_EQ(user_error_of([] {
              save_checkpoint("ckpt", kConfig, Named{{"a", at::ones({2})}, {"b", at::Tensor()}});
            }),
            "ckpt: tensor 'b' is undefined; every saved tensor needs data");
  EXPECT_EQ(tree(), before);

  // Fails while writing the second shard: the first shard, already written, is discarded.
  const Named failing = {{"a", at::ones({16})}, {"meta", at::empty({16}, at::kMeta)}};
  std::string message;
  try {
    save_checkpoint("ckpt", kConfig, failing, {.max_shard_bytes = 64});
    ADD_FAILURE() << "expected a kiln::Error";
  } catch (const Error& error) {
    message = error.full();
  }
  EXPECT_TRUE(message.find("model-00002-of-00002.safetensors: tensor 'meta' cannot be copied to "
                           "the CPU: ") != std::string::npos)
      << message;
  EXPECT_TRUE(message.ends_with("(while saving checkpoint 'ckpt')")) << message;
  EXPECT_EQ(tree(), before); // no ckpt.tmp-* left, nothing in ckpt changed
  EXPECT_EQ(read_file("ckpt/model.safetensors.index.json"), index_before);
  EXPECT_EQ(read_file("ckpt/model-00002-of-00003.safetensors"), shard_before);
}

TEST_F(CheckpointTest, RefusesToReplaceWhatIsNotACheckpoint) {
  write_file("notes/todo.txt", "keep me");
  EXPECT_EQ(user_error_of([] { save_checkpoint("notes", nullptr, Named{}); }),
            "notes: exists and holds no checkpoint (no config.json, model.safetensors or "
            "model.safetensors.index.json); refusing to replace it: choose another folder or "
            "remove it");
  write_file("file", "x");
  EXPECT_EQ(user_error_of([] { save_checkpoint("file", nullptr, Named{}); }),
            "file: exists and is not a folder; refusing to replace it with a checkpoint");
  EXPECT_EQ(user_error_of([] { save_checkpoint(".", nullptr, Named{}); }),
            "cannot save a checkpoint as '.': name a new folder, e.g. 'checkpoints/step-100'");
  EXPECT_EQ(user_error_of([] { save_checkpoint("x", json::array(), Named{}); }),
            "x: the config is [], expected a JSON object for config.json");
  EXPECT_EQ(tree(), (std::vector<std::string>{"file", "notes", "notes/todo.txt"}));
}

// ---- read_config
// ----------------------------------------------------------------------------------

TEST_F(CheckpointTest, ReadConfigReportsMissingFiles) {
  EXPECT_EQ(user_error_of([] { read_config("absent"); }),
            "absent: no such folder; expected an HF checkpoint folder with config.json");
  write_file("ckpt/model.safetensors", "");
  write_file("ckpt/tokenizer.json", "{}");
  EXPECT_EQ(user_error_of([] { read_config("ckpt"); }),
            "ckpt: no config.json (the folder has: model.safetensors, tokenizer.json); an HF "
            "checkpoint keeps it beside the weights");
}

TEST_F(CheckpointTest, ReadConfigReportsInvalidJsonWithLineAndColumn) {
  write_file("ckpt/config.json", "{\n  \"hidden_size\": 4,\n  \"vocab_size\": x\n}\n");
  EXPECT_EQ(user_error_of([] { read_config("ckpt"); }),
            "ckpt/config.json:3:17: invalid JSON: syntax error while parsing value - invalid "
            "literal; last read: '\"vocab_size\": x'");
  write_file("ckpt/config.json", "{\n  \"a\": 1,\n");
  EXPECT_EQ(user_error_of([] { read_config("ckpt"); }),
            "ckpt/config.json:3:1: invalid JSON: syntax error while parsing object key - "
            "unexpected end of input; expected string literal");
}

TEST_F(CheckpointTest, ReadConfigRejectsNonObjectsAndDuplicateKeys) {
  write_file("ckpt/config.json", "[1, 2]");
  EXPECT_EQ(user_error_of([] { read_config("ckpt"); }),
            "ckpt/config.json: expected a JSON object, found [1,2]");
  write_file("ckpt/config.json", R"({"rope": {"theta": 1, "theta": 2}})");
  EXPECT_EQ(user_error_of([] { read_config("ckpt"); }),
            "ckpt/config.json: key 'rope.theta' appears twice; keep one");
}

// ---- broken checkpoint folders ------------------------------------------------------------------

TEST_F(CheckpointTest, ReaderListsWhatAFolderWithoutWeightsHas) {
  EXPECT_EQ(user_error_of([] { CheckpointReader reader("absent"); }),
            "absent: no such file or folder; expected an HF checkpoint folder or a .safetensors "
            "file");
  write_file("ckpt/config.json", "{}");
  write_file("ckpt/pytorch_model.bin", "");
  fs::create_directory("ckpt/sub");
  EXPECT_EQ(user_error_of([] { CheckpointReader reader("ckpt"); }),
            "ckpt: no model.safetensors.index.json or model.safetensors (the folder has: "
            "config.json, pytorch_model.bin, sub/); expected an HF checkpoint folder");
}

TEST_F(CheckpointTest, ReaderRejectsAMissingShard) {
  save_checkpoint("ckpt", nullptr, model_tensors(), {.max_shard_bytes = 128});
  fs::remove("ckpt/model-00002-of-00003.safetensors");
  EXPECT_EQ(user_error_of([] { CheckpointReader reader("ckpt"); }),
            "ckpt/model.safetensors.index.json: shard 'model-00002-of-00003.safetensors' (holding "
            "'model.layers.0.scale' and 1 more) is missing from ckpt; the checkpoint is "
            "incomplete");
}

TEST_F(CheckpointTest, ReaderRejectsANameMissingFromItsShard) {
  save_checkpoint("ckpt", nullptr, model_tensors(), {.max_shard_bytes = 128});
  json index = json::parse(read_file("ckpt/model.safetensors.index.json"));
  index["weight_map"]["lm_head.weight"] = "model-00001-of-00003.safetensors";
  write_file("ckpt/model.safetensors.index.json", index.dump(2));
  CheckpointReader reader("ckpt");
  EXPECT_TRUE(reader.contains("lm_head.weight"));
  EXPECT_EQ(user_error_of([&] { reader.load("model.embed_tokens.weight"); }),
            "ckpt/model.safetensors.index.json: weight_map puts 'lm_head.weight' in "
            "model-00001-of-00003.safetensors, but that shard has no such tensor; the index does "
            "not match its shards (re-download or re-save the checkpoint)");
}

TEST_F(CheckpointTest, ReaderRejectsBadIndexes) {
  const auto index_error = [&](std::string_view text) {
    write_file("ckpt/model.safetensors.index.json", text);
    return user_error_of([] { CheckpointReader reader("ckpt"); });
  };
  EXPECT_EQ(index_error(R"({"metadata": {}})"),
            "ckpt/model.safetensors.index.json: no \"weight_map\" object; expected HF's index "
            "{\"metadata\": {...}, \"weight_map\": {\"tensor name\": \"shard file\"}}");
  EXPECT_EQ(index_error(R"({"weight_map": {"a": 1}})"),
            "ckpt/model.safetensors.index.json: weight_map 'a' is 1, expected a shard file name");
  EXPECT_EQ(index_error(R"({"weight_map": {"a": "../secret.safetensors"}})"),
            "ckpt/model.safetensors.index.json: weight_map 'a' names '../secret.safetensors', "
            "expected a file name in the same folder");
  EXPECT_EQ(index_error(R"({"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}})"),
            "ckpt/model.safetensors.index.json: key 'weight_map.a' appears twice; keep one");
  EXPECT_EQ(index_error("{\"weight_map\": {\n"),
            "ckpt/model.safetensors.index.json:2:1: invalid JSON: syntax error while parsing "
            "object key - unexpected end of input; expected string literal");
}

TEST_F(CheckpointTest, LoadingAnUnknownNameSuggestsTheNearest) {
  save_checkpoint("ckpt", nullptr, model_tensors(), {.max_shard_bytes = 128});
  CheckpointReader reader("ckpt");
  EXPECT_EQ(user_error_of([&] { reader.load("model.norm.weihgt"); }),
            "ckpt/model.safetensors.index.json: no tensor 'model.norm.weihgt' (did you mean "
            "'model.norm.weight'?); the checkpoint has 6 tensors");
}

} // namespace
} // namespace kiln::io
