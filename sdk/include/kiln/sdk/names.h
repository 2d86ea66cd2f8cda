// Names kiln prints and parses for devices and dtypes ("cpu", "cuda"; "float32", "bfloat16").
#pragma once

#include "kiln/sdk/export.h"

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string>
#include <string_view>

namespace kiln {

KILN_SDK_API std::string device_name(c10::DeviceType device);
KILN_SDK_API std::string dtype_name(c10::ScalarType dtype);
/// "float32"/"fp32"/"float", "bfloat16"/"bf16", "float16"/"fp16"/"half", "float64"; else nullopt.
KILN_SDK_API std::optional<c10::ScalarType> parse_dtype(std::string_view name);

/// "13.0" for a CUDA version number like 13000, "none" for 0.
KILN_SDK_API std::string cuda_version_name(int version);

/// "[2, 3, 4]" for messages.
KILN_SDK_API std::string shape_str(c10::IntArrayRef sizes);

} // namespace kiln
