// PROVISIONAL byte tokenizer until the real implementation lands (replaced on merge).
#include "io/tokenizer.h"

#include "kiln/sdk/error.h"

namespace kiln::io {
namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int64_t> encode(std::string_view text, bool) const override {
    std::vector<int64_t> ids;
    for (const char c : text) ids.push_back(static_cast<unsigned char>(c));
    return ids;
  }
  std::string decode(std::span<const int64_t> ids, bool) const override {
    std::string out;
    for (const int64_t id : ids) out.push_back(static_cast<char>(id));
    return out;
  }
  int64_t vocab_size() const override { return 256; }
  std::optional<int64_t> token_to_id(std::string_view) const override { return std::nullopt; }
  std::optional<std::string> id_to_token(int64_t id) const override {
    return std::string(1, static_cast<char>(id));
  }
  std::string kind() const override { return "byte"; }
  void save(const std::filesystem::path&) const override {}
};

} // namespace

Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::bytes() {
  return std::make_unique<ByteTokenizer>();
}

std::unique_ptr<Tokenizer> Tokenizer::from_file(const std::filesystem::path& file) {
  user_error("{}: HF tokenizers are not available in this build", file.string());
}

} // namespace kiln::io
