#include "io/detail.h"

#include "kiln/sdk/error.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

namespace kiln::io::detail {

std::string errno_text(int error) {
  return std::error_code(error, std::generic_category()).message();
}

nlohmann::json parse_json(std::string_view text, std::optional<DuplicateKey>& duplicate) {
  // One frame per object being parsed: its keys so far and the key whose value is being parsed.
  struct Frame {
    std::set<std::string, std::less<>> keys;
    std::string current;
  };
  std::vector<Frame> frames;
  duplicate.reset();
  using Event = nlohmann::json::parse_event_t;
  auto callback = [&](int /*depth*/, Event event, nlohmann::json& parsed) {
    switch (event) {
      case Event::object_start:
        frames.emplace_back();
        break;
      case Event::object_end:
        frames.pop_back();
        break;
      case Event::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        Frame& frame = frames.back();
        if (!frame.keys.insert(key).second && !duplicate) {
          DuplicateKey found{.path = {}, .key = key};
          for (size_t i = 0; i + 1 < frames.size(); ++i) found.path.push_back(frames[i].current);
          duplicate = std::move(found);
        }
        frame.current = key;
        break;
      }
      default:
        break;
    }
    return true; // keep everything; the duplicate only needs reporting
  };
  return nlohmann::json::parse(text.begin(), text.end(), callback);
}

std::string read_required_file(const std::filesystem::path& file) {
  auto text = io::read_file(file);
  if (!text) user_error("{}: cannot read the file", file.string());
  return std::move(*text);
}

nlohmann::json parse_json_file(const std::filesystem::path& file, std::string_view text) {
  std::optional<DuplicateKey> duplicate;
  nlohmann::json value;
  try {
    value = parse_json(text, duplicate);
  } catch (const nlohmann::json::parse_error& error) {
    // nlohmann's byte is the 1-based count of characters read when it stopped.
    const auto [line, column] = line_column(text, error.byte > 0 ? error.byte - 1 : 0);
    user_error("{}:{}:{}: invalid JSON: {}", file.string(), line, column,
               parse_error_description(error));
  }
  if (duplicate) {
    std::string key;
    for (const auto& part : duplicate->path) key += part + ".";
    user_error("{}: key '{}' appears twice; keep one", file.string(), key + duplicate->key);
  }
  return value;
}

std::pair<size_t, size_t> line_column(std::string_view text, size_t byte) {
  const size_t end = std::min(byte, text.size());
  const std::string_view before = text.substr(0, end);
  const size_t line = 1 + static_cast<size_t>(std::count(before.begin(), before.end(), '\n'));
  const size_t line_start = before.rfind('\n');
  const size_t column = line_start == std::string_view::npos ? end + 1 : end - line_start;
  return {line, column};
}

std::string parse_error_description(const nlohmann::json::parse_error& error) {
  const std::string_view what = error.what();
  const size_t start = what.find("parse error");
  const size_t colon = start == std::string_view::npos ? start : what.find(": ", start);
  if (colon == std::string_view::npos) return std::string(what);
  return std::string(what.substr(colon + 2));
}

std::string brief(const nlohmann::json& value) {
  constexpr size_t kMaxChars = 60;
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > kMaxChars) text = text.substr(0, kMaxChars - 3) + "...";
  return text;
}

OutputFile::OutputFile(std::filesystem::path file) : file_(std::move(file)) {
  fd_ = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int error = errno;
    internal_error("{}: cannot create the file: {}", file_.string(), errno_text(error));
  }
}

OutputFile::~OutputFile() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(file_.c_str());
}

void OutputFile::write(const void* data, size_t bytes) {
  const auto* next = static_cast<const char*>(data);
  while (bytes > 0) {
    // write() moves at most ~2 GiB per call and may stop early; loop until all is written.
    const ssize_t written = ::write(fd_, next, bytes);
    if (written < 0) {
      const int error = errno;
      if (error == EINTR) continue;
      internal_error("{}: write failed: {}; check free space and permissions", file_.string(),
                     errno_text(error));
    }
    next += written;
    bytes -= static_cast<size_t>(written);
  }
}

void OutputFile::finish() {
  if (::fsync(fd_) != 0) {
    const int error = errno;
    internal_error("{}: fsync failed: {}; the file may not be on disk", file_.string(),
                   errno_text(error));
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(file_.c_str());
    internal_error("{}: close failed: {}", file_.string(), errno_text(error));
  }
}

void write_text_file(const std::filesystem::path& file, std::string_view text) {
  OutputFile out(file);
  out.write(text.data(), text.size());
  out.finish();
}

void sync_folder(const std::filesystem::path& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    internal_error("{}: cannot open the folder: {}", folder.string(), errno_text(error));
  }
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (result != 0) internal_error("{}: fsync failed: {}", folder.string(), errno_text(error));
}

} // namespace kiln::io::detail

namespace kiln::io {

void replace_file(const std::filesystem::path& file, std::string_view text) {
  const std::filesystem::path temp = file.string() + ".tmp";
  detail::write_text_file(temp, text);
  std::error_code error;
  std::filesystem::rename(temp, file, error);
  if (error) {
    std::filesystem::remove(temp, error);
    internal_error("{}: cannot replace the file: {}", file.string(), error.message());
  }
  detail::sync_folder(file.has_parent_path() ? file.parent_path() : std::filesystem::path("."));
}

std::optional<std::string> read_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return std::move(text).str();
}

} // namespace kiln::io
