#!/usr/bin/env bash
# Builds the binaries that run on a GPU machine without Debian's -dev packages: release,
# sm_90, Boost.Test, cudart and libcrypto linked statically, into build-device/.
# Meson 1.0 does not track the headers that nvcc includes, so every .cu file is touched first
# (otherwise a changed engine header can leave .cu objects built against the old layout).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
find . -path ./subprojects -prune -o \( -name '*.cu' -o -name '*.cuh' \) -print | grep -v '^./build' | xargs -r touch
[[ -d build-device ]] || meson setup build-device -Dbuildtype=release -Dstatic_runtime=true -Dgpu=enabled >/dev/null
ninja -C build-device
