#!/usr/bin/env bash
# Installs the Debian packages Tandem builds with, if any is missing (run as root; no-op when
# everything is there). CUDA is not installed here: with /usr/local/cuda present the GPU
# backend is built, without it everything else is.
set -euo pipefail
# cmake: the CMake consumer test (tests/install_consumer.sh) builds against the installed
# package. prometheus: for its promtool, which tests/test_metrics.cpp and the hash_server load
# test run over the metrics exposition (they skip that check, visibly, without it).
packages=(meson ninja-build g++ pkg-config cmake python3 libasio-dev libconcurrentqueue-dev
          libboost-test-dev libtbb-dev libssl-dev prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
