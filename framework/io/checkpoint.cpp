// HF checkpoint folders. Reading trusts nothing in the index (shard names stay inside the folder,
// every shard must exist, every listed tensor must be in its shard); saving goes through a
// sibling temporary folder so a crash or an error never leaves a half-written checkpoint.
#include "io/checkpoint.h"

#include "core/text.h"
#include "io/detail.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/log.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <stdio.h> // renameat2, RENAME_EXCHANGE (glibc)
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace kiln::io {
namespace {

namespace fs = std::filesystem;
using detail::errno_text;
using nlohmann::json;

/// "a, b, c" for the first entries of a folder, for "what the folder has" messages.
std::string folder_listing(const fs::path& dir) {
  constexpr size_t kShown = 10;
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    names.push_back(entry.path().filename().string() + (entry.is_directory() ? "/" : ""));
  }
  if (names.empty()) return "nothing";
  std::sort(names.begin(), names.end());
  const size_t more = names.size() > kShown ? names.size() - kShown : 0;
  names.resize(std::min(names.size(), kShown));
  std::string out = core::join(names);
  if (more > 0) out += fmt::format(" and {} more", more);
  return out;
}

/// FILE parsed as JSON: errors name the file with line:col; duplicate keys are errors too (the
/// value nlohmann would keep is arbitrary to the reader).
json read_json_file(const fs::path& file) {
  return detail::parse_json_file(file, detail::read_required_file(file));
}

/// A plain file name: no folder part, nothing that leaves the checkpoint folder.
bool is_plain_file_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

/// HF's shard name: model-00001-of-00003.safetensors.
std::string shard_file_name(size_t index, size_t count) {
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", index + 1, count);
}

bool looks_like_checkpoint(const fs::path& dir) {
  std::error_code error;
  for (const std::string_view name : {kConfigFileName, kSingleFileName, kIndexFileName}) {
    if (fs::exists(dir / name, error)) return true;
  }
  return false;
}

/// Removes a folder this code created; failure only warns (it is a leftover, not a lost save).
void remove_folder(const fs::path& folder) {
  std::error_code error;
  fs::remove_all(folder, error);
  if (error)
    log_warn("could not remove '{}': {}; remove it by hand", folder.string(), error.message());
}

/// A new empty folder beside TARGET named `<target><suffix>XXXXXX`.
fs::path make_sibling_folder(const fs::path& target, std::string_view suffix) {
  std::string pattern = target.string() + std::string(suffix) + "XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    const int error = errno;
    internal_error("{}: cannot create a temporary folder beside it: {}", target.string(),
                   errno_text(error));
  }
  return pattern;
}

/// Puts the complete folder FRESH at TARGET, which exists: swapped in one step where the
/// filesystem can (renameat2 RENAME_EXCHANGE), else by renaming the old one aside first. Either
/// way TARGET is never a partial checkpoint, and on failure it is the old one.
void replace_folder(const fs::path& fresh, const fs::path& target) {
  if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
    remove_folder(fresh); // now the old checkpoint
    return;
  }
  if (const int error = errno; error != EINVAL && error != ENOSYS && error != EOPNOTSUPP) {
    internal_error("{}: cannot swap in the new checkpoint: {}", target.string(), errno_text(error));
  }
  const fs::path backup = make_sibling_folder(target, ".old-");
  if (::rename(target.c_str(), backup.c_str()) != 0) {
    const int error = errno;
    remove_folder(backup);
    internal_error("{}: cannot move the old checkpoint aside: {}", target.string(),
                   errno_text(error));
  }
  if (::rename(fresh.c_str(), target.c_str()) != 0) {
    const int error = errno;
    if (::rename(backup.c_str(), target.c_str()) != 0) {
      internal_error("{}: cannot move the new checkpoint in ({}), and the old one is now at {}",
                     target.string(), errno_text(error), backup.string());
    }
    internal_error("{}: cannot move the new checkpoint in: {}", target.string(), errno_text(error));
  }
  remove_folder(backup);
}

} // namespace

// ---- reading ------------------------------------------------------------------------------------

json read_config(const fs::path& dir) {
  const fs::path file = dir / kConfigFileName;
  std::error_code error;
  if (!fs::is_regular_file(file, error)) {
    if (!fs::is_directory(dir, error)) {
      user_error("{}: no such folder; expected an HF checkpoint folder with {}", dir.string(),
                 kConfigFileName);
    }
    user_error("{}: no {} (the folder has: {}); an HF checkpoint keeps it beside the weights",
               dir.string(), kConfigFileName, folder_listing(dir));
  }
  json config = read_json_file(file);
  if (!config.is_object()) {
    user_error("{}: expected a JSON object, found {}", file.string(), detail::brief(config));
  }
  return config;
}

