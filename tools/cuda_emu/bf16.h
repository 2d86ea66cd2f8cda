// bf16 as the drivers store it (uint16_t bit patterns): round to nearest even from float (NaN
// stays a quiet NaN), and back, exactly.
#pragma once

#include <cstdint>
#include <cstring>

namespace emu_bf16 {

inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
inline float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

} // namespace emu_bf16
