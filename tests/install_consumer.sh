#!/usr/bin/env bash
# Installs the build into a scratch directory and builds the quick starts as an outside
# program would: `c++ prog.cpp $(pkg-config --cflags --libs tandem)`, then runs them.
# usage: install_consumer.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(realpath "$1"); src=$(realpath "$2")
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
meson install -C "$build" --destdir "$scratch/root" --no-rebuild --quiet >/dev/null
pc=$(find "$scratch/root" -name tandem.pc | head -n1)
[[ -n "$pc" ]] || { echo "no tandem.pc installed"; exit 1; }
prefix=$(sed -n 's/^prefix=//p' "$pc")
export PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --define-variable=prefix="$scratch/root$prefix" --cflags --libs tandem)
echo "pkg-config --cflags --libs tandem: $flags"
for prog in seed engine; do
  ${CXX:-c++} -O2 -o "$scratch/$prog" "$src/examples/quickstart/$prog.cpp" $flags
  "$scratch/$prog"
  echo "$prog: built against the installed library and passed"
done
# The Asio quick start (issue #4), when standalone Asio is installed.
if echo '#include <asio.hpp>' | ${CXX:-c++} -std=c++20 -fsyntax-only -x c++ - 2>/dev/null; then
  ${CXX:-c++} -O2 -o "$scratch/asio_quickstart" "$src/tests/asio/asio_quickstart.cpp" $flags
  "$scratch/asio_quickstart"
  echo "asio_quickstart: built against the installed library and passed"
fi
# The GPU quick start (issue #3), with nvcc, when the library was built with CUDA; it passes
# with or without a GPU present.
if [[ -f "$scratch/root$prefix/include/tandem/gpu/map.cuh" ]] && command -v nvcc >/dev/null; then
  nvcc -std=c++20 -O2 -gencode=arch=compute_90,code=sm_90 -o "$scratch/add_one" "$src/examples/gpu/add_one.cu" \
    $(echo "$flags" | sed 's/-pthread/-Xcompiler=-pthread/g')
  "$scratch/add_one"
  echo "add_one: built with nvcc against the installed library and passed"
fi
# Every public header compiles on its own.
skip=()
echo '#include <asio.hpp>' | ${CXX:-c++} -std=c++20 -fsyntax-only -x c++ - 2>/dev/null || skip=(! -name asio.hpp)
for h in $(cd "$scratch/root$prefix/include" && find tandem -name '*.hpp' "${skip[@]}"); do
  echo "#include <$h>" | ${CXX:-c++} -fsyntax-only -x c++ - $flags || { echo "$h does not compile alone"; exit 1; }
done
echo "every public header compiles on its own"
