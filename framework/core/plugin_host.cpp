#include "core/plugin_host.h"

#include "core/model_registry.h"
#include "core/text.h"
#include "kiln/sdk/error.h"
#include "kiln/sdk/log.h"
#include "kiln/sdk/names.h"
#include "kiln/sdk/ops.h"
#include "kiln/sdk/plugin.h"

#include <fmt/format.h>
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>

#include <array>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

namespace kiln::core {
namespace fs = std::filesystem;
namespace {

// Descriptor layout this host understands, per ABI minor of major 1.
constexpr size_t kFrozenPrefixSize = offsetof(kiln_plugin_info, torch_version);
constexpr size_t kInfoSizeV1_0 = sizeof(kiln_plugin_info);

const char* kind_name(uint32_t kind) {
  switch (kind) {
    case KILN_PLUGIN_KIND_MODEL:
      return "model";
    case KILN_PLUGIN_KIND_BACKEND:
      return "backend";
    case KILN_PLUGIN_KIND_POLICY:
      return "policy";
  }
  return nullptr;
}

std::string major_minor(const std::string& version) {
  const auto first = version.find('.');
  if (first == std::string::npos) return version;
  const auto second = version.find('.', first + 1);
  return version.substr(0, second);
}

std::string compiler_family(const std::string& compiler) {
  return compiler.substr(0, compiler.find(' '));
}

// Reads the ELF identification of a file: empty when it is a loadable shared object for this
// machine, else why not. Runs no code of the file.
std::string check_elf(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot open the file";
  std::array<unsigned char, 20> header{};
  in.read(reinterpret_cast<char*>(header.data()), header.size());
  const auto n = static_cast<size_t>(in.gcount());
  if (n < 4 || header[0] != 0x7f || header[1] != 'E' || header[2] != 'L' || header[3] != 'F') {
    std::string start;
    for (size_t i = 0; i < std::min<size_t>(n, 8); ++i) {
      const char c = static_cast<char>(header[i]);
      start += (c >= 32 && c < 127) ? c : '.';
    }
    return fmt::format(
        "not an ELF shared library (the file starts with '{}'); remove it or "
        "rebuild it with kiln_add_plugin",
        start);
  }
  if (n < 20) return "truncated ELF header; rebuild the plugin";
  if (header[4] != 2) return "a 32-bit ELF file; rebuild the plugin for 64-bit";
  const unsigned type = header[16] | (header[17] << 8);
  if (type != 3) {
    return fmt::format(
        "an ELF file of type {} (not a shared object); build it as a MODULE "
        "library with kiln_add_plugin",
        type);
  }
  const unsigned machine = header[18] | (header[19] << 8);
#if defined(__x86_64__)
  constexpr unsigned kHostMachine = 62; // EM_X86_64
#elif defined(__aarch64__)
  constexpr unsigned kHostMachine = 183; // EM_AARCH64
#else
  constexpr unsigned kHostMachine = machine;
#endif
  if (machine != kHostMachine) {
    return fmt::format(
        "built for ELF machine {} but this host is machine {}; rebuild the plugin "
        "on this architecture",
        machine, kHostMachine);
  }
  return {};
}

// Registration is staged: nothing reaches the registries until the plugin's function returned
// successfully and every addition was accepted.
class StagingRegistrar final : public sdk::Registrar {
 public:
  explicit StagingRegistrar(std::string plugin) : plugin_(std::move(plugin)) {}

  void add_model_family(sdk::ModelFamily family) override {
    ModelRegistry::global().check_new(family, plugin_);
    for (const auto& staged : families_) {
      KILN_CHECK_USER(staged.name != family.name, "duplicate model family '{}' in plugin '{}'",
                      family.name, plugin_);
    }
    families_.push_back(std::move(family));
  }

  void add_policy(std::shared_ptr<sdk::Policy> policy) override {
    KILN_CHECK_USER(policy != nullptr, "plugin '{}' added a null policy", plugin_);
    const std::string name = policy->name();
    KILN_CHECK_USER(is_registry_name(name),
                    "policy '{}' from plugin '{}': names are lower-case letters, digits and '_'",
                    name, plugin_);
    sdk::Dispatcher::global().check_new_policy(name);
    for (const auto& staged : policies_) {
      KILN_CHECK_USER(staged->name() != name, "duplicate policy '{}' in plugin '{}'", name,
                      plugin_);
    }
    policies_.push_back(std::move(policy));
  }

