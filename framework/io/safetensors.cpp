// The safetensors reader validates every header field before using it, so a hostile or truncated
// file is a one-line error; the writer streams tensors to disk one at a time.
#include "io/safetensors.h"

#include "core/text.h"
#include "io/detail.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/names.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <system_error>

namespace kiln::io {

// Safetensors stores little-endian data; kiln reads it in place.
static_assert(std::endian::native == std::endian::little, "kiln::io assumes a little-endian host");

namespace {

namespace fs = std::filesystem;
using detail::errno_text;
using nlohmann::json;

struct DtypeName {
  std::string_view name;
  c10::ScalarType dtype;
};

constexpr std::array<DtypeName, 12> kDtypes = {{
    {"F64", c10::ScalarType::Double},
    {"F32", c10::ScalarType::Float},
    {"F16", c10::ScalarType::Half},
    {"BF16", c10::ScalarType::BFloat16},
    {"I64", c10::ScalarType::Long},
    {"I32", c10::ScalarType::Int},
    {"I16", c10::ScalarType::Short},
    {"I8", c10::ScalarType::Char},
    {"U8", c10::ScalarType::Byte},
    {"BOOL", c10::ScalarType::Bool},
    {"F8_E4M3", c10::ScalarType::Float8_e4m3fn},
    {"F8_E5M2", c10::ScalarType::Float8_e5m2},
}};

std::string known_dtype_names() {
  std::string out;
  for (const auto& entry : kDtypes) out += fmt::format("{}{}", out.empty() ? "" : ", ", entry.name);
  return out;
}

std::string known_torch_dtype_names() {
  std::string out;
  for (const auto& entry : kDtypes) {
    out += fmt::format("{}{}", out.empty() ? "" : ", ", dtype_name(entry.dtype));
  }
  return out;
}

/// Closes a file descriptor on every path out of the constructor.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

/// The top-level key path of a duplicate, as the reader names it.
std::string duplicate_message(const std::string& file, const detail::DuplicateKey& duplicate) {
  if (duplicate.path.empty()) {
    if (duplicate.key == "__metadata__") {
      return fmt::format("{}: __metadata__ appears twice in the header; the file is corrupt", file);
    }
    return fmt::format("{}: tensor '{}' appears twice in the header; the file is corrupt", file,
                       duplicate.key);
  }
  const std::string& owner = duplicate.path.front();
  const std::string where =
      owner == "__metadata__" ? "__metadata__" : fmt::format("tensor '{}'", owner);
  return fmt::format("{}: {}: key '{}' appears twice; the file is corrupt", file, where,
                     duplicate.key);
}

/// A non-negative JSON integer, or nullopt for anything else (negative, fractional, a string).
std::optional<uint64_t> as_unsigned(const json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0) return value.get<int64_t>();
  return std::nullopt;
}

} // namespace

std::optional<c10::ScalarType> parse_safetensors_dtype(std::string_view name) {
  for (const auto& entry : kDtypes) {
    if (entry.name == name) return entry.dtype;
  }
  return std::nullopt;
}

std::optional<std::string_view> safetensors_dtype_name(c10::ScalarType dtype) {
  for (const auto& entry : kDtypes) {
    if (entry.dtype == dtype) return entry.name;
  }
  return std::nullopt;
}

// ---- reader -------------------------------------------------------------------------------------

struct SafetensorsFile::Mapping {
  void* data = nullptr;
  size_t size = 0;

  Mapping(void* d, size_t s) : data(d), size(s) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { ::munmap(data, size); }

  const unsigned char* bytes() const { return static_cast<const unsigned char*>(data); }
};

