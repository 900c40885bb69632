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
# Every public header compiles on its own.
for h in $(cd "$scratch/root$prefix/include" && find tandem -name '*.hpp' ! -name asio.hpp); do
  echo "#include <$h>" | ${CXX:-c++} -fsyntax-only -x c++ - $flags || { echo "$h does not compile alone"; exit 1; }
done
echo "every public header compiles on its own"
