#!/usr/bin/env bash
# Turns a directory of benchmark --json files and trace JSON files into PNG plots
# (bench/plot.py; needs matplotlib: apt-get install python3-matplotlib).
#
#   bash scripts/plots.sh DIR [OUT] [bench/plot.py options, e.g. --window-ms 2,7]
#
# OUT defaults to DIR/plots. The logs directories of scripts/cpu-bench.sh and
# scripts/gpu-bench.sh hold the --json files those runs write.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n '2,9p' "$0"; exit 2; }
dir=$1
out=${2:-$dir/plots}
shift $(( $# >= 2 ? 2 : 1 ))
# A python3 that can import matplotlib: $PYTHON, else python3, else Debian's /usr/bin/python3
# (a pyenv or venv python3 first on PATH often lacks the Debian package).
for py in ${PYTHON:-} python3 /usr/bin/python3; do
  if "$py" -c 'import matplotlib' 2>/dev/null; then
    exec "$py" bench/plot.py --out "$out" "$@" "$dir"
  fi
done
echo "no python3 with matplotlib found: apt-get install python3-matplotlib (or set PYTHON)" >&2
exit 1
