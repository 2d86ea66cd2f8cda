# kiln_add_plugin(<name> KIND <model|backend|policy> SOURCES <files...> [OUTPUT_DIRECTORY <dir>])
#
# Builds a kiln plugin: a MODULE library named libkiln-<kind>-<name>.so that links only the SDK
# (and through it LibTorch), compiled with hidden visibility so that the one symbol the host looks
# up, kiln_plugin_info, is the only one exported. Used by kiln's own plugins and, from the installed
# KilnSDK package, by third-party plugins alike.
include_guard(GLOBAL)

function(kiln_add_plugin name)
  cmake_parse_arguments(ARG "" "KIND;OUTPUT_DIRECTORY" "SOURCES" ${ARGN})
  if(NOT ARG_KIND MATCHES "^(model|backend|policy)$")
    message(FATAL_ERROR "kiln_add_plugin(${name}): KIND must be model, backend or policy (found '${ARG_KIND}')")
  endif()
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "kiln_add_plugin(${name}): SOURCES is empty")
  endif()
  if(NOT name MATCHES "^[a-z0-9_]+$")
    message(FATAL_ERROR "kiln_add_plugin(${name}): the name must be lower-case letters, digits and '_'")
  endif()

  set(target "kiln-${ARG_KIND}-${name}")
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE kiln::sdk)
  set_target_properties(${target} PROPERTIES
    PREFIX "lib"
    OUTPUT_NAME "kiln-${ARG_KIND}-${name}"
    CXX_VISIBILITY_PRESET hidden
    CUDA_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    INSTALL_RPATH "$ORIGIN/../..")
  # Exactly one exported symbol, whatever the compiler emits with default visibility (typeinfo
  # of std templates, weak inline functions) and whatever static archives bring along.
  set(version_script "${CMAKE_CURRENT_BINARY_DIR}/kiln-plugin-exports.map")
  if(NOT EXISTS "${version_script}")
    file(WRITE "${version_script}" "{\n  global: kiln_plugin_info;\n  local: *;\n};\n")
  endif()
  target_link_options(${target} PRIVATE "LINKER:--version-script=${version_script}"
    "LINKER:--exclude-libs,ALL" "LINKER:--no-undefined")
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS "${version_script}")
  target_compile_definitions(${target} PRIVATE KILN_PLUGIN_TARGET_NAME="${name}")

  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${ARG_OUTPUT_DIRECTORY}")
  elseif(DEFINED KILN_PLUGIN_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${KILN_PLUGIN_OUTPUT_DIRECTORY}")
  endif()
  if(COMMAND kiln_use_torch_pch)
    kiln_use_torch_pch(${target})
  endif()
endfunction()
