#!/usr/bin/env bash
# Installs kiln (CLI, plugins, SDK) into a fresh prefix, builds the SDK example plugin out of
# tree against that prefix alone (find_package(KilnSDK) must find LibTorch by itself), and loads
# it with the installed CLI.
#   sdk_example.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
build="$1"; source="$2"; work="$3"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" >/dev/null
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$source/sdk/examples/scaled_rms_norm" -B "$work/example" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$work/prefix" "${launcher[@]}" >/dev/null
cmake --build "$work/example" >/dev/null
plugin="$work/example/libkiln-backend-example.so"
test -f "$plugin" || { echo "FAIL: $plugin was not built"; exit 1; }

# Only the entry symbol is exported.
exported="$(nm -D --defined-only "$plugin" | awk '$2 == "T" || $2 == "W" || $2 == "D" || $2 == "B" || $2 == "V" {print $3}' | sort -u)"
if [ "$exported" != "kiln_plugin_info" ]; then
  echo "FAIL: the plugin exports more than kiln_plugin_info:"; echo "$exported" | head; exit 1
fi

out="$("$work/prefix/bin/kiln" plugins --verbose --plugin "$plugin" 2>&1)"
echo "$out"
grep -q "^loaded   backend example " <<<"$out" || { echo "FAIL: example plugin not loaded"; exit 1; }
grep -q "provides kernel rms_norm/example/cpu" <<<"$out" || { echo "FAIL: no rms_norm kernel"; exit 1; }
grep -q "^loaded   backend torch " <<<"$out" || { echo "FAIL: installed torch backend not loaded"; exit 1; }

# A recipe can select it per op.
cat >"$work/ab.toml" <<TOML
[model]
family = "toy"
[model.config]
vocab_size = 11
[backend]
default = "auto"
[backend.ops]
rms_norm = "example"
TOML
"$work/prefix/bin/kiln" recipe check "$work/ab.toml" --plugin "$plugin" \
  --plugin "$build/tests/plugins/toy/libkiln-model-toy.so"
echo "PASS"
