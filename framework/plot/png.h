// PNG output written from scratch: 8-bit RGB, filter type 0, one IDAT holding a zlib stream
// (RFC 1950) of a single fixed-Huffman deflate block (RFC 1951) with LZ77 matches. Charts are
// mostly flat colour, so this compresses a 1600x1000 figure to tens of kilobytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace kiln::plot {

class Canvas;

/// CRC-32 as PNG chunks and gzip use it (polynomial 0xEDB88320), continuing from `crc` (0 to
/// start).
uint32_t crc32(std::span<const uint8_t> bytes, uint32_t crc = 0);

/// Adler-32 as zlib streams end with it, continuing from `adler` (1 to start).
uint32_t adler32(std::span<const uint8_t> bytes, uint32_t adler = 1);

/// A complete zlib stream of `bytes`: header 78 01, one final fixed-Huffman block, Adler-32.
std::vector<uint8_t> zlib_compress(std::span<const uint8_t> bytes);

/// The canvas as a PNG file's bytes.
std::vector<uint8_t> encode_png(const Canvas& canvas);

/// Writes the canvas to `file` atomically: into a temporary file in the same folder, then
/// renamed over `file`, so readers never see half a picture. Throws std::runtime_error naming
/// the file and the system's reason when the folder is missing or not writable.
void save_png(const Canvas& canvas, const std::filesystem::path& file);

} // namespace kiln::plot
