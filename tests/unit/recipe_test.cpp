// Recipe loading, extends, overrides, validation and to_toml, asserted on the exact messages users
// read. Each test works in its own temporary directory, made the current directory, so recipes are
// loaded by relative paths and messages read as they would for a user.
#include "recipe/recipe.h"

#include "kiln/sdk/error.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>
#include "../support/scratch_dir.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace kiln::recipe {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The smallest valid [model]: a family and a config to build it from.
constexpr std::string_view kModel =
    "[model]\n"
    "family = \"glm4_moe\"\n"
    "[model.config]\n"
    "hidden_size = 64\n";

class RecipeTest : public ::kiln::test::ScratchDirTest {
 protected:
  static void write(const fs::path& file, std::string_view text) { write_file(file, text); }

  /// The message load_recipe throws (a user error), or a test failure when it does not throw.
  static std::string load_error(const fs::path& file,
                                const std::vector<std::string>& overrides = {}) {
    try {
      load_recipe(file, overrides);
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), ErrorKind::kUser) << error.message();
      return error.message();
    }
    ADD_FAILURE() << "load_recipe(" << file << ") did not throw";
    return {};
  }

  static std::string parse_args_error(const std::vector<std::string>& args) {
    try {
      parse_override_args(args);
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), ErrorKind::kUser) << error.message();
      return error.message();
    }
    ADD_FAILURE() << "parse_override_args did not throw";
    return {};
  }
};

// ---- unknown keys and sections ------------------------------------------------------------------

TEST_F(RecipeTest, UnknownKeySuggestsNearest) {
  write("x.toml",
        "[model]\n"
        "family = \"glm4_moe\"\n"
        "  dtpye = \"float32\"\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:3:3: unknown key 'model.dtpye' (did you mean 'model.dtype'?)");
}

TEST_F(RecipeTest, UnknownKeyFarFromAnyListsTheSectionsKeys) {
  write("x.toml", "[run]\nbanana = 1\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:2:1: unknown key 'run.banana'; valid keys in [run]: name, dir, seed");
}

TEST_F(RecipeTest, KeyUnderTheWrongSectionSuggestsItsSection) {
  write("x.toml", "[model]\nseed = 1\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:2:1: unknown key 'model.seed' (did you mean 'run.seed'?)");
}

TEST_F(RecipeTest, UnknownSectionSuggestsNearest) {
  write("x.toml", "[modle]\nfamily = \"glm4_moe\"\n");
  EXPECT_EQ(load_error("x.toml"), "x.toml:1:2: unknown section 'modle' (did you mean 'model'?)");
}

TEST_F(RecipeTest, UnknownSectionFarFromAnyListsSections) {
  write("x.toml", "[zebra]\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:1:2: unknown section 'zebra'; valid sections: run, model, tokenizer, data, "
            "train, optim, checkpoint, backend, plugins");
}

TEST_F(RecipeTest, KeyOutsideAnySectionSuggestsItsSection) {
  write("x.toml", "seed = 1\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:1:1: unknown key 'seed' (did you mean 'run.seed'? keys go under a [section])");
}

TEST_F(RecipeTest, FirstErrorInFileOrderIsReported) {
  // toml::table iterates alphabetically; users expect the first mistake on the page.
  write("x.toml", "[run]\nzzz = 1\naaa = 2\n");
  EXPECT_THAT(load_error("x.toml"), StartsWith("x.toml:2:1: unknown key 'run.zzz'"));
}

// ---- types and values ---------------------------------------------------------------------------

TEST_F(RecipeTest, WrongTypeNamesExpectedAndFound) {
  write("x.toml", "[model]\nfamily = \"glm4_moe\"\ndtype = 16\n");
  EXPECT_EQ(load_error("x.toml"), "x.toml:3:9: model.dtype: expected a string, found an integer");
}

TEST_F(RecipeTest, WrongArrayElementTypeNamesTheIndex) {
  write("x.toml", "[plugins]\ndirs = [\"a\", 3]\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:2:14: plugins.dirs[1]: expected a string, found an integer");
}

TEST_F(RecipeTest, SectionMustBeATable) {
  write("x.toml", "run = 3\n");
  EXPECT_EQ(load_error("x.toml"), "x.toml:1:7: run: expected a table ([run]), found an integer");
}

