// Shared by the io tests: a per-test temporary folder made the current directory (so messages
// show short relative paths), byte-level file helpers and tensor comparison.
#pragma once

#include "kiln/sdk/error.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <unistd.h>
#include "../support/scratch_dir.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::io::test {

namespace fs = std::filesystem;

class IoTest : public ::kiln::test::ScratchDirTest {
 protected:
  /// A safetensors file from its parts: the 8-byte little-endian length, HEADER as is, DATA.
  static std::string craft(std::string_view header, std::string_view data = {}) {
    std::string out(8, '\0');
    const uint64_t size = header.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((size >> (8 * i)) & 0xff);
    out += header;
    out += data;
    return out;
  }

  /// The message of the kiln::Error (user) that BODY throws; a test failure when it throws none.
  static std::string user_error_of(const std::function<void()>& body) {
    try {
      body();
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), ErrorKind::kUser) << error.message();
      return error.message();
    }
    ADD_FAILURE() << "expected a kiln::Error";
    return {};
  }

  /// Every entry of the test folder, sorted ("a", "a/b", ...), to see what a save left behind.
  std::vector<std::string> tree() const {
    std::vector<std::string> out;
    for (const auto& entry : fs::recursive_directory_iterator(dir_)) {
      out.push_back(fs::relative(entry.path(), dir_).string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};

/// Same dtype, same shape, same bytes.
inline ::testing::AssertionResult bit_identical(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type()) {
    return ::testing::AssertionFailure()
           << "dtype " << a.scalar_type() << " vs " << b.scalar_type();
  }
  if (a.sizes() != b.sizes()) {
    return ::testing::AssertionFailure() << "shape " << a.sizes() << " vs " << b.sizes();
  }
  const at::Tensor ca = a.cpu().contiguous();
  const at::Tensor cb = b.cpu().contiguous();
  if (ca.numel() > 0 && std::memcmp(ca.const_data_ptr(), cb.const_data_ptr(), ca.nbytes()) != 0) {
    return ::testing::AssertionFailure() << "bytes differ";
  }
  return ::testing::AssertionSuccess();
}

} // namespace kiln::io::test
