# Sourced by scripts/gpu-bench.sh and scripts/cpu-bench.sh: `run NAME LIMIT COMMAND...` runs a
# command under a time limit with its output in $DEST/NAME.log, and adds a line (name, exit
# status, seconds) to the `summary` array the scripts print at the end.
summary=()
run() {  # name limit command...
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$DEST/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-22s rc=%-4s %4ss' "$name" "$rc" "$((SECONDS - start))")")
}