TEST_F(RecipeTest, BadEnumValueListsChoices) {
  write("x.toml",
        "[model]\n"
        "family = \"glm4_moe\"\n"
        "dtype = \"fp8\"\n"
        "[model.config]\n"
        "hidden_size = 64\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:3:9: model.dtype: expected one of float32, bfloat16; found 'fp8'");
}

TEST_F(RecipeTest, BadEnumValueSuggestsNearChoice) {
  write("x.toml",
        "[model]\n"
        "family = \"glm4_moe\"\n"
        "dtype = \"bfloat61\"\n"
        "[model.config]\n"
        "hidden_size = 64\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:3:9: model.dtype: expected one of float32, bfloat16; found 'bfloat61' (did you "
            "mean 'bfloat16'?)");
}

TEST_F(RecipeTest, TomlSyntaxErrorHasPosition) {
  write("x.toml", "[run]\nname = = 1\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:2:8: Error while parsing value: could not determine value type");
}

TEST_F(RecipeTest, MissingRecipeFileSaysSo) {
  EXPECT_THAT(load_error("nope.toml"),
              StartsWith("cannot open recipe 'nope.toml': no such file; check the path"));
}

TEST_F(RecipeTest, DefaultsFillEveryKey) {
  write("x.toml", kModel);
  const Recipe recipe = load_recipe("x.toml");
  EXPECT_EQ(recipe.run.name, "kiln");
  EXPECT_EQ(recipe.run.dir, fs::path("runs/kiln"));
  EXPECT_EQ(recipe.run.seed, 0);
  EXPECT_EQ(recipe.model.family, "glm4_moe");
  EXPECT_EQ(recipe.model.checkpoint, fs::path());
  EXPECT_EQ(recipe.model.config, nlohmann::json({{"hidden_size", 64}}));
  EXPECT_EQ(recipe.model.dtype, "float32");
  EXPECT_EQ(recipe.model.device, "cpu");
  EXPECT_EQ(recipe.backend.default_backend, "auto");
  EXPECT_TRUE(recipe.backend.ops.empty());
  EXPECT_FALSE(recipe.backend.strict);
  EXPECT_TRUE(recipe.plugins.dirs.empty());
  EXPECT_EQ(recipe.source, fs::path("x.toml"));
}

TEST_F(RecipeTest, RunDirDefaultsToRunsSlashName) {
  write("x.toml", std::string("[run]\nname = \"exp-1.a_b\"\n") + std::string(kModel));
  EXPECT_EQ(load_recipe("x.toml").run.dir, fs::path("runs/exp-1.a_b"));
  write("y.toml", std::string("[run]\ndir = \"elsewhere/out\"\n") + std::string(kModel));
  EXPECT_EQ(load_recipe("y.toml").run.dir, fs::path("elsewhere/out")); // kept as written
}

TEST_F(RecipeTest, RunNameMustNameADirectory) {
  write("x.toml", std::string("[run]\nname = \"my run\"\n") + std::string(kModel));
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:2:8: run.name: expected letters, digits, '.', '_' or '-' (it names the run "
            "directory); found 'my run'");
}

TEST_F(RecipeTest, DeviceIsCpuCudaOrCudaN) {
  write("ok.toml", std::string(kModel) + "[run]\n");
  EXPECT_EQ(load_recipe("ok.toml", std::vector<std::string>{"model.device=cuda:1"}).model.device,
            "cuda:1");
  write("x.toml",
        "[model]\n"
        "family = \"glm4_moe\"\n"
        "device = \"gpu\"\n"
        "[model.config]\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:3:10: model.device: expected cpu, cuda or cuda:N (N a GPU index); found 'gpu'");
  EXPECT_THAT(load_error("ok.toml", {"model.device=cuda:"}),
              StartsWith("override '--model.device': model.device: expected cpu, cuda or cuda:N"));
}

// ---- model: cross-field checks ------------------------------------------------------------------

TEST_F(RecipeTest, CheckpointAndConfigExclusive) {
  write("x.toml",
        "[model]\n"
        "family = \"glm4_moe\"\n"
        "checkpoint = \"hf/tiny\"\n"
        "[model.config]\n"
        "hidden_size = 64\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:3:14: model.checkpoint and [model.config] are mutually exclusive: a checkpoint "
            "brings its own config.json; remove one ([model.config] is at x.toml:4:1)");
}