SafetensorsFile::SafetensorsFile(const fs::path& file) : path_(file) {
  const std::string f = file.string();

  FdGuard fd{::open(file.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) {
    const int error = errno;
    user_error("{}: cannot open: {}", f, errno_text(error));
  }
  struct stat status {};
  if (::fstat(fd.fd, &status) != 0) {
    const int error = errno;
    user_error("{}: cannot stat: {}", f, errno_text(error));
  }
  if (S_ISDIR(status.st_mode)) user_error("{}: is a folder, expected a .safetensors file", f);
  if (!S_ISREG(status.st_mode)) user_error("{}: not a regular file", f);

  const uint64_t file_size = static_cast<uint64_t>(status.st_size);
  if (file_size < 8) {
    user_error(
        "{}: file is {} bytes, smaller than the 8-byte header length; the file is truncated or "
        "not safetensors",
        f, file_size);
  }
  void* data = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (data == MAP_FAILED) {
    const int error = errno;
    internal_error("{}: cannot map {} bytes: {}", f, file_size, errno_text(error));
  }
  mapping_ = std::make_shared<const Mapping>(data, file_size);
  const unsigned char* bytes = mapping_->bytes();

  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  if (header_size > kMaxSafetensorsHeaderBytes) {
    user_error(
        "{}: header length is {} bytes, more than the {}-byte limit; the file is corrupt or not "
        "safetensors",
        f, header_size, kMaxSafetensorsHeaderBytes);
  }
  if (header_size > file_size - 8) {
    user_error(
        "{}: header length is {} bytes, but only {} bytes follow the length field; the file is "
        "truncated or not safetensors",
        f, header_size, file_size - 8);
  }
  const uint64_t data_start = 8 + header_size;
  const uint64_t data_size = file_size - data_start;

  const std::string_view text(reinterpret_cast<const char*>(bytes + 8), header_size);
  json header;
  std::optional<detail::DuplicateKey> duplicate;
  try {
    header = detail::parse_json(text, duplicate);
  } catch (const json::parse_error& error) {
    user_error("{}: header is not valid JSON (header byte {}: {}); the file is corrupt", f,
               error.byte, detail::parse_error_description(error));
  }
  if (duplicate) throw Error(ErrorKind::kUser, duplicate_message(f, *duplicate));
  if (!header.is_object()) {
    user_error(
        "{}: header is a JSON {}, expected an object; the file is corrupt or not safetensors", f,
        header.type_name());
  }

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        user_error("{}: __metadata__ is {}, expected an object of strings; the file is corrupt", f,
                   detail::brief(entry));
      }
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          user_error("{}: __metadata__ '{}' is {}, expected a string; the file is corrupt", f, key,
                     detail::brief(value));
        }
        metadata_.emplace(key, value.get<std::string>());
      }
      continue;
    }

    if (!entry.is_object()) {
      user_error(
          "{}: tensor '{}' is {}, expected an object with dtype, shape and data_offsets; the file "
          "is corrupt",
          f, name, detail::brief(entry));
    }
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(field)) {
        user_error(
            "{}: tensor '{}' has no '{}' (expected dtype, shape and data_offsets); the file is "
            "corrupt",
            f, name, field);
      }
    }

    const json& dtype_json = entry["dtype"];
    if (!dtype_json.is_string()) {
      user_error(
          "{}: tensor '{}': dtype is {}, expected a string like \"F32\"; the file is corrupt", f,
          name, detail::brief(dtype_json));
    }
    const auto& dtype_text = dtype_json.get_ref<const std::string&>();
    const auto dtype = parse_safetensors_dtype(dtype_text);
    if (!dtype) {
      user_error("{}: tensor '{}': unknown dtype '{}' (kiln reads {}); convert the checkpoint", f,
                 name, dtype_text, known_dtype_names());
    }

    const json& shape_json = entry["shape"];
    if (!shape_json.is_array()) {
      user_error(
          "{}: tensor '{}': shape is {}, expected an array of non-negative integers; the file is "
          "corrupt",
          f, name, detail::brief(shape_json));
    }
    std::vector<int64_t> shape;
    shape.reserve(shape_json.size());
    // numel * itemsize must fit in int64: torch's sizes, strides and nbytes are int64.
    const auto itemsize = static_cast<int64_t>(c10::elementSize(*dtype));
    int64_t expected_bytes = itemsize;
    bool overflow = false;
    for (size_t i = 0; i < shape_json.size(); ++i) {
      const auto dim = as_unsigned(shape_json[i]);
      if (!dim) {
        user_error(
            "{}: tensor '{}': shape {}: dimension {} is {}, expected a non-negative integer; the "
            "file is corrupt",
            f, name, detail::brief(shape_json), i, detail::brief(shape_json[i]));
      }
      overflow =
          overflow || *dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(expected_bytes, static_cast<int64_t>(*dim), &expected_bytes);
      shape.push_back(static_cast<int64_t>(*dim));
    }
    if (overflow) {
      user_error("{}: tensor '{}': shape {} of {} is larger than 2^63 bytes; the file is corrupt",
                 f, name, detail::brief(shape_json), dtype_text);
    }

    const json& offsets_json = entry["data_offsets"];
    std::optional<uint64_t> begin, end;
    if (offsets_json.is_array() && offsets_json.size() == 2) {
      begin = as_unsigned(offsets_json[0]);
      end = as_unsigned(offsets_json[1]);
    }
    if (!begin || !end || *begin > *end) {
      user_error(
          "{}: tensor '{}': data_offsets {}, expected two ascending integers [begin, end]; the "
          "file "
          "is corrupt",
          f, name, detail::brief(offsets_json));
    }
    if (*end > data_size) {
      user_error(
          "{}: tensor '{}': data_offsets [{}, {}] end beyond the data (size {}); the file is "
          "truncated or corrupt",
          f, name, *begin, *end, data_size);
    }
    if (*end - *begin != static_cast<uint64_t>(expected_bytes)) {
      user_error(
          "{}: tensor '{}': data_offsets [{}, {}] hold {} bytes, expected {} for {} {}; the file "
          "is "
          "corrupt",
          f, name, *begin, *end, *end - *begin, expected_bytes, dtype_text, shape_str(shape));
    }

    tensors_.push_back({.name = name, .dtype = *dtype, .shape = std::move(shape)});
    spans_.push_back({.begin = data_start + *begin, .bytes = *end - *begin});
  }

  // File order, and overlaps: after sorting by (begin, end), a tensor overlaps an earlier one iff
  // it starts before the furthest end seen so far.
  std::vector<size_t> order(tensors_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const auto key = [&](size_t i) { return std::pair(spans_[i].begin, spans_[i].bytes); };
    return key(a) < key(b);
  });
  std::optional<size_t> furthest;
  for (size_t i : order) {
    if (furthest) {
      const Span& previous = spans_[*furthest];
      const Span& current = spans_[i];
      if (current.begin < previous.begin + previous.bytes) {
        user_error(
            "{}: tensors '{}' (data_offsets [{}, {}]) and '{}' (data_offsets [{}, {}]) overlap; "
            "the "
            "file is corrupt",
            f, tensors_[*furthest].name, previous.begin - data_start,
            previous.begin + previous.bytes - data_start, tensors_[i].name,
            current.begin - data_start, current.begin + current.bytes - data_start);
      }
    }
    if (!furthest ||
        spans_[i].begin + spans_[i].bytes > spans_[*furthest].begin + spans_[*furthest].bytes) {
      furthest = i;
    }
  }
  std::vector<sdk::TensorInfo> sorted_tensors;
  std::vector<Span> sorted_spans;
  sorted_tensors.reserve(order.size());
  sorted_spans.reserve(order.size());
  for (size_t i : order) {
    sorted_tensors.push_back(std::move(tensors_[i]));
    sorted_spans.push_back(spans_[i]);
  }
  tensors_ = std::move(sorted_tensors);
  spans_ = std::move(sorted_spans);
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

