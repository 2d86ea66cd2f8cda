// Symbol visibility of libkiln-sdk.so: everything is hidden unless marked KILN_SDK_API.
#pragma once

#define KILN_SDK_API __attribute__((visibility("default")))