TEST_F(RecipeTest, ModelNeedsFamilyOrCheckpoint) {
  write("x.toml", "[run]\nname = \"a\"\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml: [model] needs a family or a checkpoint: add family = \"glm4_moe\" (or "
            "glm_moe_dsa, nemotron_v3) with a [model.config] table to build from scratch, or "
            "checkpoint = \"path/to/hf_model\" to start from weights");
}

TEST_F(RecipeTest, FamilyWithoutConfigOrCheckpointHasNothingToBuild) {
  write("x.toml", "[model]\nfamily = \"glm4_moe\"\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:2:10: model.family 'glm4_moe' has nothing to build from: add a [model.config] "
            "table (an HF config.json's keys) to build from scratch, or model.checkpoint");
}

TEST_F(RecipeTest, CheckpointAloneIsEnoughAndKeptAsWritten) {
  write("x.toml", "[model]\ncheckpoint = \"hf/tiny\"\n");
  const Recipe recipe = load_recipe("x.toml");
  EXPECT_EQ(recipe.model.checkpoint, fs::path("hf/tiny"));
  EXPECT_TRUE(recipe.model.config.is_null());
}

// ---- backend ------------------------------------------------------------------------------------

TEST_F(RecipeTest, UnknownOpInBackendOps) {
  write("x.toml",
        std::string(kModel) + "[backend.ops]\nrope = \"my_backend\"\nrmsnorm = \"torch\"\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:7:1: backend.ops: unknown op 'rmsnorm' (did you mean 'rms_norm'?)");
}

TEST_F(RecipeTest, UnknownOpFarFromAnyListsOps) {
  write("x.toml", std::string(kModel) + "[backend.ops]\nflash = \"torch\"\n");
  EXPECT_THAT(
      load_error("x.toml"),
      StartsWith("x.toml:6:1: backend.ops: unknown op 'flash'; ops: rms_norm, gated_rms_norm, "));
}

TEST_F(RecipeTest, BackendNamesAreLeftToThePlugins) {
  write("x.toml", std::string(kModel) +
                      "[backend]\ndefault = \"someones_backend\"\nstrict = true\n"
                      "[backend.ops]\nattention = \"cuda\"\nrope = \"my_backend\"\n");
  const Recipe recipe = load_recipe("x.toml");
  EXPECT_EQ(recipe.backend.default_backend, "someones_backend");
  EXPECT_TRUE(recipe.backend.strict);
  EXPECT_EQ(recipe.backend.ops,
            (std::map<std::string, std::string>{{"attention", "cuda"}, {"rope", "my_backend"}}));
}

// ---- extends ------------------------------------------------------------------------------------

TEST_F(RecipeTest, ExtendsIsRelativeToFile) {
  write("family/base.toml", std::string("[run]\nseed = 7\n") + std::string(kModel));
  write("family/sub/child.toml", "extends = \"../base.toml\"\n[run]\nname = \"child\"\n");
  const Recipe recipe = load_recipe("family/sub/child.toml");
  EXPECT_EQ(recipe.run.name, "child");
  EXPECT_EQ(recipe.run.seed, 7);
  EXPECT_EQ(recipe.model.family, "glm4_moe");

  // The same chain from another current directory.
  fs::current_path(dir_ / "family" / "sub");
  EXPECT_EQ(load_recipe("child.toml").run.seed, 7);
}

TEST_F(RecipeTest, ExtendsMergesTablesAndReplacesArrays) {
  write("base.toml",
        "[model]\n"
        "family = \"glm4_moe\"\n"
        "[model.config]\n"
        "a = 1\n"
        "b = 2\n"
        "nested = { x = 1, y = 2 }\n"
        "[backend.ops]\n"
        "rms_norm = \"torch\"\n"
        "[plugins]\n"
        "dirs = [\"p1\", \"p2\"]\n");
  write("child.toml",
        "extends = \"base.toml\"\n"
        "[model.config]\n"
        "b = 3\n"
        "nested.y = 5\n"
        "[backend.ops]\n"
        "rope = \"cuda\"\n"
        "[plugins]\n"
        "dirs = [\"p3\"]\n");
  const Recipe recipe = load_recipe("child.toml");
  EXPECT_EQ(recipe.model.config,
            nlohmann::json::parse(R"({"a": 1, "b": 3, "nested": {"x": 1, "y": 5}})"));
  EXPECT_EQ(recipe.backend.ops,
            (std::map<std::string, std::string>{{"rms_norm", "torch"}, {"rope", "cuda"}}));
  EXPECT_EQ(recipe.plugins.dirs, std::vector<fs::path>{fs::current_path() / "p3"});
}