CheckpointReader::CheckpointReader(const fs::path& path) {
  std::error_code error;
  const auto status = fs::status(path, error);
  if (!fs::exists(status)) {
    user_error(
        "{}: no such file or folder; expected an HF checkpoint folder or a .safetensors file",
        path.string());
  }
  fs::path index_file;
  fs::path single_file;
  if (fs::is_directory(status)) {
    if (fs::is_regular_file(path / kIndexFileName, error)) {
      index_file = path / kIndexFileName;
    } else if (fs::is_regular_file(path / kSingleFileName, error)) {
      single_file = path / kSingleFileName;
    } else {
      user_error("{}: no {} or {} (the folder has: {}); expected an HF checkpoint folder",
                 path.string(), kIndexFileName, kSingleFileName, folder_listing(path));
    }
  } else if (path.extension() == ".json") {
    index_file = path;
  } else {
    single_file = path;
  }

  if (!single_file.empty()) {
    source_ = single_file;
    auto file = std::make_shared<const SafetensorsFile>(single_file);
    Shard shard{.file = single_file, .names = {}, .opened = file};
    for (const auto& info : file->tensors()) {
      shard.names.push_back(info.name);
      shard_of_.emplace(info.name, 0);
    }
    shards_.push_back(std::move(shard));
    return;
  }

  source_ = index_file;
  indexed_ = true;
  const std::string f = index_file.string();
  const json index = read_json_file(index_file);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    user_error(
        "{}: no \"weight_map\" object; expected HF's index {{\"metadata\": {{...}}, "
        "\"weight_map\": {{\"tensor name\": \"shard file\"}}}}",
        f);
  }
  std::map<std::string, std::vector<std::string>> names_by_file; // sorted: shard order
  for (const auto& [name, value] : index["weight_map"].items()) {
    if (!value.is_string()) {
      user_error("{}: weight_map '{}' is {}, expected a shard file name", f, name,
                 detail::brief(value));
    }
    const auto& shard = value.get_ref<const std::string&>();
    if (!is_plain_file_name(shard)) {
      user_error("{}: weight_map '{}' names '{}', expected a file name in the same folder", f, name,
                 shard);
    }
    names_by_file[shard].push_back(name);
  }
  const fs::path dir = index_file.parent_path();
  for (auto& [shard, names] : names_by_file) {
    const fs::path file = dir / shard;
    if (!fs::is_regular_file(file, error)) {
      user_error("{}: shard '{}' (holding '{}'{}) is missing from {}; the checkpoint is incomplete",
                 f, shard, names.front(),
                 names.size() > 1 ? fmt::format(" and {} more", names.size() - 1) : "",
                 dir.empty() ? "." : dir.string());
    }
    for (const auto& name : names) shard_of_.emplace(name, shards_.size());
    shards_.push_back({.file = file, .names = std::move(names), .opened = nullptr});
  }
}

CheckpointReader::~CheckpointReader() = default;

const SafetensorsFile& CheckpointReader::open_shard(size_t index) const {
  std::lock_guard lock(mutex_);
  const Shard& shard = shards_[index];
  if (shard.opened) return *shard.opened;
  auto file = std::make_shared<const SafetensorsFile>(shard.file);
  for (const auto& name : shard.names) {
    if (!file->contains(name)) {
      user_error(
          "{}: weight_map puts '{}' in {}, but that shard has no such tensor; the index does not "
          "match its shards (re-download or re-save the checkpoint)",
          source_.string(), name, shard.file.filename().string());
    }
  }
  shard.opened = std::move(file);
  return *shard.opened;
}

std::vector<sdk::TensorInfo> CheckpointReader::list() const {
  std::vector<sdk::TensorInfo> out;
  out.reserve(shard_of_.size());
  for (size_t i = 0; i < shards_.size(); ++i) {
    // An index may leave tensors of a shard out; only the listed ones are the checkpoint's.
    for (const auto& info : open_shard(i).tensors()) {
      const auto found = shard_of_.find(info.name);
      if (found != shard_of_.end() && found->second == i) out.push_back(info);
    }
  }
  return out;
}

bool CheckpointReader::contains(std::string_view name) const {
  return shard_of_.contains(name);
}

