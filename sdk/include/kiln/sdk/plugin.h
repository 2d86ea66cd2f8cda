// The plugin handshake: the one symbol a kiln plugin exports and the descriptor it returns.
//
// Tier 0 (this file, C layout): the host dlopens a libkiln-*.so, looks up `kiln_plugin_info`,
// calls it and checks every field of the descriptor (struct size, SDK ABI, LibTorch version,
// C++ ABI, CUDA version, compiler) BEFORE it runs any registration code.
// Tier 1 (C++, kiln/sdk/registrar.h): only a plugin that passed the check gets its `register_fn`
// called with the host's Registrar.
//
// Plugin authors never write this by hand: `KILN_PLUGIN(name, kind, version, fn)` in a .cpp file
// defines the entry symbol, fills the descriptor from the build and wraps `fn` so that an
// exception thrown during registration reaches the host as a message, not a crash.
#pragma once

#include <stddef.h>
#include <stdint.h>

/// SDK ABI version. Major: a plugin built for another major is refused. Minor: the host accepts
/// plugins of its own or an older minor (new minors only add), and refuses newer ones.
#define KILN_SDK_ABI_MAJOR 1
#define KILN_SDK_ABI_MINOR 3

#ifdef __cplusplus
extern "C" {
#endif

/// What a plugin provides. Frozen values; new kinds get new numbers.
typedef enum kiln_plugin_kind {
  KILN_PLUGIN_KIND_MODEL = 1,   ///< model families
  KILN_PLUGIN_KIND_BACKEND = 2, ///< kernels for ops
  KILN_PLUGIN_KIND_POLICY = 3,  ///< kernel selection policies
} kiln_plugin_kind;

/// Called by the host, once, after the descriptor checks passed. `registrar` is a
/// `kiln::sdk::Registrar*` owned by the host and valid only during the call. On failure the
/// function writes a NUL-terminated message into `error` (capacity `error_size`, owned by the
/// host) and returns non-zero; the host then discards everything the plugin registered.
typedef int (*kiln_register_fn)(void* registrar, char* error, size_t error_size);

/// The descriptor (no typedef: its tag and the entry function share the name `kiln_plugin_info`,
/// so C and C++ code alike write `struct kiln_plugin_info`). The first three fields are frozen
/// forever so that any host can read any plugin's ABI version; later fields belong to ABI major 1.
/// All strings are static, NUL-terminated and owned by the plugin; they stay valid while the plugin
/// is loaded (for the process lifetime).
struct kiln_plugin_info {
  uint32_t struct_size; ///< sizeof(kiln_plugin_info) as the plugin was built
  uint16_t abi_major;   ///< KILN_SDK_ABI_MAJOR of the SDK the plugin was built with
  uint16_t abi_minor;   ///< KILN_SDK_ABI_MINOR of the SDK the plugin was built with

  // Build fingerprint: what must match the host for C++ objects to cross the boundary.
  const char* torch_version; ///< LibTorch "major.minor.patch" the plugin compiled against
  int32_t cxx11_abi;         ///< _GLIBCXX_USE_CXX11_ABI of the plugin's build (0 or 1)
  int32_t cuda_version;      ///< CUDA toolkit of the plugin's CUDA code (e.g. 13000), 0 if none
  const char* compiler;      ///< compiler family and version, e.g. "GNU 12.2.0"

  const char* name;           ///< permanent registry name, [a-z0-9_]+ (e.g. "torch", "glm4_moe")
  uint32_t kind;              ///< a kiln_plugin_kind value
  const char* plugin_version; ///< the plugin's own version string, free-form (e.g. "1.2.0")
  kiln_register_fn register_fn;
};

/// The single exported symbol's name and type.
#define KILN_PLUGIN_ENTRY_SYMBOL "kiln_plugin_info"
typedef const struct kiln_plugin_info* (*kiln_plugin_info_fn)(void);

#ifdef __cplusplus
} // extern "C"
#endif

#ifdef __cplusplus
#include "kiln/sdk/build_info.h"
#include "kiln/sdk/registrar.h"

#include <exception>
#include <string_view>

namespace kiln::sdk::detail {

/// Runs a plugin's registration function, turning any exception into a message for the host.
template <void (*Fn)(Registrar&)>
int guarded_register(void* registrar, char* error, size_t error_size) noexcept {
  auto fail = [&](std::string_view what) {
    if (error == nullptr || error_size == 0) return 1;
    size_t n = what.size() < error_size - 1 ? what.size() : error_size - 1;
    for (size_t i = 0; i < n; ++i) error[i] = what[i];
    error[n] = '\0';
    return 1;
  };
  try {
    Fn(*static_cast<Registrar*>(registrar));
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what());
  } catch (...) {
    return fail("unknown exception");
  }
}

} // namespace kiln::sdk::detail

#define KILN_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

/// Declares this shared library a kiln plugin. Use once, at namespace scope, in one .cpp file:
///
///   void register_my_backend(kiln::sdk::Registrar& r) { r.add_kernel<kiln::ops::RmsNormOp>(...); }
///   KILN_PLUGIN("my_backend", backend, "1.0.0", register_my_backend)
///
/// `kind` is one of model, backend, policy. `fn` is `void fn(kiln::sdk::Registrar&)`; it may
/// throw (kiln::Error or any std::exception): the host then reports the message and skips the
/// whole plugin.
#define KILN_PLUGIN(name_, kind_, version_, fn_)                             \
  KILN_PLUGIN_EXPORT const struct kiln_plugin_info* kiln_plugin_info(void) { \
    static const struct kiln_plugin_info info = {                            \
        sizeof(struct kiln_plugin_info),                                     \
        KILN_SDK_ABI_MAJOR,                                                  \
        KILN_SDK_ABI_MINOR,                                                  \
        KILN_BUILD_TORCH_VERSION,                                            \
        KILN_BUILD_CXX11_ABI,                                                \
        KILN_BUILD_CUDA_VERSION,                                             \
        KILN_BUILD_COMPILER,                                                 \
        name_,                                                               \
        static_cast<uint32_t>(KILN_PLUGIN_KIND_##kind_),                     \
        version_,                                                            \
        &::kiln::sdk::detail::guarded_register<fn_>,                         \
    };                                                                       \
    return &info;                                                            \
  }

#define KILN_PLUGIN_KIND_model KILN_PLUGIN_KIND_MODEL
#define KILN_PLUGIN_KIND_backend KILN_PLUGIN_KIND_BACKEND
#define KILN_PLUGIN_KIND_policy KILN_PLUGIN_KIND_POLICY

#endif // __cplusplus
