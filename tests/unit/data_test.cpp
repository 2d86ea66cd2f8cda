// framework/data: JSONL formats, loss masks, chat templates, packing and the resumable loader.
#include "data/dataset.h"
#include "data/loader.h"
#include "io/tokenizer.h"
#include "kiln/sdk/error.h"
#include "support/scratch_dir.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <set>

namespace kiln {
namespace {

using data::Corpus;
using data::EncodeOptions;
using data::Format;

class DataTest : public test::ScratchDirTest {
 protected:
  Corpus load(const std::string& jsonl, EncodeOptions options) {
    write_file("data.jsonl", jsonl);
    return Corpus::load({"data.jsonl"}, *tokenizer_, options);
  }
  std::string text_of(std::span<const int32_t> tokens) const {
    std::vector<int64_t> ids(tokens.begin(), tokens.end());
    return tokenizer_->decode(ids);
  }
  // The text of the tokens flagged as targets.
  std::string target_text(const Corpus& corpus, size_t doc) const {
    std::vector<int64_t> ids;
    for (size_t t = 0; t < corpus.tokens(doc).size(); ++t) {
      if (corpus.targets(doc)[t]) ids.push_back(corpus.tokens(doc)[t]);
    }
    return tokenizer_->decode(ids);
  }
  std::string error_of(const std::string& jsonl, EncodeOptions options) {
    try {
      load(jsonl, options);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  }
  std::unique_ptr<io::Tokenizer> tokenizer_ = io::Tokenizer::bytes();
};

TEST_F(DataTest, TextDocumentsAreWholeTargetsAndSplitIntoSeqLenPieces) {
  const Corpus corpus = load("{\"text\": \"abcdefghij\"}\n\n{\"text\": \"xyz\"}\n",
                             {.format = Format::kText, .seq_len = 4});
  // "abcdefghij" -> abcd efgh ij; "xyz" -> xyz.
  ASSERT_EQ(corpus.size(), 4u);
  EXPECT_EQ(text_of(corpus.tokens(0)), "abcd");
  EXPECT_EQ(text_of(corpus.tokens(2)), "ij");
  EXPECT_EQ(text_of(corpus.tokens(3)), "xyz");
  EXPECT_EQ(target_text(corpus, 0), "abcd");
  EXPECT_EQ(corpus.total_tokens(), 13);
}

TEST_F(DataTest, EosIsAppendedAndIsATarget) {
  const Corpus corpus = load("{\"text\": \"ab\"}\n", {.format = Format::kText, .eos_id = 3});
  ASSERT_EQ(corpus.size(), 1u);
  ASSERT_EQ(corpus.tokens(0).size(), 3u);
  EXPECT_EQ(corpus.tokens(0)[2], 3);
  EXPECT_EQ(corpus.targets(0)[2], 1);
}

TEST_F(DataTest, PromptCompletionTrainsOnlyTheCompletion) {
  const std::string line = "{\"prompt\": \"Q: 2+2?\\n\", \"completion\": \"A: 4\"}\n";
  const Corpus answer_only = load(line, {.format = Format::kPromptCompletion});
  EXPECT_EQ(text_of(answer_only.tokens(0)), "Q: 2+2?\nA: 4");
  EXPECT_EQ(target_text(answer_only, 0), "A: 4");
  const Corpus everything =
      load(line, {.format = Format::kPromptCompletion, .answer_only_loss = false});
  EXPECT_EQ(target_text(everything, 0), "Q: 2+2?\nA: 4");
}

TEST_F(DataTest, ChatTrainsOnlyAssistantTurnsInTheFamilysTemplate) {
  const std::string line =
      R"({"messages": [{"role": "system", "content": "Be brief."}, )"
      R"({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, )"
      R"({"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Farewell."}]})"
      "\n";
  const Corpus glm = load(line, {.format = Format::kChat, .family = "glm4_moe"});
  EXPECT_EQ(text_of(glm.tokens(0)),
            "[gMASK]<sop><|system|>\nBe brief.<|user|>\nHi<|assistant|>\nHello.<|user|>\nBye"
            "<|assistant|>\nFarewell.");
  EXPECT_EQ(target_text(glm, 0), "Hello.Farewell.");
  const Corpus chatml = load(line, {.format = Format::kChat, .family = "nemotron_v3"});
  EXPECT_EQ(text_of(chatml.tokens(0)).substr(0, 34), "<|im_start|>system\nBe brief.<|im_e");
  EXPECT_EQ(target_text(chatml, 0), "Hello.<|im_end|>\nFarewell.<|im_end|>\n");
}

TEST_F(DataTest, OverlongExamplesAreDroppedOrTruncated) {
  const std::string lines =
      "{\"prompt\": \"abc\", \"completion\": \"defgh\"}\n"
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
  const Corpus dropped = load(lines, {.format = Format::kPromptCompletion, .seq_len = 4});
  EXPECT_EQ(dropped.size(), 1u);
  EXPECT_EQ(dropped.dropped(), 1);
  const Corpus truncated =
      load(lines, {.format = Format::kPromptCompletion, .seq_len = 4, .drop_overlong = false});
  ASSERT_EQ(truncated.size(), 2u);
  EXPECT_EQ(truncated.truncated(), 1);
  EXPECT_EQ(text_of(truncated.tokens(0)), "abcd");
}

TEST_F(DataTest, BadLinesNameTheFileAndLine) {
  EXPECT_EQ(error_of("{\"text\": \"a\"}\n{\"txt\": \"b\"}\n", {.format = Format::kText}),
            "data.jsonl:2: format 'text' needs a string field \"text\"; found {\"txt\":\"b\"}");
  EXPECT_NE(error_of("{\"text\": \"a\"}\nnot json\n", {}).find("data.jsonl:2: not a JSON line"),
            std::string::npos);
  EXPECT_EQ(error_of("[1, 2]\n", {}), "data.jsonl:1: expected a JSON object, found array");
  EXPECT_EQ(error_of(R"({"messages": [{"role": "robot", "content": "x"}]})"
                     "\n",
                     {.format = Format::kChat}),
            "data.jsonl:1 (message 0): role 'robot': expected system, user, assistant or tool");
  EXPECT_NE(error_of("", {}).find("no error"), std::string::npos); // empty file: empty corpus
  try {
    Corpus::load({"missing.jsonl"}, *tokenizer_, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot read data file 'missing.jsonl': no such file; check data.train / "
              "data.validation");
  }
}

Corpus numbered_corpus(int documents) {
  // Document d is d + 2 tokens long, every token = d (so batches show which documents they hold).
  Corpus corpus;
  for (int d = 0; d < documents; ++d) {
    const std::vector<int32_t> tokens(d % 5 + 2, d);
    const std::vector<uint8_t> targets(tokens.size(), 1);
    corpus.add(tokens, targets);
  }
  return corpus;
}

std::vector<int64_t> documents_of(const data::MicroBatch& batch) {
  std::vector<int64_t> out;
  const auto cu = batch.cu_seqlens;
  for (int64_t i = 0; i + 1 < cu.size(0); ++i) {
    out.push_back(batch.input_ids[cu[i].item<int64_t>()].item<int64_t>());
  }
  return out;
}

TEST(LoaderTest, PackingKeepsDocumentsWholeAndLabelsInsideThem) {
  const Corpus corpus = numbered_corpus(10);
  data::Loader loader(corpus, {.micro_batch = 2, .seq_len = 8, .shuffle = false});
  const auto batch = loader.next();
  // Lengths 2,3,4,5,...: 2 + 3 + 4 = 9 <= 16, + 5 = 14, + 6 > 16.
  EXPECT_EQ(documents_of(batch), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(batch.num_tokens, 14);
  const auto cu = batch.cu_seqlens;
  for (int64_t d = 0; d + 1 < cu.size(0); ++d) {
    const int64_t begin = cu[d].item<int64_t>(), end = cu[d + 1].item<int64_t>();
    for (int64_t t = begin; t < end; ++t) {
      const int64_t label = batch.labels[t].item<int64_t>();
      if (t == end - 1) {
        EXPECT_EQ(label, -100) << "the last token of a document predicts nothing";
      } else {
        EXPECT_EQ(label, batch.input_ids[t + 1].item<int64_t>());
        EXPECT_EQ(label, d) << "labels come from the same document";
      }
    }
  }
  EXPECT_EQ(batch.num_targets, 14 - 4);
}

TEST(LoaderTest, UnpackedBatchesHoldMicroBatchDocuments) {
  const Corpus corpus = numbered_corpus(5);
  data::Loader loader(corpus, {.micro_batch = 2, .seq_len = 8, .pack = false, .shuffle = false});
  EXPECT_EQ(documents_of(loader.next()), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(documents_of(loader.next()), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(documents_of(loader.next()), (std::vector<int64_t>{4, 0})); // into the next epoch
  EXPECT_EQ(loader.state().epoch, 1);
}

TEST(LoaderTest, ShuffleIsSeededPerEpochAndCoversEveryDocument) {
  const Corpus corpus = numbered_corpus(40);
  auto epoch_order = [&](uint64_t seed) {
    data::Loader loader(corpus, {.micro_batch = 1, .seq_len = 8, .pack = false, .seed = seed});
    std::vector<int64_t> first, second;
    for (int i = 0; i < 40; ++i) first.push_back(documents_of(loader.next())[0]);
    for (int i = 0; i < 40; ++i) second.push_back(documents_of(loader.next())[0]);
    return std::pair(first, second);
  };
  const auto [a1, a2] = epoch_order(1);
  const auto [b1, b2] = epoch_order(1);
  const auto [c1, c2] = epoch_order(2);
  EXPECT_EQ(a1, b1);
  EXPECT_EQ(a2, b2);
  EXPECT_NE(a1, a2) << "each epoch has its own order";
  EXPECT_NE(a1, c1) << "the seed changes the order";
  EXPECT_EQ(std::set<int64_t>(a1.begin(), a1.end()).size(), 40u);
}

TEST(LoaderTest, ASavedPositionContinuesExactly) {
  const Corpus corpus = numbered_corpus(23);
  const data::LoaderOptions options{.micro_batch = 2, .seq_len = 8, .seed = 5};
  data::Loader straight(corpus, options);
  for (int i = 0; i < 7; ++i) straight.next();
  const auto saved = data::LoaderState::from_json(straight.state().to_json());
  data::Loader resumed(corpus, options, saved);
  for (int i = 0; i < 20; ++i) {
    const auto a = straight.next();
    const auto b = resumed.next();
    ASSERT_TRUE(at::equal(a.input_ids, b.input_ids)) << i;
    ASSERT_TRUE(at::equal(a.cu_seqlens, b.cu_seqlens)) << i;
  }
  EXPECT_EQ(straight.state(), resumed.state());
}

TEST(LoaderTest, RanksTakeAlternateMicroBatches) {
  const Corpus corpus = numbered_corpus(30);
  data::LoaderOptions options{.micro_batch = 1, .seq_len = 8, .seed = 3};
  data::Loader single(corpus, options);
  options.world = 2;
  data::Loader rank0(corpus, options);
  options.rank = 1;
  data::Loader rank1(corpus, options);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(documents_of(single.next()), documents_of(rank0.next())) << i;
    EXPECT_EQ(documents_of(single.next()), documents_of(rank1.next())) << i;
  }
}

TEST(LoaderTest, SingleEpochStopsAndEmptyCorpusIsAnError) {
  const Corpus corpus = numbered_corpus(3);
  data::Loader loader(corpus,
                      {.micro_batch = 1, .seq_len = 8, .shuffle = false, .single_epoch = true});
  int batches = 0;
  while (loader.next().num_tokens > 0) ++batches;
  EXPECT_EQ(batches, 2); // 2 + 3 + 4 tokens in 8-token batches: {0, 1}, {2}
  const Corpus empty;
  EXPECT_THROW(data::Loader(empty, {}), Error);
}

TEST(LoaderTest, MockBatchesAreRandomButReproducible) {
  data::MockLoader a(100, {.micro_batch = 2, .seq_len = 16, .seed = 9});
  data::MockLoader b(100, {.micro_batch = 2, .seq_len = 16, .seed = 9});
  const auto first = a.next();
  EXPECT_EQ(first.num_tokens, 32);
  EXPECT_EQ(first.num_targets, 30);
  EXPECT_TRUE(at::equal(first.input_ids, b.next().input_ids));
  EXPECT_FALSE(at::equal(first.input_ids, a.next().input_ids));
  EXPECT_LT(first.input_ids.max().item<int64_t>(), 100);
}

} // namespace
} // namespace kiln