at::Tensor CheckpointReader::load(std::string_view name) const {
  const auto found = shard_of_.find(name);
  if (found == shard_of_.end()) {
    std::vector<std::string> names;
    names.reserve(shard_of_.size());
    for (const auto& [known, shard] : shard_of_) names.push_back(known);
    user_error("{}: no tensor '{}'{}; the checkpoint has {} tensors", source_.string(), name,
               core::did_you_mean(name, names), names.size());
  }
  return open_shard(found->second).load(name);
}

std::string CheckpointReader::describe() const {
  return source_.string();
}

std::vector<fs::path> CheckpointReader::files() const {
  std::vector<fs::path> out;
  for (const auto& shard : shards_) out.push_back(shard.file);
  return out;
}

// ---- saving -------------------------------------------------------------------------------------

void save_checkpoint(const fs::path& dir, const json& config, NamedTensors tensors,
                     const SaveOptions& options) {
  // "ckpt/" names the folder "ckpt".
  const fs::path target = dir.has_filename() ? dir : dir.parent_path();
  const std::string name = target.filename().string();
  if (name.empty() || name == "." || name == "..") {
    user_error("cannot save a checkpoint as '{}': name a new folder, e.g. 'checkpoints/step-100'",
               dir.string());
  }
  const std::string t = target.string();

  // Everything checkable is checked before anything is written.
  detail::check_writable(target, tensors);
  std::string config_text;
  if (!config.is_null()) {
    if (!config.is_object()) {
      user_error("{}: the config is {}, expected a JSON object for {}", t, detail::brief(config),
                 kConfigFileName);
    }
    try {
      config_text = config.dump(2) + "\n";
    } catch (const json::type_error& error) {
      user_error("{}: the config cannot be written as JSON: {}", t, error.what());
    }
  }
  std::error_code error;
  const auto status = fs::symlink_status(target, error);
  const bool replacing = fs::exists(status);
  if (replacing) {
    if (fs::is_symlink(status)) {
      user_error("{}: is a symbolic link; save to the folder it points to", t);
    }
    if (!fs::is_directory(status)) {
      user_error("{}: exists and is not a folder; refusing to replace it with a checkpoint", t);
    }
    if (!fs::is_empty(target, error) && !looks_like_checkpoint(target)) {
      user_error(
          "{}: exists and holds no checkpoint (no {}, {} or {}); refusing to replace it: choose "
          "another folder or remove it",
          t, kConfigFileName, kSingleFileName, kIndexFileName);
    }
  }

  // Shards in order: a shard closes when the next tensor would take it past the limit.
  std::vector<std::pair<size_t, size_t>> shards; // [begin, end) into TENSORS
  uint64_t total_bytes = 0;
  size_t start = 0;
  uint64_t shard_bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t bytes = detail::stored_bytes(tensors[i].second);
    if (options.max_shard_bytes > 0 && i > start && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back(start, i);
      start = i;
      shard_bytes = 0;
    }
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  shards.emplace_back(start, tensors.size());

  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  fs::create_directories(parent, error);
  if (error) internal_error("{}: cannot create the folder: {}", parent.string(), error.message());
  const fs::path fresh = make_sibling_folder(target, ".tmp-");
  try {
    const SafetensorsMetadata metadata = {{"format", "pt"}};
    if (shards.size() == 1) {
      write_safetensors(fresh / kSingleFileName, tensors, metadata);
    } else {
      json weight_map = json::object();
      for (size_t s = 0; s < shards.size(); ++s) {
        const auto [begin, end] = shards[s];
        const std::string file = shard_file_name(s, shards.size());
        write_safetensors(fresh / file, tensors.subspan(begin, end - begin), metadata);
        for (size_t i = begin; i < end; ++i) weight_map[tensors[i].first] = file;
      }
      const json index = {{"metadata", {{"total_size", total_bytes}}},
                          {"weight_map", std::move(weight_map)}};
      detail::write_text_file(fresh / kIndexFileName, index.dump(2) + "\n");
    }
    if (!config_text.empty()) detail::write_text_file(fresh / kConfigFileName, config_text);
    detail::sync_folder(fresh);

    if (replacing) {
      replace_folder(fresh, target);
    } else if (::rename(fresh.c_str(), target.c_str()) != 0) {
      const int rename_error = errno;
      internal_error("{}: cannot move the new checkpoint in from {}: {}", t, fresh.string(),
                     errno_text(rename_error));
    }
  } catch (const Error& failure) {
    if (fs::exists(fresh, error)) remove_folder(fresh);
    throw failure.with_context(fmt::format("saving checkpoint '{}'", t));
  } catch (...) {
    if (fs::exists(fresh, error)) remove_folder(fresh);
    throw;
  }
  detail::sync_folder(parent);
}

} // namespace kiln::io
