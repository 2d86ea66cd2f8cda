#include "train/run_state.h"

#include "io/checkpoint.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "kiln/sdk/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <vector>

namespace kiln::train {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kLatest = "LATEST";
constexpr std::string_view kPartial = ".partial";

// N of a folder named step-N, or nullopt.
std::optional<int64_t> step_of(const fs::path& folder) {
  const std::string name = folder.filename().string();
  if (!name.starts_with("step-")) return std::nullopt;
  int64_t step = 0;
  const char* begin = name.data() + 5;
  const char* end = name.data() + name.size();
  const auto [ptr, ec] = std::from_chars(begin, end, step);
  if (ec != std::errc() || ptr != end || begin == end) return std::nullopt;
  return step;
}

void remove_quietly(const fs::path& path) {
  std::error_code error;
  fs::remove_all(path, error);
}

} // namespace

fs::path save_run_checkpoint(const fs::path& run_dir, int64_t step, const ModelFiles& model,
                             const SavedState& state, int64_t keep, uint64_t max_shard_bytes) {
  const fs::path folder = run_dir / "checkpoints";
  fs::create_directories(folder);
  const std::string name = fmt::format("step-{}", step);
  const fs::path final_dir = folder / name;
  const fs::path partial = folder / (name + std::string(kPartial));

  // Leftovers of crashed saves are never complete: clear them.
  for (const auto& entry : fs::directory_iterator(folder)) {
    if (entry.path().filename().string().ends_with(kPartial)) remove_quietly(entry.path());
  }

  io::save_checkpoint(partial, model.config, model.tensors, {.max_shard_bytes = max_shard_bytes});
  if (model.write_extra) model.write_extra(partial);
  nlohmann::json json = state.json;
  json["step"] = step;
  io::write_text_file(partial / kTrainerStateJson, json.dump(2) + "\n");
  const nn::NamedTensors tensors(state.tensors.begin(), state.tensors.end());
  io::write_safetensors(partial / kTrainerStateTensors, tensors);
  io::sync_folder(partial);

  if (fs::exists(final_dir)) {
    // Same step saved again (a rerun): swap, so a complete step-N exists at every moment.
    const fs::path old = folder / (name + ".old");
    remove_quietly(old);
    fs::rename(final_dir, old);
    fs::rename(partial, final_dir);
    remove_quietly(old);
  } else {
    fs::rename(partial, final_dir);
  }
  io::sync_folder(folder);
  io::replace_file(run_dir / kLatest, fmt::format("checkpoints/{}\n", name));

  if (keep > 0) {
    std::vector<std::pair<int64_t, fs::path>> saved;
    for (const auto& entry : fs::directory_iterator(folder)) {
      if (const auto n = step_of(entry.path()); n && entry.is_directory()) {
        saved.emplace_back(*n, entry.path());
      }
    }
    std::sort(saved.begin(), saved.end());
    for (size_t i = 0; i + keep < saved.size(); ++i) {
      if (saved[i].second != final_dir) remove_quietly(saved[i].second);
    }
  }
  return final_dir;
}

std::optional<fs::path> latest_checkpoint(const fs::path& run_dir) {
  const auto text = io::read_file(run_dir / kLatest);
  if (!text) return std::nullopt;
  std::string target = *text;
  while (!target.empty() &&
         (target.back() == '\n' || target.back() == '\r' || target.back() == ' ')) {
    target.pop_back();
  }
  const fs::path checkpoint = run_dir / target;
  KILN_CHECK_USER(!target.empty() && fs::exists(checkpoint / kTrainerStateJson),
                  "{}: names '{}', which is not a complete checkpoint; point it at an existing "
                  "checkpoints/step-N folder or set checkpoint.resume = \"none\"",
                  (run_dir / kLatest).string(), target);
  return checkpoint;
}

SavedState load_saved_state(const fs::path& checkpoint) {
  const fs::path json_file = checkpoint / kTrainerStateJson;
  const auto text = io::read_file(json_file);
  KILN_CHECK_USER(text.has_value(),
                  "{}: not a kiln training checkpoint (no {}); to start from its weights set "
                  "model.checkpoint instead of checkpoint.resume",
                  checkpoint.string(), kTrainerStateJson);
  SavedState state;
  try {
    state.json = nlohmann::json::parse(*text);
    state.step = state.json.at("step").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    user_error("{}: unreadable trainer state: {}", json_file.string(), e.what());
  }
  const io::SafetensorsFile tensors(checkpoint / kTrainerStateTensors);
  for (const auto& info : tensors.tensors()) state.tensors[info.name] = tensors.load(info.name);
  return state;
}

} // namespace kiln::train
