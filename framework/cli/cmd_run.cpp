// `kiln run [RECIPE] [overrides]`: trains (see framework/train). Without a recipe it runs the
// embedded quickstart.
#include "common.h"
#include "embedded.h"

#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/error.h"
#include "recipe/recipe.h"
#include "train/trainer.h"

#include <fmt/format.h>

#include <iostream>

namespace kiln::cli {

void usage_run() {
  std::cout
      << "usage: kiln run [RECIPE] [--section.key VALUE]... [--log-format auto|bar|text|jsonl]\n"
         "                [--plugin FILE]... [--verbose]\n\n"
         "Trains as RECIPE says: the model ([model]), tokenizer, data, steps, optimizer and\n"
         "checkpoints, into run.dir (default runs/<run.name>): recipe.toml, metrics.jsonl,\n"
         "backends.json, checkpoints/step-N/ (HF layout, loadable by transformers) and LATEST.\n"
         "With checkpoint.resume = \"auto\" (the default) a rerun continues from LATEST.\n"
         "Without RECIPE: the embedded quickstart (a tiny glm4_moe on Shakespeare, CPU).\n\n"
         "--log-format: bar (a live line; the default on a terminal), text (lines; the\n"
         "default otherwise), jsonl (metrics as JSON lines on stdout).\n"
         "Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and stops; rerun to continue.\n"
         "Exit codes: 0 done, 2 bad input, 3 loss or gradient not finite (stopped before the\n"
         "update; the last good checkpoint stays LATEST), 128+N stopped by signal N.\n\n"
      << plugin_options();
}

int cmd_run(const std::vector<std::string>& args) {
  std::vector<std::string> own;
  std::vector<std::string> overrides;
  std::string file;
  std::string log_format = "auto";
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--verbose" || a == "-v") {
      own.push_back(a);
    } else if (a == "--plugin" || a.starts_with("--plugin=")) {
      own.push_back(a);
      if (a == "--plugin" && i + 1 < args.size()) own.push_back(args[++i]);
    } else if (a == "--log-format") {
      KILN_CHECK_USER(i + 1 < args.size(), "--log-format: expected auto, bar, text or jsonl");
      log_format = args[++i];
    } else if (a.starts_with("--log-format=")) {
      log_format = a.substr(13);
    } else if (i == 0 && !a.starts_with("-") && a.find('=') == std::string::npos) {
      file = a;
    } else {
      overrides.push_back(a);
    }
  }
  const auto format = train::parse_log_format(log_format);
  const auto vm = parse(own, plugin_options(), {});
  if (file.empty()) file = write_embedded_quickstart().string();

  recipe::KeyOrigins origins;
  const recipe::Recipe r =
      recipe::load_recipe(file, recipe::parse_override_args(overrides), &origins);
  recipe::check_trainable(r, origins);
  load_plugins(vm, r.plugins.dirs);
  sdk::Dispatcher::global().configure(train::dispatch_config(r.backend));

  const auto result = train::run(r, origins, {.log_format = format});
  if (result.exit_code == 0 && !result.losses.empty()) {
    std::cerr << fmt::format("done: steps {}..{}, loss {:.4f} -> {:.4f}; run folder {}\n",
                             result.first_step + 1, result.last_step, result.losses.front(),
                             result.losses.back(), result.run_dir.string());
  }
  return result.exit_code;
}

} // namespace kiln::cli
