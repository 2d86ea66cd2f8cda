// An independent PNG reader for tests of kiln's PNG writer: chunks and CRCs checked and the
// image inflated with zlib (not with anything of kiln's), 8-bit RGB with filter type 0 only.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln::test {

struct DecodedPng {
  uint32_t width = 0;
  uint32_t height = 0;
  int bit_depth = 0;
  int color_type = 0;
  int compression = 0;
  int filter = 0;
  int interlace = 0;
  std::vector<std::string> chunks; ///< chunk types in file order
  std::vector<uint8_t> zlib;       ///< the IDAT data joined: one zlib stream
  std::vector<uint8_t> rgb;        ///< the pixels, rows top to bottom, filter bytes removed
};

inline uint32_t big_endian_u32(std::span<const uint8_t> b, size_t at) {
  if (at + 4 > b.size()) throw std::runtime_error("truncated at byte " + std::to_string(at));
  return (uint32_t{b[at]} << 24) | (uint32_t{b[at + 1]} << 16) | (uint32_t{b[at + 2]} << 8) |
         b[at + 3];
}

/// Throws std::runtime_error saying what is wrong with `png`.
inline DecodedPng decode_png(std::span<const uint8_t> png) {
  static constexpr uint8_t kSignature[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (png.size() < 8 || !std::equal(std::begin(kSignature), std::end(kSignature), png.begin()))
    throw std::runtime_error("bad PNG signature");
  DecodedPng d;
  size_t at = 8;
  while (at < png.size()) {
    const uint32_t length = big_endian_u32(png, at);
    if (at + 12 + length > png.size()) throw std::runtime_error("chunk runs past the end");
    const std::string type(png.begin() + at + 4, png.begin() + at + 8);
    const auto body = png.subspan(at + 8, length);
    const uint32_t stored = big_endian_u32(png, at + 8 + length);
    const uint32_t computed = static_cast<uint32_t>(
        ::crc32(::crc32(0, nullptr, 0), png.data() + at + 4, static_cast<uInt>(length + 4)));
    if (stored != computed) throw std::runtime_error("bad CRC in chunk " + type);
    if (d.chunks.empty() && type != "IHDR") throw std::runtime_error("first chunk is " + type);
    if (type == "IHDR") {
      if (length != 13) throw std::runtime_error("IHDR of " + std::to_string(length) + " bytes");
      d.width = big_endian_u32(body, 0);
      d.height = big_endian_u32(body, 4);
      d.bit_depth = body[8];
      d.color_type = body[9];
      d.compression = body[10];
      d.filter = body[11];
      d.interlace = body[12];
    } else if (type == "IDAT") {
      d.zlib.insert(d.zlib.end(), body.begin(), body.end());
    }
    d.chunks.push_back(type);
    at += 12 + length;
  }
  if (d.chunks.empty() || d.chunks.back() != "IEND") throw std::runtime_error("no IEND at the end");
  if (d.bit_depth != 8 || d.color_type != 2 || d.interlace != 0)
    throw std::runtime_error("not 8-bit RGB without interlace");

  const size_t row = size_t{d.width} * 3;
  std::vector<uint8_t> raw((row + 1) * d.height);
  uLongf raw_size = static_cast<uLongf>(raw.size());
  const int status =
      ::uncompress(raw.data(), &raw_size, d.zlib.data(), static_cast<uLong>(d.zlib.size()));
  if (status != Z_OK) throw std::runtime_error("zlib: " + std::string(::zError(status)));
  if (raw_size != raw.size()) throw std::runtime_error("image data of the wrong length");
  for (size_t y = 0; y < d.height; ++y) {
    const uint8_t filter = raw[y * (row + 1)];
    if (filter != 0)
      throw std::runtime_error("row " + std::to_string(y) + " uses filter " +
                               std::to_string(filter));
    d.rgb.insert(d.rgb.end(), raw.begin() + y * (row + 1) + 1, raw.begin() + (y + 1) * (row + 1));
  }
  return d;
}

} // namespace kiln::test
