#!/usr/bin/env bash
# Builds and runs every test: the release build (GPU backend too when CUDA is installed; GPU
# tests skip visibly without a device), then the address+undefined and thread sanitizer builds.
# Ends with one line "N passed, N failed, N skipped" summed over all three.
#
#   bash scripts/test.sh            # all three configurations
#   bash scripts/test.sh release    # one of: release asan tsan
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh || exit 1
source scripts/env.sh

configs=("$@")
((${#configs[@]})) || configs=(release asan tsan)
werror=()
[[ "${CI:-}" == "true" ]] && werror=(--werror)
jobs=$(nproc)

summaries=()
for config in "${configs[@]}"; do
  case "$config" in
    release) dir=build-test; opts=(-Dbuildtype=release) ;;
    asan) dir=build-asan; opts=(-Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false -Dgpu=disabled -Dbenchmarks=false) ;;
    # -Wno-tsan: GCC warns that TSan does not model the standalone fences in the actors' and
    # the job's headers (the Dekker handshakes in Parker and JobCore::wait_until).
    tsan) dir=build-tsan; opts=(-Dbuildtype=debugoptimized -Db_sanitize=thread -Dgpu=disabled -Dbenchmarks=false -Dcpp_args=-Wno-tsan) ;;
    *) echo "unknown configuration $config (release, asan, tsan)"; exit 2 ;;
  esac
  echo "=== $config ($dir)"
  if [[ -d $dir ]]; then
    meson setup --reconfigure "$dir" "${opts[@]}" "${werror[@]}" >"$dir.setup.log" 2>&1
  else
    meson setup "$dir" "${opts[@]}" "${werror[@]}" >"$dir.setup.log" 2>&1
  fi || { cat "$dir.setup.log"; summaries+=("0 passed, 1 failed"); continue; }
  if ! ninja -C "$dir" -j "$jobs"; then
    summaries+=("0 passed, 1 failed")
    continue
  fi
  rm -rf "$dir/test-reports" && mkdir -p "$dir/test-reports"
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp"
  meson test -C "$dir" --print-errorlogs --num-processes 1 --timeout-multiplier 4 --no-rebuild
  summaries+=("$(python3 scripts/test-summary.py "$dir")")
  echo "$config: ${summaries[-1]}"
done
python3 scripts/test-summary.py --sum "${summaries[@]}"