  void add_kernel_record(sdk::KernelRecord record) override {
    record.info.plugin = plugin_;
    const auto& info = record.info;
    KILN_CHECK_USER(is_registry_name(info.backend),
                    "kernel {}/{} from plugin '{}': backend names are lower-case letters, digits "
                    "and '_'",
                    info.op, info.backend, plugin_);
    const auto ops = kiln::ops::op_names();
    KILN_CHECK_USER(std::find(ops.begin(), ops.end(), info.op) != ops.end(),
                    "kernel for unknown op '{}' from plugin '{}'; the SDK's ops are fixed", info.op,
                    plugin_);
    sdk::Dispatcher::global().check_new_kernel(info);
    for (const auto& staged : kernels_) {
      if (staged.info.op == info.op && staged.info.backend == info.backend &&
          staged.info.device == info.device) {
        user_error("duplicate kernel {}/{}/{} registered twice by plugin '{}'", info.op,
                   info.backend, device_name(info.device), plugin_);
      }
    }
    kernels_.push_back(std::move(record));
  }

  std::string_view plugin_name() const override { return plugin_; }

  // Moves everything into the registries. Called only after a successful registration.
  std::vector<std::string> commit() {
    std::vector<std::string> provides;
    for (auto& k : kernels_) {
      provides.push_back(
          fmt::format("kernel {}/{}/{}", k.info.op, k.info.backend, device_name(k.info.device)));
      sdk::Dispatcher::global().add_kernel(std::move(k));
    }
    for (auto& p : policies_) {
      provides.push_back(fmt::format("policy {}", p->name()));
      sdk::Dispatcher::global().add_policy(std::move(p));
    }
    for (auto& f : families_) {
      provides.push_back(fmt::format("family {}", f.name));
      ModelRegistry::global().add(std::move(f), plugin_);
    }
    return provides;
  }

