// What a measuring selection policy needs to know about a pending op call beyond its op name,
// device type and dtype: which device it runs on and which shape class ("bucket") it belongs to.
// The `auto` policy keys its timings by them; any policy plugin may use them.
//
// Both read the call's typed arguments (the SDK's own Args struct for call.op), so they work for
// every op in kiln/sdk/ops and for nothing else: a call of an op the SDK does not define gets
// the defaults documented below. Neither synchronizes with an accelerator (shapes only).
#pragma once

#include "kiln/sdk/dispatch.h"
#include "kiln/sdk/export.h"

#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace kiln::sdk {

/// The shape bucket of `call`: a short, stable text such as "T=16384,Tk=16384,H=64,D=576,K=2048".
/// Token-like sizes (tokens, batch, sequence lengths, sequence counts) are rounded UP to a power
/// of two, so nearby lengths share a bucket; widths (heads, head and hidden dims, top-k, experts,
/// vocabulary) are exact. An op the SDK does not know, or a call without arguments, gives "" (one
/// bucket for every call).
KILN_SDK_API std::string shape_bucket(const OpCall& call);

/// The device of the tensor that decides dispatch for `call` (with its index, e.g. cuda:1); for
/// an op the SDK does not know, c10::Device(call.device) without an index.
KILN_SDK_API c10::Device call_device(const OpCall& call);

/// The smallest power of two >= n (n <= 0 gives 0, 1 gives 1): how shape_bucket rounds.
KILN_SDK_API int64_t round_up_pow2(int64_t n);

} // namespace kiln::sdk
