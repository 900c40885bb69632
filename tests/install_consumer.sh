#!/usr/bin/env bash
# Installs the build into a scratch directory and builds the quick starts as an outside
# program would, then runs them: with the README's one-liners,
# `c++ -O2 -o prog prog.cpp $(pkg-config --cflags --libs tandem)` and, in a GPU build,
# `nvcc -O2 -arch=sm_90 -o prog prog.cu $(pkg-config --cflags --libs tandem)`; then, when cmake
# is installed, through the CMake package (tests/cmake_consumer/).
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
# The GPU quick start (issue #3), with nvcc and the same flags as c++, when the library was
# built with CUDA; it passes with or without a GPU present.
gpu=false
[[ -f "$scratch/root$prefix/include/tandem/gpu/map.cuh" ]] && command -v nvcc >/dev/null && gpu=true
if $gpu; then
  nvcc -O2 -arch=sm_90 -o "$scratch/add_one" "$src/examples/gpu/add_one.cu" $flags
  "$scratch/add_one"
  echo "add_one: built with nvcc against the installed library and passed"
fi
# The CMake package: find_package(tandem CONFIG) from the moved (DESTDIR) tree, tandem::tandem
# for the quick starts and, in a GPU build, tandem::gpu for add_one.cu in CMake's CUDA language.
if command -v cmake >/dev/null; then
  config=$(find "$scratch/root" -name tandemConfig.cmake | head -n1)
  [[ -n "$config" ]] || { echo "cmake is installed but no tandemConfig.cmake was"; exit 1; }
  cmake_args=(-DCMAKE_PREFIX_PATH="$scratch/root$prefix" -DTANDEM_SOURCE_DIR="$src")
  $gpu && cmake_args+=(-DWITH_CUDA=ON -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCMAKE_CUDA_ARCHITECTURES=90)
  cmake -S "$src/tests/cmake_consumer" -B "$scratch/cmake" "${cmake_args[@]}" >"$scratch/cmake.log" 2>&1 ||
    { cat "$scratch/cmake.log"; exit 1; }
  grep '^-- tandem ' "$scratch/cmake.log"
  # The package found must be the one just installed, not one elsewhere on the system.
  found=$(sed -n 's/^tandem_DIR:PATH=//p' "$scratch/cmake/CMakeCache.txt")
  [[ "$found" == "$scratch/root"* ]] || { echo "find_package found tandem in $found"; exit 1; }
  cmake --build "$scratch/cmake" --parallel 2 >"$scratch/cmake-build.log" 2>&1 ||
    { cat "$scratch/cmake-build.log"; exit 1; }
  programs=(seed engine)
  $gpu && programs+=(add_one)
  for prog in "${programs[@]}"; do
    "$scratch/cmake/$prog"
    echo "$prog: built with CMake against the installed package and passed"
  done
fi
# Every public header compiles on its own.
skip=()
echo '#include <asio.hpp>' | ${CXX:-c++} -std=c++20 -fsyntax-only -x c++ - 2>/dev/null || skip=(! -name asio.hpp)
for h in $(cd "$scratch/root$prefix/include" && find tandem -name '*.hpp' "${skip[@]}"); do
  echo "#include <$h>" | ${CXX:-c++} -fsyntax-only -x c++ - $flags || { echo "$h does not compile alone"; exit 1; }
done
echo "every public header compiles on its own"