 private:
  std::string plugin_;
  std::vector<sdk::KernelRecord> kernels_;
  std::vector<std::shared_ptr<sdk::Policy>> policies_;
  std::vector<sdk::ModelFamily> families_;
};

// Libraries stay loaded for the process lifetime: registries hold their code.
std::vector<boost::dll::shared_library>& loaded_libraries() {
  static auto* libraries = new std::vector<boost::dll::shared_library>();
  return *libraries;
}

bool is_plugin_file_name(const fs::path& path) {
  const std::string name = path.filename().string();
  return name.size() > 11 && name.rfind("libkiln-", 0) == 0 &&
         name.compare(name.size() - 3, 3, ".so") == 0;
}

std::vector<fs::path> plugin_files_in(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (is_plugin_file_name(entry.path()) && !fs::is_directory(entry.path(), ec)) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

} // namespace

std::string describe(const PluginRecord& record) {
  return record.name.empty() ? record.path.string()
                             : fmt::format("plugin '{}' ({})", record.name, record.path.string());
}

fs::path default_plugin_dir() {
  return boost::dll::program_location().parent_path().parent_path().string() + "/lib/kiln/plugins";
}

PluginHost& PluginHost::global() {
  static auto* instance = new PluginHost();
  return *instance;
}

std::vector<PluginRecord> PluginHost::load(const PluginSearch& search) {
  std::vector<std::pair<fs::path, std::string>> candidates;
  for (const auto& file : search.files) {
    std::error_code ec;
    KILN_CHECK_USER(fs::is_regular_file(file, ec), "--plugin {}: no such file", file.string());
    candidates.emplace_back(file, "--plugin");
  }
  if (search.use_env) {
    if (const char* env = std::getenv("KILN_PLUGIN_PATH"); env != nullptr) {
      std::stringstream entries(env);
      std::string entry;
      while (std::getline(entries, entry, ':')) {
        if (entry.empty()) continue; // an empty entry would mean the current directory: never
        for (auto& f : plugin_files_in(entry)) candidates.emplace_back(f, "KILN_PLUGIN_PATH");
      }
    }
  }
  for (const auto& dir : search.recipe_dirs) {
    for (auto& f : plugin_files_in(dir)) candidates.emplace_back(f, "recipe");
  }
  if (search.use_default_dir) {
    for (auto& f : plugin_files_in(default_plugin_dir())) candidates.emplace_back(f, "default");
  }

  std::vector<PluginRecord> out;
  for (const auto& [path, origin] : candidates) {
    PluginRecord record = load_file(path, origin);
    if (record.status == PluginStatus::kFailed) {
      log_warn("{}: {}", describe(record), record.reason);
    } else if (record.status == PluginStatus::kSkipped) {
      log_debug("{}: {}", describe(record), record.reason);
    }
    out.push_back(std::move(record));
  }
  return out;
}

PluginRecord PluginHost::load_file(const fs::path& path, const std::string& origin) {
  PluginRecord record = check_and_register(path, origin);
  records_.push_back(record);
  return record;
}

PluginRecord PluginHost::check_and_register(const fs::path& path, const std::string& origin) {
  PluginRecord record;
  std::error_code ec;
  record.path = fs::absolute(path, ec);
  record.origin = origin;
  const fs::path canonical = fs::weakly_canonical(record.path, ec);
  auto fail = [&](std::string reason) {
    record.status = PluginStatus::kFailed;
    record.reason = std::move(reason);
    return record;
  };

  for (const auto& earlier : records_) {
    if (earlier.status == PluginStatus::kLoaded &&
        fs::weakly_canonical(earlier.path, ec) == canonical) {
      record.name = earlier.name;
      record.status = PluginStatus::kSkipped;
      record.reason = "already loaded";
      return record;
    }
  }
  if (!is_plugin_file_name(record.path)) {
    return fail(
        "plugin files are named libkiln-<kind>-<name>.so; rename it or rebuild it with "
        "kiln_add_plugin");
  }
  if (std::string elf = check_elf(record.path); !elf.empty()) return fail(elf);

  // dlopen: runs the library's static initialisers, but none of its kiln code. RTLD_NOW makes
  // unresolved symbols fail here rather than at first call.
  boost::dll::shared_library library;
  try {
    library.load(boost::dll::fs::path(record.path.string()),
                 boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (auto pos = what.find("dlerror system message: "); pos != std::string::npos) {
      what = what.substr(pos + 24);
      if (!what.empty() && what.back() == ')') what.pop_back();
    }
    return fail(
        fmt::format("cannot be loaded: {}; rebuild it against this kiln and LibTorch", what));
  }
  if (!library.has(KILN_PLUGIN_ENTRY_SYMBOL)) {
    return fail(
        fmt::format("no entry symbol '{}': not a kiln plugin; build it with "
                    "KILN_PLUGIN(...) and kiln_add_plugin, or remove it",
                    KILN_PLUGIN_ENTRY_SYMBOL));
  }
  auto entry = library.get<const kiln_plugin_info*()>(KILN_PLUGIN_ENTRY_SYMBOL);
  const kiln_plugin_info* info = entry();
  if (info == nullptr) return fail("kiln_plugin_info() returned null; rebuild the plugin");

  // Frozen prefix: readable for any ABI version.
  if (info->struct_size < kFrozenPrefixSize) {
    return fail(
        fmt::format("descriptor of {} bytes is too small to hold the ABI version; "
                    "rebuild the plugin",
                    info->struct_size));
  }
  record.abi = fmt::format("{}.{}", info->abi_major, info->abi_minor);
  if (info->abi_major != KILN_SDK_ABI_MAJOR) {
    return fail(
        fmt::format("built for kiln SDK ABI {}, this host speaks ABI {}.{}; rebuild the "
                    "plugin against this kiln's SDK",
                    record.abi, KILN_SDK_ABI_MAJOR, KILN_SDK_ABI_MINOR));
  }
  if (info->abi_minor > KILN_SDK_ABI_MINOR) {
    return fail(
        fmt::format("built for kiln SDK ABI {}, newer than this host's {}.{}; upgrade "
                    "kiln or rebuild the plugin against this kiln's SDK",
                    record.abi, KILN_SDK_ABI_MAJOR, KILN_SDK_ABI_MINOR));
  }
  if (info->struct_size < kInfoSizeV1_0) {
    return fail(fmt::format("descriptor is {} bytes, ABI {} needs {}; rebuild the plugin",
                            info->struct_size, record.abi, kInfoSizeV1_0));
  }
  auto str = [](const char* s) { return s != nullptr ? std::string(s) : std::string(); };
  record.name = str(info->name);
  record.version = str(info->plugin_version);
  record.torch_version = str(info->torch_version);
  record.cxx11_abi = info->cxx11_abi;
  record.cuda_version = info->cuda_version;
  record.compiler = str(info->compiler);
  const char* kind = kind_name(info->kind);
  if (kind == nullptr) return fail(fmt::format("unknown plugin kind {}", info->kind));
  record.kind = kind;
  if (!is_registry_name(record.name)) {
    return fail(fmt::format("invalid plugin name '{}': use lower-case letters, digits and '_'",
                            record.name));
  }
  const std::string expected_file = fmt::format("libkiln-{}-{}.so", record.kind, record.name);
  if (record.path.filename() != expected_file) {
    return fail(
        fmt::format("the descriptor says {} plugin '{}', so the file must be named {}; "
                    "rename it or rebuild it with kiln_add_plugin",
                    record.kind, record.name, expected_file));
  }

  // Build fingerprint.
  const sdk::Fingerprint host = sdk::host_fingerprint();
  auto built_for = [&] {
    return fmt::format("built for LibTorch {} (cxx11_abi={}, CUDA {}, {})", record.torch_version,
                       record.cxx11_abi, cuda_version_name(record.cuda_version), record.compiler);
  };
  auto running = [&] {
    return fmt::format("running LibTorch {} (cxx11_abi={}, CUDA {}, {})", host.torch_version,
                       host.cxx11_abi, cuda_version_name(host.cuda_version), host.compiler);
  };
  if (major_minor(record.torch_version) != major_minor(host.torch_version) ||
      record.cxx11_abi != host.cxx11_abi) {
    return fail(fmt::format("{}, {}; rebuild the plugin", built_for(), running()));
  }
  if (record.cuda_version != 0 &&
      (host.cuda_version == 0 || record.cuda_version / 1000 != host.cuda_version / 1000)) {
    return fail(fmt::format("{}, {}; rebuild the plugin with this host's CUDA toolkit", built_for(),
                            running()));
  }
  if (compiler_family(record.compiler) != compiler_family(host.compiler)) {
    return fail(
        fmt::format("{}, {}; rebuild the plugin with the host's compiler", built_for(), running()));
  }
  if (info->register_fn == nullptr) return fail("the descriptor has no registration function");

  for (const auto& earlier : records_) {
    if (earlier.status == PluginStatus::kLoaded && earlier.name == record.name) {
      record.status = PluginStatus::kSkipped;
      record.reason = fmt::format("plugin '{}' is already loaded from {}; this copy is ignored",
                                  record.name, earlier.path.string());
      loaded_libraries().push_back(std::move(library)); // its code may have run: keep it
      return record;
    }
  }

  // Tier 1: the plugin's own registration, staged.
  StagingRegistrar registrar(record.name);
  std::array<char, 1024> error{};
  int rc = 1;
  try {
    rc = info->register_fn(&registrar, error.data(), error.size());
  } catch (const std::exception& e) { // guarded_register never throws; a hand-made one might
    std::snprintf(error.data(), error.size(), "%s", e.what());
  }
  loaded_libraries().push_back(std::move(library));
  if (rc != 0) {
    return fail(fmt::format("registration failed: {}; nothing it registered is used",
                            error[0] != '\0' ? error.data() : "no message"));
  }
  try {
    record.provides = registrar.commit();
  } catch (const Error& e) {
    return fail(fmt::format("registration failed: {}", e.message()));
  }
  record.status = PluginStatus::kLoaded;
  return record;
}

} // namespace kiln::core