TEST_F(RecipeTest, ExtendsChainsApplyInOrder) {
  write("a.toml", std::string("[run]\nname = \"a\"\nseed = 1\n") + std::string(kModel));
  write("b.toml", "extends = \"a.toml\"\n[run]\nseed = 2\n[model]\ndtype = \"bfloat16\"\n");
  write("c.toml", "extends = \"b.toml\"\n[run]\nseed = 3\n");
  const Recipe recipe = load_recipe("c.toml");
  EXPECT_EQ(recipe.run.name, "a");
  EXPECT_EQ(recipe.run.seed, 3);
  EXPECT_EQ(recipe.model.dtype, "bfloat16");
}

TEST_F(RecipeTest, ExtendsCycleIsAnError) {
  write("a.toml", "extends = \"b.toml\"\n");
  write("b.toml", "extends = \"a.toml\"\n");
  EXPECT_EQ(
      load_error("a.toml"),
      "b.toml:1:11: extends: cycle a.toml -> b.toml -> a.toml; a recipe cannot extend itself, "
      "directly or through its bases");
  write("self.toml", "extends = \"./self.toml\"\n");
  EXPECT_EQ(
      load_error("self.toml"),
      "self.toml:1:11: extends: cycle self.toml -> ./self.toml; a recipe cannot extend itself, "
      "directly or through its bases");
}

TEST_F(RecipeTest, MissingBaseNamesResolvedPath) {
  write("x/child.toml", "extends = \"base.toml\"\n");
  EXPECT_EQ(load_error("x/child.toml"),
            "x/child.toml:1:11: extends: cannot open 'x/base.toml' (resolved from 'base.toml')");
}

TEST_F(RecipeTest, ExtendsMustBeAString) {
  write("x.toml", "extends = [\"a.toml\"]\n");
  EXPECT_EQ(load_error("x.toml"),
            "x.toml:1:11: extends: expected a string (the base recipe's file), found an array");
}

TEST_F(RecipeTest, ErrorInBaseNamesBaseFile) {
  write("x/base.toml", "[run]\nseeed = 1\n");
  write("x/child.toml", std::string("extends = \"base.toml\"\n") + std::string(kModel));
  EXPECT_EQ(load_error("x/child.toml"),
            "x/base.toml:2:1: unknown key 'run.seeed' (did you mean 'run.seed'?)");

  write("x/base.toml", "[run]\nseed = \"one\"\n");
  EXPECT_EQ(load_error("x/child.toml"),
            "x/base.toml:2:8: run.seed: expected an integer, found a string");

  write("x/base.toml", "[run\n");
  EXPECT_THAT(load_error("x/child.toml"), StartsWith("x/base.toml:1:"));
}

TEST_F(RecipeTest, PluginDirsAreRelativeToTheFileThatListsThem) {
  write("lib/base.toml", std::string("[plugins]\ndirs = [\"plugins\", \"/opt/kiln/plugins\"]\n") +
                             std::string(kModel));
  write("child.toml", "extends = \"lib/base.toml\"\n");
  const Recipe recipe = load_recipe("child.toml");
  EXPECT_EQ(recipe.plugins.dirs,
            (std::vector<fs::path>{fs::current_path() / "lib" / "plugins", "/opt/kiln/plugins"}));
}

// ---- overrides ----------------------------------------------------------------------------------

