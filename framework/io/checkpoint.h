// HF checkpoint folders: `config.json` plus `model.safetensors`, or shards listed by
// `model.safetensors.index.json`. Reading streams tensor by tensor; saving is atomic.
#pragma once

#include "io/safetensors.h"
#include "kiln/sdk/weights.h"

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::io {

inline constexpr std::string_view kConfigFileName = "config.json";
inline constexpr std::string_view kSingleFileName = "model.safetensors";
inline constexpr std::string_view kIndexFileName = "model.safetensors.index.json";

/// DIR/config.json, parsed. Throws kiln::Error (user) when it is missing, not valid JSON (with
/// file:line:col) or not a JSON object.
nlohmann::json read_config(const std::filesystem::path& dir);

/// The tensors of an HF checkpoint: a folder with `model.safetensors.index.json` (sharded; its
/// `weight_map` is the list of tensors) or `model.safetensors`, or one `.safetensors` file.
/// The constructor reads the index and checks that every shard exists; a shard is mapped (and its
/// header validated against the index) the first time one of its tensors is needed, so opening
/// is cheap and loading streams. Thread-safe. Not copyable or movable (it owns a mutex): hold it
/// by value where it is made, or in a unique_ptr.
class CheckpointReader final : public sdk::WeightSource {
 public:
  /// Throws kiln::Error (user) when PATH holds no checkpoint (the message lists what it has), the
  /// index is bad, or a shard is missing.
  explicit CheckpointReader(const std::filesystem::path& path);
  ~CheckpointReader() override;
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  /// Every tensor: shards in file-name order, each in its file order. Maps every shard.
  std::vector<sdk::TensorInfo> list() const override;
  bool contains(std::string_view name) const override;
  /// See sdk::WeightSource::load; maps the tensor's shard on first use.
  at::Tensor load(std::string_view name) const override;
  /// The index file, or the single safetensors file.
  std::string describe() const override;

  /// The safetensors files, in file-name order.
  std::vector<std::filesystem::path> files() const;

 private:
  struct Shard {
    std::filesystem::path file;
    std::vector<std::string> names; // the tensors the index puts here (all of them: single file)
    mutable std::shared_ptr<const SafetensorsFile> opened;
  };

  const SafetensorsFile& open_shard(size_t index) const;

  std::filesystem::path source_; // the index or the single file
  bool indexed_ = false;
  std::vector<Shard> shards_;
  std::map<std::string, size_t, std::less<>> shard_of_; // tensor -> index into shards_
  mutable std::mutex mutex_;                            // guards Shard::opened
};

struct SaveOptions {
  /// 0: one `model.safetensors`. Otherwise shards of at most this many data bytes (a larger
  /// tensor gets a shard of its own), named `model-00001-of-0000N.safetensors` as HF does, and
  /// `model.safetensors.index.json`. A save that fits in one shard is written as one file.
  uint64_t max_shard_bytes = 0;
};

/// Saves an HF checkpoint folder: CONFIG as `config.json` (2-space indent, sorted keys, like HF;
/// skipped when CONFIG is null) and TENSORS in the given order, as safetensors with
/// `__metadata__ {"format": "pt"}`. Atomic: everything is written and fsync'ed in a sibling
/// `<dir>.tmp-XXXXXX`, then swapped in; an existing DIR (which must hold a checkpoint or be
/// empty) is replaced whole only once the new folder is complete. On failure DIR is untouched
/// and the temporary folder removed. Throws kiln::Error.
void save_checkpoint(const std::filesystem::path& dir, const nlohmann::json& config,
                     NamedTensors tensors, const SaveOptions& options = {});

} // namespace kiln::io
