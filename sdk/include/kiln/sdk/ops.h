// Every op of the SDK: schemas (argument structs, traits) and the dispatching entry points that
// model code calls (kiln::ops::rms_norm(...), ...). Model code never calls a backend directly.
#pragma once

#include "kiln/sdk/ops/rms_norm.h"
#include "kiln/sdk/ops/rope.h"

#include <span>
#include <string_view>

namespace kiln::ops {

/// The permanent names of every op the SDK defines, in a fixed order (recipes' [backend.ops]
/// keys, kernel registrations and `kiln bench op --op` all use them).
KILN_SDK_API std::span<const std::string_view> op_names();

} // namespace kiln::ops
