#!/usr/bin/env bash
# Runs the CPU figures of bench/RESULTS.md on this machine in one go: the latency benchmark
# three times (its target is the median of three), throughput twice, fairness with default
# and low-priority workers, the map once, and the server's responsiveness once. Every log
# goes to $OUT (or ./cpu-bench-logs), each run's results also as NAME.json (`--json`, for
# `bash scripts/plots.sh $OUT`); a short table of the RESULT lines is printed last.
#
#   BUILD=build-bench bash scripts/cpu-bench.sh     # any release build with the benchmarks
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-bench}
DEST=${OUT:-./cpu-bench-logs}
mkdir -p "$DEST"
source scripts/bench-run.sh
{ nproc; uname -r; grep -m1 'model name' /proc/cpuinfo; } >"$DEST/cpu-machine.log" 2>&1
b=$BUILD/bench/cpu
for i in 1 2 3; do run "latency_$i" 180 "$b/bench_cpu_latency" --json "$DEST/latency_$i.json"; done
for i in 1 2; do run "throughput_$i" 240 "$b/bench_cpu_throughput" --json "$DEST/throughput_$i.json"; done
run fairness 180 "$b/bench_cpu_fairness" --json "$DEST/fairness.json"
run fairness_low 180 "$b/bench_cpu_fairness" --low-priority --json "$DEST/fairness_low.json"
run fairness_async 180 "$b/bench_cpu_fairness" --async --json "$DEST/fairness_async.json"
[[ -x $b/bench_cpu_map ]] && run map 180 "$b/bench_cpu_map" --json "$DEST/map.json"
[[ -x $b/bench_cpu_metrics_overhead ]] && run metrics_overhead 180 "$b/bench_cpu_metrics_overhead" --json "$DEST/metrics_overhead.json"
[[ -x $BUILD/bench/server/server_responsiveness ]] &&
  run server 300 "$BUILD/bench/server/server_responsiveness" --server "$BUILD/examples/asio/hash_server" --max-seconds 30 \
    --json "$DEST/server.json"
echo "== runs"
printf '%s\n' "${summary[@]}"
echo "== results"
for f in "$DEST"/latency_*.log "$DEST"/throughput_*.log "$DEST"/fairness*.log "$DEST"/map.log "$DEST"/metrics_overhead.log "$DEST"/server.log; do
  [[ -f $f ]] || continue
  grep '^RESULT' "$f" | sed "s|^RESULT |$(basename "$f" .log) |" |
    awk '{printf "%-13s", $1; for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] != "target") printf " %s", kv[2] } printf "\n"}'
done