bool SafetensorsFile::contains(std::string_view name) const {
  return index_.contains(name);
}

at::Tensor SafetensorsFile::load(std::string_view name) const {
  const auto found = index_.find(name);
  if (found == index_.end()) {
    std::vector<std::string> names;
    names.reserve(tensors_.size());
    for (const auto& info : tensors_) names.push_back(info.name);
    user_error("{}: no tensor '{}'{}; the file has {} tensors", path_.string(), name,
               core::did_you_mean(name, names), tensors_.size());
  }
  const sdk::TensorInfo& info = tensors_[found->second];
  const Span& span = spans_[found->second];
  const auto options = at::TensorOptions().dtype(info.dtype);
  if (span.bytes == 0) return at::empty(info.shape, options);

  const unsigned char* data = mapping_->bytes() + span.begin;
  if (reinterpret_cast<uintptr_t>(data) % c10::elementSize(info.dtype) == 0) {
    // The deleter owns a reference to the mapping: the tensor keeps the file mapped.
    return at::from_blob(
        const_cast<unsigned char*>(data), info.shape, [keep = mapping_](void*) {}, options);
  }
  at::Tensor copy = at::empty(info.shape, options);
  std::memcpy(copy.mutable_data_ptr(), data, span.bytes);
  return copy;
}