TEST_F(RecipeTest, OverrideIsTypedBySchema) {
  write("x.toml", kModel);
  const Recipe recipe =
      load_recipe("x.toml", std::vector<std::string>{"run.seed=42", "model.family=glm4_moe",
                                                     "backend.strict=true", "model.dtype=bfloat16",
                                                     "run.dir=out/x", "plugins.dirs=a, b"});
  EXPECT_EQ(recipe.run.seed, 42);
  EXPECT_EQ(recipe.model.family, "glm4_moe");
  EXPECT_TRUE(recipe.backend.strict);
  EXPECT_EQ(recipe.model.dtype, "bfloat16");
  EXPECT_EQ(recipe.run.dir, fs::path("out/x"));
  EXPECT_EQ(recipe.plugins.dirs,
            (std::vector<fs::path>{fs::current_path() / "a", fs::current_path() / "b"}));

  // TOML syntax works too, for strings with spaces or arrays.
  const Recipe quoted = load_recipe(
      "x.toml", std::vector<std::string>{R"(plugins.dirs=["c"])", R"(run.dir="my dir")"});
  EXPECT_EQ(quoted.plugins.dirs, std::vector<fs::path>{fs::current_path() / "c"});
  EXPECT_EQ(quoted.run.dir, fs::path("my dir"));

  EXPECT_EQ(load_error("x.toml", {"run.seed=abc"}),
            "override '--run.seed': run.seed: expected an integer, found 'abc'");
  EXPECT_EQ(load_error("x.toml", {"run.seed=1.5"}),
            "override '--run.seed': run.seed: expected an integer, found a float");
  EXPECT_EQ(load_error("x.toml", {"backend.strict=yes"}),
            "override '--backend.strict': backend.strict: expected a boolean (true or false), "
            "found 'yes'");
  EXPECT_EQ(
      load_error("x.toml", {"model.dtype=fp8"}),
      "override '--model.dtype': model.dtype: expected one of float32, bfloat16; found 'fp8'");
}

TEST_F(RecipeTest, OverridePrecedence) {
  write("base.toml", std::string("[run]\nname = \"base\"\nseed = 1\n") + std::string(kModel));
  write("child.toml", "extends = \"base.toml\"\n[run]\nseed = 2\n");
  EXPECT_EQ(load_recipe("child.toml").run.seed, 2);
  EXPECT_EQ(load_recipe("child.toml").run.name, "base");
  EXPECT_EQ(load_recipe("child.toml", std::vector<std::string>{"run.seed=3"}).run.seed, 3);
  EXPECT_EQ(
      load_recipe("child.toml", std::vector<std::string>{"run.seed=3", "run.seed=4"}).run.seed, 4);
}

TEST_F(RecipeTest, OverrideUnknownKey) {
  write("x.toml", kModel);
  EXPECT_EQ(load_error("x.toml", {"run.sed=1"}),
            "override '--run.sed': unknown key 'run.sed' (did you mean 'run.seed'?)");
  EXPECT_EQ(load_error("x.toml", {"modle.dtype=float32"}),
            "override '--modle.dtype': unknown key 'modle.dtype' (did you mean 'model.dtype'?)");
  EXPECT_EQ(
      load_error("x.toml", {"run.banana=1"}),
      "override '--run.banana': unknown key 'run.banana'; valid keys in [run]: name, dir, seed");
  EXPECT_EQ(load_error("x.toml", {"run.name.x=1"}),
            "override '--run.name.x': run.name is a string, not a table; write --run.name=VALUE");
}

TEST_F(RecipeTest, OverrideReachesIntoTables) {
  write("x.toml", std::string(kModel) + "rope_scaling = { type = \"yarn\", factor = 4.0 }\n");
  const Recipe recipe = load_recipe(
      "x.toml", std::vector<std::string>{"model.config.hidden_size=128", "model.config.name=tiny",
                                         "model.config.rope_scaling.factor=2.0",
                                         "backend.ops.rms_norm=torch"});
  const nlohmann::json expected = {{"hidden_size", 128},
                                   {"name", "tiny"},
                                   {"rope_scaling", {{"type", "yarn"}, {"factor", 2.0}}}};
  EXPECT_EQ(recipe.model.config, expected);
  EXPECT_EQ(recipe.backend.ops, (std::map<std::string, std::string>{{"rms_norm", "torch"}}));

  // A whole table is replaced, not merged: the override says what it is.
  const Recipe replaced =
      load_recipe("x.toml", std::vector<std::string>{"model.config={ hidden_size = 32 }"});
  EXPECT_EQ(replaced.model.config, nlohmann::json({{"hidden_size", 32}}));

  EXPECT_EQ(load_error("x.toml", {"backend.ops.rmsnorm=torch"}),
            "override '--backend.ops.rmsnorm': backend.ops: unknown op 'rmsnorm' (did you mean "
            "'rms_norm'?)");
}

