// Internals shared by safetensors.cpp and checkpoint.cpp: JSON parsing with duplicate-key
// detection and readable positions, and durable (fsync'ed) file output. Not part of the io API.
#pragma once

#include "io/files.h"
#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::io::detail {

/// strerror(ERROR), thread-safe.
std::string errno_text(int error);

/// A key that appears twice in one JSON object: the keys of the objects around it (outermost
/// first) and the key itself.
struct DuplicateKey {
  std::vector<std::string> path;
  std::string key;
};

/// Parses TEXT like nlohmann::json::parse (throws nlohmann::json::parse_error), and also finds
/// duplicated object keys, which nlohmann would silently collapse into one; the first is returned
/// through DUPLICATE.
nlohmann::json parse_json(std::string_view text, std::optional<DuplicateKey>& duplicate);

/// FILE's bytes (io::read_file), or a user error "FILE: cannot read the file".
std::string read_required_file(const std::filesystem::path& file);

/// TEXT, the content of FILE, parsed as JSON. User errors name FILE: `FILE:line:col: invalid
/// JSON: ...` for bad syntax, `FILE: key 'a.b' appears twice; keep one` for a duplicate key.
nlohmann::json parse_json_file(const std::filesystem::path& file, std::string_view text);

/// 1-based line and column of the character at BYTE (0-based) in TEXT; a BYTE at or past the end
/// points just after the last character.
std::pair<size_t, size_t> line_column(std::string_view text, size_t byte);

/// nlohmann's message without its "[json.exception.parse_error.101] parse error at ...: " prefix,
/// so callers can put their own position in front.
std::string parse_error_description(const nlohmann::json::parse_error& error);

/// A JSON value for a message: compact, cut to a readable length.
std::string brief(const nlohmann::json& value);

/// The bytes TENSOR occupies in a safetensors file.
uint64_t stored_bytes(const at::Tensor& tensor);

/// Checks what write_safetensors needs of every tensor (defined, strided, a supported dtype, a
/// unique valid UTF-8 name other than `__metadata__`). Errors are user errors prefixed with FILE.
void check_writable(const std::filesystem::path& file, NamedTensors tensors);

/// A file being written. finish() fsyncs and closes it; destroying it unfinished removes it, so
/// a failure never leaves a partial file behind. Write failures are internal errors (disk full,
/// permissions: the environment).
class OutputFile {
 public:
  explicit OutputFile(std::filesystem::path file);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void write(const void* data, size_t bytes);
  void finish();

 private:
  std::filesystem::path file_;
  int fd_ = -1;
};

} // namespace kiln::io::detail
