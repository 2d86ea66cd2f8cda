// One safetensors file: a bounds-checked, memory-mapped reader and a streaming writer.
//
// Format: an 8-byte little-endian header length N, N bytes of JSON
// `{NAME: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
// then the data buffer; offsets are relative to the buffer's start.
#pragma once

#include "kiln/sdk/weights.h"

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::io {

/// Named tensors in the order they are written.
using NamedTensors = std::span<const std::pair<std::string, at::Tensor>>;

/// The `__metadata__` string map of a safetensors header.
using SafetensorsMetadata = std::map<std::string, std::string>;

/// A header larger than this is refused before it is read (the Rust `safetensors` limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

/// "BF16" -> BFloat16 for the twelve dtypes kiln reads and writes; nullopt for any other name.
std::optional<c10::ScalarType> parse_safetensors_dtype(std::string_view name);
/// BFloat16 -> "BF16"; nullopt for a dtype safetensors (as kiln supports it) cannot store.
std::optional<std::string_view> safetensors_dtype_name(c10::ScalarType dtype);

/// One safetensors file, opened read-only with mmap. The header is fully validated by the
/// constructor (sizes, offsets, overlaps, duplicates): a bad file is a one-line kiln::Error naming
/// the file and tensor, never a crash or an out-of-bounds read. Tensor data is not touched until
/// load(). The file must not be truncated by someone else while it is mapped (that would be a
/// SIGBUS, as with every mmap reader).
class SafetensorsFile {
 public:
  /// Maps FILE and validates its header. Throws kiln::Error (user) on a missing or bad file.
  explicit SafetensorsFile(const std::filesystem::path& file);

  const std::filesystem::path& path() const { return path_; }
  /// Every tensor, in file order (by data offset).
  const std::vector<sdk::TensorInfo>& tensors() const { return tensors_; }
  bool contains(std::string_view name) const;
  /// The tensor on the CPU in its stored dtype, contiguous. When its data is aligned for the
  /// dtype, the tensor aliases the read-only mapping (zero-copy: never write to it); otherwise
  /// it is a copy. Either way it owns what it needs: it stays valid after this object is gone.
  /// Thread-safe. Throws kiln::Error (user) when NAME is not in the file.
  at::Tensor load(std::string_view name) const;
  /// The header's `__metadata__` (empty when absent).
  const SafetensorsMetadata& metadata() const { return metadata_; }

 private:
  struct Mapping;
  struct Span {
    uint64_t begin = 0; // from the start of the file
    uint64_t bytes = 0;
  };

  std::filesystem::path path_;
  std::shared_ptr<const Mapping> mapping_;
  std::vector<sdk::TensorInfo> tensors_;
  std::vector<Span> spans_; // parallel to tensors_
  std::map<std::string, size_t, std::less<>> index_;
  SafetensorsMetadata metadata_;
};

/// Writes TENSORS to FILE (created or truncated), in the given order, each contiguous, on the
/// CPU, in its own dtype; the header is padded with spaces to a multiple of 8 bytes and
/// `__metadata__` is written first when METADATA is not empty (as HF's `safetensors` does). The
/// file is fsync'ed (its folder entry is the caller's to sync). Every tensor is checked (defined,
/// strided, supported dtype, unique name) before the file is created; a failure while writing
/// removes the partial file. Tensors are copied to the CPU one at a time, so peak extra memory is
/// one tensor.
void write_safetensors(const std::filesystem::path& file, NamedTensors tensors,
                       const SafetensorsMetadata& metadata = {});

} // namespace kiln::io
