// `kiln bench model`: the --ab parser, and the command on the CPU with the quickstart recipe
// shrunk to a few short steps (table, JSON, plot, fallbacks, one-line errors).
#include "bench/model_bench.h"
#include "kiln/sdk/error.h"

#include "support/run_kiln.h"
#include "support/scratch_dir.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

namespace {

using kiln::test::run_kiln;
namespace fs = std::filesystem;

TEST(BenchAbTest, SplitsValuesOutsideBracketsAndQuotes) {
  auto ab = kiln::bench::parse_ab("backend.default=torch,cuda,auto");
  EXPECT_EQ(ab.key, "backend.default");
  EXPECT_EQ(ab.values, (std::vector<std::string>{"torch", "cuda", "auto"}));
  ab = kiln::bench::parse_ab("data.train=[a.jsonl, b.jsonl],c.jsonl,\"d,e\"");
  EXPECT_EQ(ab.key, "data.train");
  EXPECT_EQ(ab.values, (std::vector<std::string>{"[a.jsonl, b.jsonl]", "c.jsonl", "\"d,e\""}));
  ab = kiln::bench::parse_ab("backend.ops.attention=torch,cuda");
  EXPECT_EQ(ab.key, "backend.ops.attention");
}

TEST(BenchAbTest, BadSpecsAreUserErrorsNamingAb) {
  const std::pair<const char*, const char*> cases[] = {
      {"backend.default", "found no '='"},
      {"backend.default=torch", "at least two values"},
      {"backend.default=torch,torch", "listed twice"},
      {"backend.default=torch,,cuda", "value 2 is empty"},
      {"backend.default=torch,", "value 2 is empty"},
      {"default=torch,cuda", "section.key"},
      {"train.steps=1,2", "sets this key itself"},
      {"checkpoint.every=1,2", "sets this key itself"},
      {"plugins.dirs=a,b", "pass --plugin FILE"},
  };
  for (const auto& [text, message] : cases) {
    try {
      kiln::bench::parse_ab(text);
      ADD_FAILURE() << text;
    } catch (const kiln::Error& e) {
      EXPECT_EQ(e.kind(), kiln::ErrorKind::kUser) << text;
      const std::string what = e.what();
      EXPECT_NE(what.find("--ab"), std::string::npos) << what;
      EXPECT_NE(what.find(message), std::string::npos) << what;
    }
  }
}

// The bench's temporary folders go under the scratch folder's tmp/, where a test can see them
// removed.
constexpr const char* kEnv = "TMPDIR=tmp";

class BenchModelCliTest : public kiln::test::ScratchDirTest {
 protected:
  // The quickstart (a 2-layer glm4_moe on Shakespeare) with short sequences.
  static std::string bench(const std::string& args) {
    return fmt::format(
        "bench model {}/recipes/quickstart.toml --data.seq_len 64 --train.micro_batch 2 {}",
        KILN_SOURCE_DIR, args);
  }
  void SetUp() override {
    ScratchDirTest::SetUp();
    fs::create_directories("tmp");
  }
  static bool temp_is_empty() { return fs::is_empty("tmp"); }
};

TEST_F(BenchModelCliTest, SameKernelsGiveIdenticalLossesAndLogits) {
  const auto r = run_kiln(bench("--ab backend.default=torch,auto --steps 3 --warmup 1 "
                                "--json out.json"),
                          kEnv);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* text :
       {"backend.default = torch | auto", "median ms", "tokens/s", "peak MiB", "speedup",
        "loss diff", "logit abs", "logit rel", "n/a", "1.00x", "loss per step", "wrote out.json"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
  }
  EXPECT_EQ(r.out.find("fallback"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists("runs")) << "the bench must not write run folders";
  EXPECT_TRUE(temp_is_empty()) << "the temporary run folders must be removed";

  const auto json = nlohmann::json::parse(read_file("out.json"));
  EXPECT_EQ(json["key"], "backend.default");
  EXPECT_EQ(json["values"], (nlohmann::json{"torch", "auto"}));
  EXPECT_EQ(json["steps"], 3);
  EXPECT_EQ(json["warmup"], 1);
  const auto& settings = json["settings"];
  ASSERT_EQ(settings.size(), 2u);
  for (const auto& s : settings) {
    EXPECT_EQ(s["ran"], "torch");
    EXPECT_EQ(s["fallback"], false);
    EXPECT_EQ(s["device"], "cpu");
    EXPECT_EQ(s["dtype"], "float32");
    EXPECT_EQ(s["timer"], "wall clock");
    EXPECT_TRUE(s["peak_mib"].is_null()); // no allocator statistics on the CPU
    EXPECT_GT(s["median_step_ms"].get<double>(), 0.0);
    EXPECT_LE(s["min_step_ms"].get<double>(), s["median_step_ms"].get<double>());
    EXPECT_GT(s["tokens_per_s"].get<double>(), 0.0);
    EXPECT_EQ(s["tokens_per_step"].get<double>(), 128.0); // 2 sequences of 64
    ASSERT_EQ(s["losses"].size(), 4u);                    // warm-up included
    EXPECT_EQ(s["step_ms"].size(), 4u);
    EXPECT_EQ(s["tokens"].size(), 4u);
    ASSERT_TRUE(s["backends"].is_array());
    ASSERT_FALSE(s["backends"].empty());
    for (const auto& b : s["backends"]) {
      EXPECT_EQ(b["chosen"], "torch") << b;
      EXPECT_EQ(b["requested"], s["value"]) << b;
      for (const char* key : {"op", "device", "dtype", "note"}) EXPECT_TRUE(b.contains(key));
    }
  }
  EXPECT_EQ(settings[0]["speedup"].get<double>(), 1.0);
  EXPECT_TRUE(settings[0]["loss_max_abs_diff"].is_null()); // the reference
  EXPECT_TRUE(settings[0]["logits_max_abs_diff"].is_null());
  // The same kernels in the same order: bit-identical losses and logits.
  EXPECT_EQ(settings[1]["losses"], settings[0]["losses"]);
  EXPECT_EQ(settings[1]["loss_max_abs_diff"].get<double>(), 0.0);
  EXPECT_EQ(settings[1]["logits_max_abs_diff"].get<double>(), 0.0);
  EXPECT_EQ(settings[1]["logits_max_rel_diff"].get<double>(), 0.0);
  EXPECT_NE(settings[1]["logits_compared"].get<std::string>().find("last 128 positions"),
            std::string::npos)
      << settings[1]["logits_compared"];
  EXPECT_GT(settings[1]["speedup"].get<double>(), 0.0);
}

TEST_F(BenchModelCliTest, MicroBatchChangesThroughputAndPlotIsPng) {
  const auto r = run_kiln(bench("--ab train.micro_batch=1,2 --steps 2 --warmup 1 "
                                "--json out.json --plot out.png"),
                          kEnv);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto json = nlohmann::json::parse(read_file("out.json"));
  const auto& settings = json["settings"];
  ASSERT_EQ(settings.size(), 2u);
  EXPECT_EQ(settings[0]["value"], "1");
  EXPECT_EQ(settings[1]["value"], "2");
  EXPECT_EQ(settings[0]["tokens_per_step"].get<double>(), 64.0);
  EXPECT_EQ(settings[1]["tokens_per_step"].get<double>(), 128.0);
  EXPECT_NE(settings[0]["tokens_per_s"], settings[1]["tokens_per_s"]);
  EXPECT_NE(settings[0]["tokens"], settings[1]["tokens"]);
  EXPECT_GT(settings[1]["loss_max_abs_diff"].get<double>(), 0.0); // other batches, other losses
  // The first batches differ, so their logits are not compared, and the table says why.
  EXPECT_TRUE(settings[1]["logits_max_abs_diff"].is_null());
  EXPECT_NE(settings[1]["logits_compared"].get<std::string>().find("not compared"),
            std::string::npos);
  EXPECT_NE(r.out.find("note: 2: logits not compared"), std::string::npos) << r.out;

  const std::string png = read_file("out.png");
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_NE(r.out.find("wrote out.png"), std::string::npos) << r.out;
  EXPECT_TRUE(temp_is_empty());
}

TEST_F(BenchModelCliTest, FallbackIsShownNotSilent) {
  // testgood has only an rms_norm kernel on the CPU (it returns x * 2): every other op falls
  // back to torch, and the doubled norm changes the losses and logits.
  const std::string plugin =
      fmt::format("--plugin {}/good/libkiln-backend-testgood.so", KILN_TEST_PLUGIN_CASES);
  const auto r =
      run_kiln(bench(fmt::format("{} --ab backend.default=torch,testgood --steps 1 --warmup 0 "
                                 "--json out.json",
                                 plugin)),
               kEnv);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("(fallback)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("note: testgood:"), std::string::npos) << r.out;
  const auto settings = nlohmann::json::parse(read_file("out.json"))["settings"];
  EXPECT_EQ(settings[0]["ran"], "torch");
  EXPECT_EQ(settings[0]["fallback"], false);
  const std::string ran = settings[1]["ran"];
  EXPECT_NE(ran.find("testgood"), std::string::npos) << ran;
  EXPECT_NE(ran.find("torch"), std::string::npos) << ran;
  EXPECT_TRUE(ran.ends_with(" (fallback)")) << ran;
  EXPECT_EQ(settings[1]["fallback"], true);
  EXPECT_FALSE(settings[1]["fallbacks"].empty());
  bool norm_ran_testgood = false;
  for (const auto& b : settings[1]["backends"]) {
    if (b["op"] == "rms_norm") norm_ran_testgood = b["chosen"] == "testgood";
  }
  EXPECT_TRUE(norm_ran_testgood) << settings[1]["backends"];
  EXPECT_GT(settings[1]["loss_max_abs_diff"].get<double>(), 0.0);
  EXPECT_GT(settings[1]["logits_max_abs_diff"].get<double>(), 0.0);
  EXPECT_GT(settings[1]["logits_max_rel_diff"].get<double>(), 0.0);
}

// testoom's rms_norm throws what CUDA's allocator throws (a c10::OutOfMemoryError with a stack
// trace in its what()). A setting out of memory is a result, as "OOM" in a benchmark table: its
// row says so, the others run and compare with the first setting that ran. `auto` times testoom
// too, and its warning about the kernel that threw is one line as well.
bool lists_auto(std::string_view values) {
  return values.ends_with(",auto");
}

TEST_F(BenchModelCliTest, OutOfMemoryIsARowAndTheOthersStillRun) {
  const std::string plugin =
      fmt::format("--plugin {}/oom/libkiln-backend-testoom.so", KILN_TEST_PLUGIN_CASES);
  const std::string message =
      "before the first step: CUDA out of memory. Tried to allocate 9.00 GiB. GPU 0 has a total "
      "capacity of 79.19 GiB of which 2.12 GiB is free. Of the allocated memory 75.10 GiB is "
      "allocated by PyTorch";
  for (const char* values : {"torch,testoom", "testoom,torch,auto"}) {
    const auto r = run_kiln(bench(fmt::format("{} --ab backend.default={} --steps 2 --warmup 1 "
                                              "--json out.json --plot out.png",
                                              plugin, values)),
                            // auto's own cache, so that it times testoom here
                            fmt::format("{} XDG_CACHE_HOME=cache", kEnv));
    ASSERT_EQ(r.code, 0) << values << "\n" << r.out;
    EXPECT_NE(r.out.find(fmt::format("note: testoom: out of memory {}; ask for less", message)),
              std::string::npos)
        << r.out;
    EXPECT_EQ(r.out.find("frame #"), std::string::npos) << r.out;
    if (lists_auto(values)) {
      EXPECT_NE(r.out.find("warning: auto policy: kernel rms_norm/testoom threw while being timed"),
                std::string::npos)
          << r.out;
      EXPECT_NE(r.out.find("is free. Of the allocated memory"), std::string::npos) << r.out;
    }
    const auto settings = nlohmann::json::parse(read_file("out.json"))["settings"];
    ASSERT_EQ(settings.size(), lists_auto(values) ? 3u : 2u);
    const bool oom_first = std::string(values).starts_with("testoom");
    const auto& oom = settings[oom_first ? 0 : 1];
    const auto& torch = settings[oom_first ? 1 : 0];
    EXPECT_EQ(oom["value"], "testoom");
    EXPECT_EQ(oom["out_of_memory"], message);
    EXPECT_TRUE(oom["speedup"].is_null());
    EXPECT_EQ(oom["logits_compared"], "not compared: out of memory");
    EXPECT_TRUE(torch["out_of_memory"].is_null());
    EXPECT_EQ(torch["speedup"], 1.0) << "torch is the reference: the first setting that ran";
    EXPECT_EQ(torch["logits_compared"], "the reference");
    EXPECT_EQ(torch["losses"].size(), 3u);
    EXPECT_GT(torch["median_step_ms"].get<double>(), 0.0);
    EXPECT_TRUE(fs::exists("out.png"));
    EXPECT_TRUE(temp_is_empty());
  }
}

TEST_F(BenchModelCliTest, EverySettingOutOfMemoryIsOneLineExit1) {
  const auto r = run_kiln(
      bench(fmt::format("--plugin {}/oom/libkiln-backend-testoom.so --backend.default testoom "
                        "--ab train.grad_accum=1,2 --steps 1 --warmup 0 --json out.json",
                        KILN_TEST_PLUGIN_CASES)),
      kEnv);
  EXPECT_EQ(r.code, 1) << r.out;
  const std::string line =
      "error: --ab train.grad_accum=1: out of memory before the first step: CUDA out of memory. "
      "Tried to allocate 9.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 2.12 GiB is "
      "free. Of the allocated memory 75.10 GiB is allocated by PyTorch; ask for less";
  EXPECT_NE(r.out.find(line), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(every setting ran out of memory)\n"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3) << "two progress lines: " << r.out;
  EXPECT_FALSE(fs::exists("out.json"));
  EXPECT_TRUE(temp_is_empty());
}

// Each case exits 2 with one error line (plus the progress line of a setting that started).
void expect_one_line_errors(std::span<const std::pair<std::string, const char*>> cases) {
  for (const auto& [args, message] : cases) {
    const auto r = run_kiln(args, kEnv);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(message), std::string::npos) << args << "\n" << r.out;
    const auto error_lines = std::count(r.out.begin(), r.out.end(), '\n') -
                             (r.out.find("kiln bench model: setting") != std::string::npos);
    EXPECT_EQ(error_lines, 1) << args << "\n" << r.out;
    EXPECT_TRUE(fs::is_empty("tmp")) << args;
  }
}

TEST_F(BenchModelCliTest, BadArgumentsAreOneLineExit2BeforeAnythingRuns) {
  const std::pair<std::string, const char*> cases[] = {
      {bench(""), "missing --ab KEY=V1,V2"},
      {bench("--ab backend.default"), "--ab 'backend.default': expected KEY=V1,V2"},
      {bench("--ab backend.default=torch"), "expected at least two values"},
      {bench("--ab train.steps=1,2"), "sets this key itself"},
      {bench("--ab a.b=1,2 --ab c.d=1,2"), "--ab is given twice"},
      {bench("--ab backend.default=torch,auto --steps 0"), "--steps: expected an integer >= 1"},
      {bench("--ab backend.default=torch,auto --warmup -1"), "--warmup: expected an integer"},
      {bench("--ab backend.default=torch,auto --plot no/such/dir/x.png"),
       "--plot no/such/dir/x.png: folder 'no/such/dir' does not exist"},
      {bench("--ab backend.default=torch,auto --json no/such/out.json"),
       "--json no/such/out.json: folder 'no/such' does not exist"},
      {bench("--ab backend.default=torch,auto --json ."), "is a folder"},
      {bench("--ab backend.default=torch,auto --profile a_file"),
       "--profile a_file: cannot create the folder"},
  };
  std::ofstream("a_file") << "in the way\n";
  expect_one_line_errors(cases);
}

TEST_F(BenchModelCliTest, ProfileIsOneMoreStepPerSettingWithItsTrace) {
  const auto r = run_kiln(
      bench("--ab backend.default=torch,auto --steps 2 --warmup 1 --json out.json --profile prof"),
      kEnv);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto json = nlohmann::json::parse(read_file("out.json"));
  const auto& settings = json["settings"];
  ASSERT_EQ(settings.size(), 2u);
  const char* traces[] = {"prof/1-torch.json", "prof/2-auto.json"};
  for (size_t i = 0; i < 2; ++i) {
    // The profiled step is not among the results: warm-up + timed steps only.
    EXPECT_EQ(settings[i]["losses"].size(), 3u);
    EXPECT_EQ(settings[i]["step_ms"].size(), 3u);
    EXPECT_EQ(settings[i]["profile_trace"], traces[i]);
    const auto trace = nlohmann::json::parse(read_file(traces[i]));
    ASSERT_TRUE(trace.contains("traceEvents")) << traces[i];
    // Every kernel run is a range named after its op and backend (sdk::Registrar::add_kernel).
    bool rms_norm = false;
    for (const auto& event : trace["traceEvents"]) {
      rms_norm |= event.value("name", "") == "kiln::rms_norm [torch]";
    }
    EXPECT_TRUE(rms_norm) << traces[i];
  }
  // The same kernels ran, so the settings stay identical even with one more step each.
  EXPECT_EQ(settings[0]["losses"], settings[1]["losses"]);
  for (const char* value : {"torch", "auto"}) {
    const auto at = r.out.find(fmt::format("profile of backend.default={} (step 4", value));
    ASSERT_NE(at, std::string::npos) << r.out;
    EXPECT_NE(r.out.find("CPU ops", at), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("aten::", at), std::string::npos) << r.out;
  }
  EXPECT_TRUE(temp_is_empty());
}

TEST_F(BenchModelCliTest, BadValuesAreOneLineExit2NamingTheSetting) {
  const std::string plugin =
      fmt::format("--plugin {}/good/libkiln-backend-testgood.so", KILN_TEST_PLUGIN_CASES);
  const std::pair<std::string, const char*> cases[] = {
      {bench("--ab train.setps=1,2"),
       "--ab train.setps=1: override '--train.setps': unknown key 'train.setps' (did you mean "
       "'train.steps'?)"},
      {bench("--ab model.dtype=float32,float16"), "--ab model.dtype=float16: "},
      {bench("--ab train.micro_batch=1,zero"), "--ab train.micro_batch=zero: "},
      {bench("--ab backend.default=torch,nope"),
       "--ab backend.default=nope: unknown backend 'nope'"},
      // A strict backend without kernels fails while its setting runs, and says which one.
      {bench(fmt::format("{} --backend.default testgood --ab backend.strict=true,false --steps 1 "
                         "--warmup 0",
                         plugin)),
       "(while running --ab backend.strict=true)"},
  };
  expect_one_line_errors(cases);
}

TEST_F(BenchModelCliTest, HelpDescribesModelBench) {
  const auto r = run_kiln("help bench");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("kiln bench model [RECIPE] --ab KEY=V1,V2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("torch (fallback)"), std::string::npos) << r.out;
}

} // namespace
