// A fresh scratch directory per test, made the working directory for the test's duration.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

namespace kiln::test {

class ScratchDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           fmt::format("kiln-test-{}-{}-{}", ::getpid(), test->test_suite_name(), test->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    saved_cwd_ = std::filesystem::current_path();
    std::filesystem::current_path(dir_);
  }

  void TearDown() override {
    std::filesystem::current_path(saved_cwd_);
    std::filesystem::remove_all(dir_);
  }

  /// Writes bytes to `file` (relative paths land in the scratch directory), creating parents.
  static void write_file(const std::filesystem::path& file, std::string_view bytes) {
    if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

  static std::string read_file(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  std::filesystem::path dir_;
  std::filesystem::path saved_cwd_;
};

} // namespace kiln::test
