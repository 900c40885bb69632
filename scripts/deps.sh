#!/usr/bin/env bash
# Installs the Debian packages Tandem builds with, if any is missing (run as root; no-op when
# everything is there). CUDA is not installed here: with /usr/local/cuda present the GPU
# backend is built, without it everything else is.
set -euo pipefail
# cmake: the CMake consumer test (tests/install_consumer.sh) builds against the installed
# package. openmpi-bin, libopenmpi-dev: the MPI cluster (cluster/) and its tests, run with mpirun.
packages=(meson ninja-build g++ pkg-config cmake python3 libasio-dev libconcurrentqueue-dev
          libboost-test-dev libtbb-dev libssl-dev openmpi-bin libopenmpi-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
export DEBIAN_FRONTEND=noninteractive
updated=0
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  apt-get update -qq
  updated=1
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# prometheus, for its promtool: tests/test_metrics.cpp and the hash_server load test check the
# metrics exposition with it, and skip that check visibly without it. Installed on its own and
# without starting the Prometheus server the package ships (a policy-rc.d that refuses service
# starts, as in containers, while it installs); a failure here only skips those checks.
if ! command -v promtool >/dev/null; then
  echo "deps: installing prometheus (for promtool)"
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  if ((updated == 0)); then apt-get update -qq || true; fi
  if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
    echo "deps: prometheus could not be installed; the promtool checks will be skipped"
  fi
  if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
fi
exit 0
