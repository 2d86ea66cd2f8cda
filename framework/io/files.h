// Durable file output: what a checkpoint writer needs so that a crash never leaves a file that
// looks complete but is not.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::io::detail {

/// Writes TEXT to FILE durably (fsync'ed).
void write_text_file(const std::filesystem::path& file, std::string_view text);

/// fsyncs a folder, so the entries just created or renamed in it survive a crash.
void sync_folder(const std::filesystem::path& folder);

} // namespace kiln::io::detail

namespace kiln::io {

using detail::sync_folder;
using detail::write_text_file;

/// Writes TEXT to FILE atomically: a sibling temporary file, fsync'ed, renamed over FILE, and the
/// folder fsync'ed. Readers see the old content or the new, never a mix.
void replace_file(const std::filesystem::path& file, std::string_view text);

/// The whole content of FILE, or nullopt when it cannot be opened.
std::optional<std::string> read_file(const std::filesystem::path& file);

} // namespace kiln::io
