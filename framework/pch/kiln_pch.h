// The precompiled header shared by every kiln C++ target that sees LibTorch: the ATen headers
// dominate compile time on a 2-core build, so they are parsed once.
#pragma once

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