TEST_F(RecipeTest, ParseOverrideArgsAcceptsEveryForm) {
  const std::vector<std::string> args = {"--model.family",
                                         "glm4_moe",
                                         "--run.seed=3",
                                         "--set",
                                         "backend.strict=true",
                                         "run.name=x",
                                         "--set=model.dtype=bfloat16",
                                         "--model.config.a",
                                         "-1"};
  EXPECT_EQ(parse_override_args(args),
            (std::vector<std::string>{"model.family=glm4_moe", "run.seed=3", "backend.strict=true",
                                      "run.name=x", "model.dtype=bfloat16", "model.config.a=-1"}));
}

TEST_F(RecipeTest, ParseOverrideArgsRejectsMalformed) {
  EXPECT_EQ(parse_args_error({"--set"}),
            "override '--set': expected section.key=value after it, found nothing");
  EXPECT_EQ(parse_args_error({"--model.family"}),
            "override '--model.family': missing a value; write --model.family VALUE or "
            "--model.family=VALUE");
  EXPECT_EQ(parse_args_error({"--model.family", "--run.seed=1"}),
            "override '--model.family': missing a value; write --model.family VALUE or "
            "--model.family=VALUE");
  EXPECT_EQ(parse_args_error({"--model=x"}),
            "override '--model=x': expected a dotted key like model.dtype (letters, digits, '_', "
            "'-'), found 'model'");
  EXPECT_EQ(
      parse_args_error({"--set", "run.seed"}),
      "override '--set run.seed': expected section.key=value; overrides are written --section.key "
      "VALUE, --section.key=VALUE, --set section.key=VALUE or section.key=VALUE");
  EXPECT_EQ(parse_args_error({"model"}),
            "override 'model': expected --section.key VALUE, --section.key=VALUE, --set "
            "section.key=VALUE or section.key=VALUE");
}

// ---- to_toml ------------------------------------------------------------------------------------

TEST_F(RecipeTest, ToTomlRoundTrips) {
  write("x.toml",
        "[run]\n"
        "name = \"rt\"\n"
        "dir = \"out/rt\"\n"
        "seed = 123\n"
        "[model]\n"
        "family = \"glm4_moe\"\n"
        "dtype = \"bfloat16\"\n"
        "device = \"cuda:1\"\n"
        "[model.config]\n"
        "hidden_size = 64\n"
        "rms_norm_eps = 1e-5\n"
        "tenth = 0.1\n"
        "big = 1e300\n"
        "whole = 2.0\n"
        "negative = -7\n"
        "text = \"quote \\\" backslash \\\\ newline \\n tab \\t unicode \\u00e9\"\n"
        "layer_types = [\"full\", \"sparse\"]\n"
        "mixed = [1, 2.5, true, { a = 1 }, [\"x\"]]\n"
        "\"dotted.key\" = 1\n"
        "empty = {}\n"
        "[model.config.rope_scaling]\n"
        "factor = 4.0\n"
        "type = \"yarn\"\n"
        "[backend]\n"
        "default = \"torch\"\n"
        "strict = true\n"
        "[backend.ops]\n"
        "rms_norm = \"cuda\"\n"
        "[plugins]\n"
        "dirs = [\"plugins\"]\n");
  const Recipe original = load_recipe("x.toml");
  const std::string text = to_toml(original);

  // Saved elsewhere (as a run directory would), it must mean the same.
  write("elsewhere/deep/resolved.toml", text);
  Recipe reloaded = load_recipe("elsewhere/deep/resolved.toml");
  reloaded.source = original.source;
  EXPECT_EQ(to_toml(reloaded), text);
  EXPECT_TRUE(reloaded == original) << text;
  EXPECT_THAT(text, HasSubstr("rms_norm_eps = 1e-05\n"));
  EXPECT_THAT(text, HasSubstr("[model.config.rope_scaling]\n"));
}

