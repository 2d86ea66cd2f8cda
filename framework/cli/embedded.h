// The quickstart recipe and its data, compiled into the binary so that `kiln run` works with no
// checkout at hand.
#pragma once

#include <filesystem>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::cli {

/// (path relative to the recipes folder, content) of every embedded file.
std::vector<std::pair<std::string_view, std::string_view>> embedded_files();

/// Writes the embedded files under ~/.cache/kiln/quickstart-<version>/ (XDG_CACHE_HOME when
/// set), rewriting any that differ, and returns the recipe's path there.
std::filesystem::path write_embedded_quickstart();

} // namespace kiln::cli
