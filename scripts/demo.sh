#!/usr/bin/env bash
# The main demo: installs what is missing, builds (release; the GPU backend too when CUDA is
# installed), and hashes one million messages with SHA-256 through the engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
source scripts/env.sh
[[ -d build-demo ]] || meson setup build-demo -Dbuildtype=release -Dtests=false -Dbenchmarks=false >/dev/null
ninja -C build-demo examples/demo/sha256_demo
./build-demo/examples/demo/sha256_demo "$@"
