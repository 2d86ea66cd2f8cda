#include "kiln/sdk/error.h"

namespace kiln {

Error::Error(ErrorKind kind, std::string message)
    : std::runtime_error(message), kind_(kind), message_(std::move(message)) {}

Error::~Error() = default;

Error Error::with_context(std::string line) const {
  Error copy = *this;
  copy.context_.push_back(std::move(line));
  // what() reports the full chain, so a plain std::exception handler still prints everything.
  static_cast<std::runtime_error&>(copy) = std::runtime_error(copy.full());
  return copy;
}

std::string Error::full() const {
  std::string out = message_;
  for (const auto& line : context_) out += fmt::format(" (while {})", line);
  return out;
}

} // namespace kiln
