// A shared library that is not a kiln plugin: no kiln_plugin_info symbol.
extern "C" __attribute__((visibility("default"))) int some_other_library_function() {
  return 42;
}
