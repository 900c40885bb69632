#!/usr/bin/env bash
# Runs the GPU figures on a GPU machine in one go, for bench/RESULTS.md: the placement
# benchmark (bench/hybrid) twice, to show what holds run after run, and the GPU benchmark
# (bench/gpu) once, with the GPU tests first (plain, no sanitizer: scripts/gpu-check.sh does
# those). Prints a short table last; every log goes to $OUT (or ./gpu-bench-logs), and the
# benchmarks' results also as NAME.json (`--json`, for `bash scripts/plots.sh $OUT`).
#
#   bash scripts/build-device.sh          # on the dev box
#   BUILD=build-device bash scripts/gpu-bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-device}
DEST=${OUT:-./gpu-bench-logs}
mkdir -p "$DEST"
unset BOOST_TEST_REPORT_FORMAT BOOST_TEST_REPORT_LEVEL BOOST_TEST_REPORT_SINK BOOST_TEST_LOG_SINK
source scripts/bench-run.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$DEST/machine.log" 2>&1
nproc >>"$DEST/machine.log"
for t in "$BUILD"/tests/gpu/test_gpu*; do
  [[ -x $t && -f $t ]] && run "$(basename "$t")" 120 "$t" --report_level=short --color_output=no
done
[[ -x $BUILD/tests/test_placement ]] && run test_placement 60 "$BUILD/tests/test_placement" --report_level=short --color_output=no
run hybrid_1 150 "$BUILD/bench/hybrid/hybrid" --json "$DEST/hybrid_1.json"
run hybrid_2 150 "$BUILD/bench/hybrid/hybrid" --json "$DEST/hybrid_2.json"
run gpu_bench 200 "$BUILD/bench/gpu/gpu_bench" --json "$DEST/gpu_bench.json"
# A separate, short run that records the engine's trace (for bench/plot.py's timeline).
run gpu_trace 120 "$BUILD/bench/gpu/gpu_bench" --quick --trace "$DEST/gpu_trace.json"
echo "== runs"
printf '%s\n' "${summary[@]}"
for f in hybrid_1 hybrid_2; do
  echo "== $f"
  grep -A6 '^op  ' "$DEST/$f.log" || tail -n 8 "$DEST/$f.log"
done
echo "== gpu_bench"
grep '^RESULT' "$DEST/gpu_bench.log" || tail -n 8 "$DEST/gpu_bench.log"