// ---- writer -------------------------------------------------------------------------------------

namespace detail {

uint64_t stored_bytes(const at::Tensor& tensor) {
  return static_cast<uint64_t>(tensor.numel()) * tensor.element_size();
}

void check_writable(const fs::path& file, NamedTensors tensors) {
  const std::string f = file.string();
  std::set<std::string_view> names;
  for (const auto& [name, tensor] : tensors) {
    try {
      (void)json(name).dump();
    } catch (const json::type_error&) {
      user_error("{}: tensor name {} is not valid UTF-8; safetensors names are UTF-8 text", f,
                 json(name).dump(-1, ' ', true, json::error_handler_t::replace));
    }
    if (name == "__metadata__") {
      user_error("{}: tensor name '__metadata__' is reserved for the header's metadata; rename it",
                 f);
    }
    if (!names.insert(name).second) {
      user_error("{}: tensor '{}' is given twice; tensor names must be unique", f, name);
    }
    if (!tensor.defined()) {
      user_error("{}: tensor '{}' is undefined; every saved tensor needs data", f, name);
    }
    if (tensor.layout() != at::kStrided) {
      user_error(
          "{}: tensor '{}' has layout {}, expected a dense (strided) tensor; convert it first", f,
          name, c10::toString(tensor.layout()));
    }
    if (!safetensors_dtype_name(tensor.scalar_type())) {
      user_error("{}: tensor '{}' has dtype {}, which kiln cannot store (supported: {}); cast it",
                 f, name, dtype_name(tensor.scalar_type()), known_torch_dtype_names());
    }
  }
}

} // namespace detail

void write_safetensors(const fs::path& file, NamedTensors tensors,
                       const SafetensorsMetadata& metadata) {
  const std::string f = file.string();
  detail::check_writable(file, tensors);
  for (const auto& [key, value] : metadata) {
    try {
      (void)json(key).dump();
      (void)json(value).dump();
    } catch (const json::type_error&) {
      user_error("{}: __metadata__ entry {} is not valid UTF-8", f,
                 json(key).dump(-1, ' ', true, json::error_handler_t::replace));
    }
  }

  // Compact JSON with keys in this order: __metadata__, then the tensors as given, each as
  // {"dtype", "shape", "data_offsets"}: byte-identical to HF's writer for the same tensor order.
  std::string header = "{";
  if (!metadata.empty()) header += fmt::format("\"__metadata__\":{}", json(metadata).dump());
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const uint64_t bytes = detail::stored_bytes(tensor);
    std::string shape;
    for (const int64_t dim : tensor.sizes())
      shape += fmt::format("{}{}", shape.empty() ? "" : ",", dim);
    header +=
        fmt::format("{}{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                    header.size() > 1 ? "," : "", json(name).dump(),
                    *safetensors_dtype_name(tensor.scalar_type()), shape, offset, offset + bytes);
    offset += bytes;
  }
  header += "}";
  // HF pads with spaces to a multiple of 8 so data offsets keep 8-byte alignment.
  header.append((8 - header.size() % 8) % 8, ' ');

  detail::OutputFile out(file);
  std::array<unsigned char, 8> length{};
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(header.size() >> (8 * i));
  out.write(length.data(), length.size());
  out.write(header.data(), header.size());
  for (const auto& [name, tensor] : tensors) {
    at::Tensor cpu;
    try {
      cpu = tensor.detach().to(at::kCPU).contiguous();
    } catch (const c10::Error& error) {
      const std::string_view what = error.what_without_backtrace();
      user_error("{}: tensor '{}' cannot be copied to the CPU: {}", f, name,
                 what.substr(0, what.find('\n')));
    }
    if (cpu.numel() > 0) out.write(cpu.const_data_ptr(), detail::stored_bytes(cpu));
  }
  out.finish();
}

} // namespace kiln::io
