#!/usr/bin/env bash
# Runs the cluster benchmark (bench/cluster) in every mode with mpirun on this host, for
# bench/RESULTS.md, then prints a short table:
#   GPU build (cluster_bench):    1 rank x 1 GPU, 1 rank x 2 GPUs, 2 ranks x 1 GPU each
#   always (cluster_bench_cpu):   1 rank and 2 ranks on the CPU workers alone
# each against one rank with one GPU (or all cores) measured in the same run. Also runs the
# cluster tests and the SHA-256 cluster example once. Logs and --json files go to $OUT
# (default ./cluster-bench-logs).
#
# Built on the dev box against Debian's Open MPI, run where only an Open MPI 4.1 runtime is
# (mpirun, libmpi.so.40; the same ABI): no network is needed, ranks talk over shared memory.
#   bash scripts/build-device.sh                # builds build-device/ (static Boost, cudart, libcrypto)
#   BUILD=build-device bash scripts/cluster-bench.sh
# Extra mpirun arguments: MPIRUN_ARGS="..." (e.g. "--mca btl_vader_single_copy_mechanism none"
# where the kernel refuses cross-process memory copies; the script falls back to that itself
# when a first short run fails).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-device}
DEST=${OUT:-./cluster-bench-logs}
mkdir -p "$DEST"
unset BOOST_TEST_REPORT_FORMAT BOOST_TEST_REPORT_LEVEL BOOST_TEST_REPORT_SINK BOOST_TEST_LOG_SINK
# As root (the GPU hosts), Open MPI wants both; no network: self and shared memory only, and
# the ob1 messaging layer (not UCX, which may be installed without being usable here).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 OMPI_MCA_btl_base_warn_component_unused=0
extra=(${MPIRUN_ARGS:-})
MPIRUN=${MPIRUN:-mpirun}
command -v "$MPIRUN" >/dev/null || { echo "cluster-bench: $MPIRUN not found (Open MPI's mpirun is needed)"; exit 1; }
source scripts/bench-run.sh

{ "$MPIRUN" --version | head -1; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null; nproc; } \
  >"$DEST/machine.log" 2>&1

# mpirun on this host, ranks not bound to cores (each rank's engine has threads of its own).
mpi() { "$MPIRUN" --oversubscribe --bind-to none "${extra[@]}" -np "$@"; }

cpu_bench=$BUILD/bench/cluster/cluster_bench_cpu
gpu_bench=$BUILD/bench/cluster/cluster_bench
[[ -x $cpu_bench ]] || { echo "cluster-bench: $cpu_bench not built (MPI not found at build time?)"; exit 1; }

# A first short run: if the default shared-memory single copy (CMA) is refused, use none.
if ! mpi 2 "$cpu_bench" --quick --tasks 65536 --light-tasks 1048576 --repeats 1 >"$DEST/probe.log" 2>&1; then
  echo "cluster-bench: the first run failed (see $DEST/probe.log); retrying without single-copy shared memory"
  extra+=(--mca btl_vader_single_copy_mechanism none)
  mpi 2 "$cpu_bench" --quick --tasks 65536 --light-tasks 1048576 --repeats 1 >"$DEST/probe.log" 2>&1 \
    || { echo "cluster-bench: MPI does not run here:"; tail -n 20 "$DEST/probe.log"; exit 1; }
fi

MPI=("$MPIRUN" --oversubscribe --bind-to none "${extra[@]}" -np)  # what `run` (timeout) can call
runs=()
if [[ -x $gpu_bench ]]; then
  gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
  run gpu_1x1 300 "${MPI[@]}" 1 "$gpu_bench" --gpus-per-rank 1 --json "$DEST/gpu_1x1.json"; runs+=(gpu_1x1)
  if ((gpus >= 2)); then
    run gpu_1x2 300 "${MPI[@]}" 1 "$gpu_bench" --gpus-per-rank 2 --json "$DEST/gpu_1x2.json"; runs+=(gpu_1x2)
    run gpu_2x1 300 "${MPI[@]}" 2 "$gpu_bench" --gpus-per-rank 1 --json "$DEST/gpu_2x1.json"; runs+=(gpu_2x1)
  else
    echo "cluster-bench: $gpus GPU(s): the 2-GPU modes need 2" | tee -a "$DEST/machine.log"
  fi
fi
run cpu_1 300 "${MPI[@]}" 1 "$cpu_bench" --gpus-per-rank 0 --rounds 256 --tasks 4194304 --light-tasks 33554432 --json "$DEST/cpu_1.json"; runs+=(cpu_1)
run cpu_2 300 "${MPI[@]}" 2 "$cpu_bench" --gpus-per-rank 0 --rounds 256 --tasks 4194304 --light-tasks 33554432 --json "$DEST/cpu_2.json"; runs+=(cpu_2)
[[ -x $BUILD/tests/test_cluster ]] &&
  run test_cluster 300 "${MPI[@]}" 3 "$BUILD/tests/test_cluster" --report_level=short --color_output=no
[[ -x $BUILD/examples/cluster/sha256_cluster ]] &&
  run sha256_cluster 300 "${MPI[@]}" 3 "$BUILD/examples/cluster/sha256_cluster" 1000000 3

echo "== runs"
printf '%s\n' "${summary[@]}"
for r in "${runs[@]}"; do
  echo "== $r"
  sed -n '/^== cluster:/,$p' "$DEST/$r.log" || tail -n 6 "$DEST/$r.log"
done
