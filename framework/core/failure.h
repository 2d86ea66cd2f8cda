// One line for what LibTorch throws. A c10::Error's what() carries a C++ stack trace after the
// message (tens of lines); the CLI and the bench print the message alone, and tell a device
// out-of-memory (which the user resolves by asking for less) from a failure of kiln.
#pragma once

#include <exception>
#include <string>

namespace kiln::core {

/// The message of `e` on one line: a c10::Error's without its stack trace, line breaks and runs
/// of blanks folded to one space, a final '.' dropped; any other exception's what() likewise.
std::string one_line_message(const std::exception& e);

/// Whether `e` says memory ran out: a c10::OutOfMemoryError (CUDA's caching allocator) or the
/// CPU allocator's "can't allocate memory".
bool is_out_of_memory(const std::exception& e);

/// What to do about it, for the end of an out-of-memory error line.
inline constexpr const char* kOutOfMemoryHint =
    "ask for less (a shorter data.seq_len, a smaller train.micro_batch with more "
    "train.grad_accum, a smaller model) or use a device with more memory";

} // namespace kiln::core
