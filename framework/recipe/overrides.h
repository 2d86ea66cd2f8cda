// CLI overrides ("section.key=value") applied to a recipe's merged TOML table, typed by the schema.
#pragma once

#include "recipe/diagnostics.h"

#include <toml++/toml.h>

#include <string_view>

namespace kiln::recipe::detail {

/// Sets the value that TEXT ("section.key=value", or "section.key.sub=value" inside a table key)
/// names in ROOT, replacing what the files wrote there. The value text is typed by the key's
/// schema type; LOCATOR learns which override set the key, for later messages. Throws kiln::Error
/// (kUser) on an unknown key or a value that cannot have the key's type.
void apply_override(toml::table& root, std::string_view text, Locator& locator);

} // namespace kiln::recipe::detail