TEST_F(RecipeTest, ToTomlListsEveryKeyWithDefaults) {
  write("x.toml", "[model]\ncheckpoint = \"hf/tiny\"\n");
  const Recipe recipe = load_recipe("x.toml");
  const std::string text = to_toml(recipe);
  for (const char* line : {"[run]\n", "name = \"kiln\"\n", "dir = \"runs/kiln\"\n", "seed = 0\n",
                           "[model]\n", "family = \"\"\n", "checkpoint = \"hf/tiny\"\n",
                           "dtype = \"float32\"\n", "device = \"cpu\"\n",
                           "# [model.config] is not set.\n", "[backend]\n", "default = \"auto\"\n",
                           "strict = false\n", "[backend.ops]\n", "[plugins]\n", "dirs = []\n"}) {
    EXPECT_THAT(text, HasSubstr(line));
  }
  // Sections in schema order.
  EXPECT_LT(text.find("[run]"), text.find("[model]"));
  EXPECT_LT(text.find("[model]"), text.find("[backend]"));
  EXPECT_LT(text.find("[backend]"), text.find("[plugins]"));

  write("y.toml", text);
  Recipe reloaded = load_recipe("y.toml");
  reloaded.source = recipe.source;
  EXPECT_TRUE(reloaded == recipe) << text;
}

// ---- validate on recipes built in code ----------------------------------------------------------

TEST_F(RecipeTest, ValidateChecksRecipesBuiltInCode) {
  Recipe recipe;
  recipe.model.family = "glm4_moe";
  recipe.model.config = {{"hidden_size", 64}};
  validate(recipe);
  EXPECT_EQ(recipe.run.dir, fs::path("runs/kiln"));

  recipe.model.dtype = "fp16";
  try {
    validate(recipe);
    ADD_FAILURE() << "validate accepted dtype fp16";
  } catch (const Error& error) {
    EXPECT_EQ(error.message(),
              "recipe: model.dtype: expected one of float32, bfloat16; found 'fp16'");
  }
}

// ---- the shipped recipes ------------------------------------------------------------------------

TEST_F(RecipeTest, QuickstartParses) {
  const Recipe recipe = load_recipe(fs::path(KILN_SOURCE_DIR) / "recipes" / "quickstart.toml");
  EXPECT_EQ(recipe.run.name, "quickstart");
  EXPECT_EQ(recipe.run.dir, fs::path("runs/quickstart"));
  EXPECT_EQ(recipe.model.family, "glm4_moe");
  EXPECT_EQ(recipe.model.dtype, "float32");
  EXPECT_EQ(recipe.model.device, "cpu");
  EXPECT_EQ(recipe.backend.default_backend, "auto");
  const nlohmann::json& config = recipe.model.config;
  EXPECT_EQ(config.at("hidden_size"), 64);
  EXPECT_EQ(config.at("num_hidden_layers"), 2);
  EXPECT_EQ(config.at("num_attention_heads"), 4);
  EXPECT_EQ(config.at("num_key_value_heads"), 2);
  EXPECT_EQ(config.at("head_dim"), 16);
  EXPECT_EQ(config.at("n_routed_experts"), 8);
  EXPECT_EQ(config.at("num_experts_per_tok"), 2);
  EXPECT_EQ(config.at("first_k_dense_replace"), 1);
  EXPECT_EQ(config.at("vocab_size"), 256);
  EXPECT_EQ(config.at("partial_rotary_factor"), 0.5);
  EXPECT_EQ(config.at("rms_norm_eps"), 1e-5);
  EXPECT_EQ(config.at("use_qk_norm"), true);
  EXPECT_EQ(config.at("tie_word_embeddings"), false);

  write("resolved.toml", to_toml(recipe));
  Recipe reloaded = load_recipe("resolved.toml");
  reloaded.source = recipe.source;
  EXPECT_TRUE(reloaded == recipe);
}

TEST_F(RecipeTest, EveryShippedRecipeLoads) {
  // Files named _*.toml are fragments meant only to be extended (recipes/README.md).
  int loaded = 0;
  for (const auto& entry :
       fs::recursive_directory_iterator(fs::path(KILN_SOURCE_DIR) / "recipes")) {
    const fs::path& file = entry.path();
    if (file.extension() != ".toml" || file.filename().string().starts_with("_")) continue;
    try {
      load_recipe(file);
      ++loaded;
    } catch (const Error& error) {
      ADD_FAILURE() << error.message();
    }
  }
  EXPECT_GE(loaded, 1);
}

} // namespace
} // namespace kiln::recipe
