#include "plot/png.h"

#include "plot/canvas.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>

namespace kiln::plot {
namespace {

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[n] = c;
  }
  return table;
}

constexpr auto kCrcTable = make_crc_table();

// ---- deflate (RFC 1951), fixed Huffman codes ---------------------------------------------------

constexpr int kWindow = 32768;
constexpr int kMinMatch = 3;
constexpr int kMaxMatch = 258;
constexpr int kMaxChain = 48;  // candidates tried per position
constexpr int kGoodMatch = 64; // a match this long ends the search
constexpr int kHashBits = 15;

// Length symbols 257..285: base length and extra bits (RFC 1951 3.2.5).
constexpr std::array<uint16_t, 29> kLengthBase = {3,  4,  5,  6,   7,   8,   9,   10,  11, 13,
                                                  15, 17, 19, 23,  27,  31,  35,  43,  51, 59,
                                                  67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr std::array<uint8_t, 29> kLengthExtra = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                                  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
// Distance symbols 0..29.
constexpr std::array<uint16_t, 30> kDistanceBase = {
    1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
    193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
constexpr std::array<uint8_t, 30> kDistanceExtra = {0, 0, 0,  0,  1,  1,  2,  2,  3,  3,
                                                    4, 4, 5,  5,  6,  6,  7,  7,  8,  8,
                                                    9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

// Deflate packs bits from the least significant end of each byte; Huffman codes go in from
// their most significant bit.
class BitWriter {
 public:
  explicit BitWriter(std::vector<uint8_t>& out) : out_(out) {}

  void bits(uint32_t value, int count) {
    buffer_ |= static_cast<uint64_t>(value) << count_;
    count_ += count;
    while (count_ >= 8) {
      out_.push_back(static_cast<uint8_t>(buffer_));
      buffer_ >>= 8;
      count_ -= 8;
    }
  }

  void code(uint32_t code, int length) {
    uint32_t reversed = 0;
    for (int i = 0; i < length; ++i) reversed |= ((code >> i) & 1u) << (length - 1 - i);
    bits(reversed, length);
  }

  void flush() {
    if (count_ > 0) out_.push_back(static_cast<uint8_t>(buffer_));
    buffer_ = 0;
    count_ = 0;
  }

 private:
  std::vector<uint8_t>& out_;
  uint64_t buffer_ = 0;
  int count_ = 0;
};

// The fixed literal/length code (RFC 1951 3.2.6).
void put_symbol(BitWriter& w, int symbol) {
  if (symbol < 144) {
    w.code(0x30 + symbol, 8);
  } else if (symbol < 256) {
    w.code(0x190 + (symbol - 144), 9);
  } else if (symbol < 280) {
    w.code(symbol - 256, 7);
  } else {
    w.code(0xC0 + (symbol - 280), 8);
  }
}

void put_match(BitWriter& w, int length, int distance) {
  int l = static_cast<int>(kLengthBase.size()) - 1;
  while (kLengthBase[l] > length) --l;
  put_symbol(w, 257 + l);
  w.bits(length - kLengthBase[l], kLengthExtra[l]);
  int d = static_cast<int>(kDistanceBase.size()) - 1;
  while (kDistanceBase[d] > distance) --d;
  w.code(d, 5);
  w.bits(distance - kDistanceBase[d], kDistanceExtra[d]);
}

uint32_t hash3(const uint8_t* p) {
  const uint32_t v = (uint32_t{p[0]} << 16) | (uint32_t{p[1]} << 8) | p[2];
  return (v * 2654435761u) >> (32 - kHashBits);
}

// Greedy LZ77 over hash chains: at each position the longest earlier match within the window
// (among the last kMaxChain positions with the same 3-byte hash), else a literal.
void deflate_fixed(std::span<const uint8_t> in, BitWriter& w) {
  w.bits(1, 1); // BFINAL
  w.bits(1, 2); // BTYPE 01: fixed Huffman codes
  const size_t n = in.size();
  std::vector<int64_t> head(size_t{1} << kHashBits, -1);
  std::vector<int64_t> previous(kWindow, -1);
  const auto insert = [&](size_t pos) {
    if (pos + kMinMatch > n) return;
    const uint32_t h = hash3(&in[pos]);
    previous[pos % kWindow] = head[h];
    head[h] = static_cast<int64_t>(pos);
  };
  size_t pos = 0;
  while (pos < n) {
    int best_length = 0;
    size_t best_distance = 0;
    if (pos + kMinMatch <= n) {
      const size_t limit = std::min<size_t>(kMaxMatch, n - pos);
      int64_t candidate = head[hash3(&in[pos])];
      for (int chain = 0; chain < kMaxChain && candidate >= 0; ++chain) {
        const size_t distance = pos - static_cast<size_t>(candidate);
        if (distance > static_cast<size_t>(kWindow)) break;
        size_t length = 0;
        while (length < limit && in[candidate + length] == in[pos + length]) ++length;
        if (static_cast<int>(length) > best_length) {
          best_length = static_cast<int>(length);
          best_distance = distance;
          if (best_length >= kGoodMatch) break;
        }
        // Not yet overwritten: a slot is reused only by a position a full window later.
        candidate = previous[candidate % kWindow];
      }
    }
    if (best_length >= kMinMatch) {
      put_match(w, best_length, static_cast<int>(best_distance));
      for (int i = 0; i < best_length; ++i) insert(pos + i);
      pos += best_length;
    } else {
      put_symbol(w, in[pos]);
      insert(pos);
      ++pos;
    }
  }
  put_symbol(w, 256); // end of block
  w.flush();
}

// ---- PNG chunks --------------------------------------------------------------------------------

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

void put_chunk(std::vector<uint8_t>& out, std::string_view type, std::span<const uint8_t> data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  const size_t type_at = out.size();
  out.insert(out.end(), type.begin(), type.end());
  out.insert(out.end(), data.begin(), data.end());
  put_u32(out, crc32(std::span(out).subspan(type_at)));
}

std::string errno_text(int error) {
  return std::strerror(error);
}

} // namespace

uint32_t crc32(std::span<const uint8_t> bytes, uint32_t crc) {
  uint32_t c = ~crc;
  for (const uint8_t b : bytes) c = kCrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
  return ~c;
}

uint32_t adler32(std::span<const uint8_t> bytes, uint32_t adler) {
  constexpr uint32_t kMod = 65521;
  constexpr size_t kBlock = 5552; // the most bytes before the sums can overflow 32 bits
  uint32_t a = adler & 0xFFFF;
  uint32_t b = adler >> 16;
  for (size_t start = 0; start < bytes.size(); start += kBlock) {
    const size_t end = std::min(bytes.size(), start + kBlock);
    for (size_t i = start; i < end; ++i) {
      a += bytes[i];
      b += a;
    }
    a %= kMod;
    b %= kMod;
  }
  return (b << 16) | a;
}

std::vector<uint8_t> zlib_compress(std::span<const uint8_t> bytes) {
  std::vector<uint8_t> out = {0x78, 0x01}; // deflate, 32 KiB window; (0x7801 % 31) == 0
  BitWriter w(out);
  deflate_fixed(bytes, w);
  put_u32(out, adler32(bytes));
  return out;
}

std::vector<uint8_t> encode_png(const Canvas& canvas) {
  const size_t row_bytes = static_cast<size_t>(canvas.width()) * 3;
  std::vector<uint8_t> raw;
  raw.reserve((row_bytes + 1) * canvas.height());
  const auto pixels = canvas.rgb();
  for (int y = 0; y < canvas.height(); ++y) {
    raw.push_back(0); // filter type 0: the row as is
    const auto row = pixels.subspan(y * row_bytes, row_bytes);
    raw.insert(raw.end(), row.begin(), row.end());
  }

  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  std::vector<uint8_t> header;
  put_u32(header, static_cast<uint32_t>(canvas.width()));
  put_u32(header, static_cast<uint32_t>(canvas.height()));
  header.insert(header.end(), {8, 2, 0, 0, 0}); // 8 bits, RGB, deflate, filter set 0, no interlace
  put_chunk(png, "IHDR", header);
  put_chunk(png, "IDAT", zlib_compress(raw));
  put_chunk(png, "IEND", {});
  return png;
}

void save_png(const Canvas& canvas, const std::filesystem::path& file) {
  const std::vector<uint8_t> bytes = encode_png(canvas);
  const std::filesystem::path folder = file.has_parent_path() ? file.parent_path() : ".";
  // O_EXCL with a random name rather than mkstemp: mkstemp makes the file 0600, and a picture
  // should get the usual permissions (0666 less the umask), as any other file the user writes.
  std::random_device random;
  std::string temp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, ".tmp-%d-%08x", static_cast<int>(::getpid()), random());
    temp = (folder / ("." + file.filename().string() + suffix)).string();
    fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    const int error = errno;
    throw std::runtime_error("cannot write " + file.string() + ": " + errno_text(error) +
                             " (creating a temporary file in " + folder.string() + ")");
  }
  const auto fail = [&](int error) {
    ::close(fd);
    ::unlink(temp.c_str());
    throw std::runtime_error("cannot write " + file.string() + ": " + errno_text(error));
  };
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(errno);
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) fail(errno);
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(temp.c_str());
    throw std::runtime_error("cannot write " + file.string() + ": " + errno_text(error));
  }
  if (::rename(temp.c_str(), file.c_str()) != 0) {
    const int error = errno;
    ::unlink(temp.c_str());
    throw std::runtime_error("cannot write " + file.string() + ": " + errno_text(error));
  }
}

} // namespace kiln::plot
