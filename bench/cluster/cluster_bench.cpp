// A cluster of engines over MPI against one rank with one GPU, in the same run:
//   2 ranks x 1 GPU each   (mpirun -np 2 cluster_bench --gpus-per-rank 1)
//   1 rank  x 2 GPUs       (mpirun -np 1 cluster_bench --gpus-per-rank 2)
//   1 rank  x 1 GPU        (mpirun -np 1 cluster_bench --gpus-per-rank 1: the baseline itself)
// for a compute-heavy op (`mix_R`: R mixing steps per 4-byte task; target: 2 ranks >= 1.8x one
// rank) and a transfer-bound one (`scramble`: one multiply-add per task, so the copies, over
// MPI and over PCIe, are everything).
//
// The leader (rank 0) first measures the baseline on an engine of its own with one GPU (and
// every CPU core of its host), then the same batches through the cluster, after warm-up
// batches that calibrate every rank's model; medians of `--repeats` batches. It checks that
// the cluster's outputs are bit-identical to the baseline's and prints a table; `--json FILE`
// writes the figures (bench/json_out.hpp). The CPU-only build (cluster_bench_cpu) runs the
// same ops on CPU workers alone: `--gpus-per-rank 0`.
//
// MPI here is not CUDA-aware: payloads and results cross MPI in host memory, each rank's in
// its engine's page-locked memory, from which its GPUs copy. The cluster's batches are built
// in the leader engine's page-locked memory, as the baseline's are (`--pageable`: on the heap,
// which adds a staging copy on the leader's GPU path that the baseline does not pay).
//
//   usage: cluster_bench [--quick] [--gpus-per-rank N] [--tasks N] [--light-tasks N]
//                        [--rounds N] [--repeats N] [--workers N] [--pageable] [--json FILE]
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <tandem/cluster.hpp>
#include <tandem/tandem.hpp>

#include "../json_out.hpp"
#include "../mix_ops.hpp"
#include "ops.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
    bool quick = false;
    std::size_t gpus_per_rank = 1;
    std::size_t tasks = std::size_t{32} << 20;        // heavy op: 32 Mi tasks (128 MiB)
    std::size_t light_tasks = std::size_t{64} << 20;  // transfer-bound op: 64 Mi tasks (256 MiB)
    std::uint32_t rounds = 4096;
    int repeats = 7;
    std::size_t workers = 0;  // 0: the host's threads shared among its ranks
    bool pageable = false;    // the cluster's batches in pageable memory (the baseline's stay page-locked)
    std::string json;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "%s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--quick") {
            o.quick = true;
        } else if (a == "--gpus-per-rank") {
            o.gpus_per_rank = std::stoul(next());
        } else if (a == "--tasks") {
            o.tasks = std::stoul(next());
        } else if (a == "--light-tasks") {
            o.light_tasks = std::stoul(next());
        } else if (a == "--rounds") {
            o.rounds = static_cast<std::uint32_t>(std::stoul(next()));
        } else if (a == "--repeats") {
            o.repeats = std::max(1, std::stoi(next()));
        } else if (a == "--workers") {
            o.workers = std::stoul(next());
        } else if (a == "--pageable") {
            o.pageable = true;
        } else if (a == "--json") {
            o.json = next();
        } else {
            std::fprintf(stderr,
                         "usage: cluster_bench [--quick] [--gpus-per-rank N] [--tasks N] [--light-tasks N] "
                         "[--rounds N] [--repeats N] [--workers N] [--pageable] [--json FILE]\n");
            std::exit(2);
        }
    }
    if (o.quick) {
        o.tasks = std::min(o.tasks, std::size_t{4} << 20);
        o.light_tasks = std::min(o.light_tasks, std::size_t{8} << 20);
        o.repeats = std::min(o.repeats, 3);
    }
    return o;
}

/// Ranks on this host, from the launcher's environment (1 when none says).
int local_size() {
    for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MPI_LOCALNRANKS"}) {
        if (const char* v = std::getenv(name)) {
            const int n = std::atoi(v);
            if (n > 0) return n;
        }
    }
    return 1;
}

std::size_t host_threads() {
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : hw;
}

tandem::EngineConfig engine_config(std::size_t first_gpu, std::size_t gpus, std::size_t workers) {
    tandem::EngineConfig c;
    c.gpu.enabled = gpus > 0;
    c.gpu.first_device = first_gpu;
    c.gpu.max_devices = gpus;
    c.cpu_workers = std::max<std::size_t>(1, workers);
    return c;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

/// Runs `batches` batches of `values` through `submit` (after `warm` unmeasured ones); the
/// median seconds, and the last batch's result.
template <class Submit>
double time_batches(Submit&& submit, int warm, int batches, tandem::BatchResult<std::uint32_t>& last) {
    std::vector<double> times;
    for (int i = 0; i < warm + batches; ++i) {
        auto [t, result] = submit();
        if (i >= warm) times.push_back(t);
        last = std::move(result);
    }
    return median(times);
}

struct Row {
    std::string op;
    std::size_t tasks = 0;
    double base_s = 0, mode_s = 0;
    bool identical = false;
    std::vector<tandem::RankStats> ranks;
};

}  // namespace

int main(int argc, char** argv) {
    const Options opt = parse(argc, argv);
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    if (provided < MPI_THREAD_SERIALIZED) {
        std::fprintf(stderr, "MPI_THREAD_SERIALIZED is not available\n");
        return 1;
    }
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const bench::cluster::Ops ops = bench::cluster::make_ops(opt.rounds);
    const std::size_t gpr = ops.gpu ? opt.gpus_per_rank : 0;
    const int on_host = local_size();
    const std::size_t workers = opt.workers != 0 ? opt.workers
                                                 : std::max<std::size_t>(1, host_threads() / static_cast<std::size_t>(on_host) - gpr);
    const std::string mode = std::to_string(size) + " rank" + (size > 1 ? "s" : "") + " x " + std::to_string(gpr) +
                             (ops.gpu ? " GPU" : " (CPU only)") + (gpr > 1 ? "s" : "");
    const int warm = 5;  // > the cluster models' 3 samples, and the engine's
    const int repeats = opt.repeats;

    std::mt19937 rng{2026};
    std::vector<std::uint32_t> heavy_values, light_values;
    std::vector<Row> rows;
    std::string gpu_name;
    int gpu_count = 0;

    // ---- the baseline: one rank, one GPU (or every core, CPU only), on the leader alone --
    if (rank == 0) {
        heavy_values.resize(opt.tasks);
        for (auto& v : heavy_values) v = rng();
        light_values.resize(opt.light_tasks);
        for (auto& v : light_values) v = rng();
        tandem::Engine base{engine_config(0, ops.gpu ? 1 : 0, host_threads() - (ops.gpu ? 1 : 0))};
        if (base.gpu_count() > 0) gpu_name = base.gpus().at(0).name;
        for (auto* which : {&ops.heavy, &ops.light}) {
            const auto& values = which == &ops.heavy ? heavy_values : light_values;
            Row row;
            row.op = which->name();
            row.tasks = values.size();
            tandem::BatchResult<std::uint32_t> last;
            row.base_s = time_batches(
                [&] {
                    auto batch = tandem::Batch<std::uint32_t>::dense(values, 0, base.pinned_memory());
                    const auto t0 = Clock::now();
                    auto r = base.submit(*which, std::move(batch)).get();
                    return std::pair{std::chrono::duration<double>(Clock::now() - t0).count(), std::move(r)};
                },
                warm, repeats, last);
            std::printf("baseline 1 rank x %s: %s, %zu tasks: %.2f ms (median of %d)\n", ops.gpu ? "1 GPU" : "all cores",
                        row.op.c_str(), values.size(), row.base_s * 1e3, repeats);
            rows.push_back(std::move(row));
        }
    }

    // The other ranks wait for the leader's baseline without spinning (a blocking MPI call
    // would busy-poll a core the baseline needs): a non-blocking barrier, tested every ms.
    {
        MPI_Request barrier;
        MPI_Ibarrier(MPI_COMM_WORLD, &barrier);
        int done = 0;
        while (!done) {
            MPI_Test(&barrier, &done, MPI_STATUS_IGNORE);
            if (!done) std::this_thread::sleep_for(std::chrono::milliseconds{1});
        }
    }

    // ---- the mode under test ----------------------------------------------------------------
    {
        const int local = tandem::local_rank();
        tandem::Engine engine{engine_config(static_cast<std::size_t>(local) * gpr, gpr, workers)};
        if (gpr > 0 && engine.gpu_count() < gpr) {
            std::fprintf(stderr, "rank %d: %zu GPU(s) asked for, %zu found\n", rank, gpr, engine.gpu_count());
        }
        gpu_count = static_cast<int>(engine.gpu_count());
        tandem::Cluster cluster{engine};
        cluster.add(ops.heavy);
        cluster.add(ops.light);
        cluster.start();
        if (cluster.is_leader()) {
            for (Row& row : rows) {
                const auto* which = row.op == ops.heavy.name() ? &ops.heavy : &ops.light;
                const auto& values = which == &ops.heavy ? heavy_values : light_values;
                tandem::BatchResult<std::uint32_t> last;
                row.mode_s = time_batches(
                    [&] {
                        // As the baseline's: in the leader engine's page-locked memory (where
                        // a service that feeds a GPU builds its batches), unless --pageable.
                        auto batch = tandem::Batch<std::uint32_t>::dense(values, 0, opt.pageable ? tandem::default_batch_memory()
                                                                                                 : engine.pinned_memory());
                        const auto t0 = Clock::now();
                        auto r = cluster.submit(*which, std::move(batch)).get();
                        return std::pair{std::chrono::duration<double>(Clock::now() - t0).count(), std::move(r)};
                    },
                    warm, repeats, last);
                row.ranks = last.stats.ranks;
                // Bit-identical to the op run on the host (every task: cheap beside the runs).
                bool same = last.results.size() == values.size();
                if (which == &ops.heavy) {
                    const bench::Mix mix{opt.rounds};
                    for (std::size_t i = 0; same && i < values.size(); i += 97) same = last.results.outputs()[i] == mix(values[i]);
                } else {
                    const bench::Scramble scramble{};
                    for (std::size_t i = 0; same && i < values.size(); ++i) same = last.results.outputs()[i] == scramble(values[i]);
                }
                row.identical = same;
            }
        }
        cluster.shutdown();
    }

    int status = 0;
    if (rank == 0) {
        std::printf("\n== cluster: %s (%d rank(s) on this host, %zu CPU workers per rank%s%s; batches %s)\n", mode.c_str(),
                    on_host, workers, gpu_name.empty() ? "" : ", ", gpu_name.c_str(),
                    opt.pageable ? "pageable" : "page-locked");
        std::printf("%-12s %10s %14s %14s %9s  %s\n", "op", "tasks", "1x1 ms", "mode ms", "speedup", "shares (rank: tasks, ms on rank)");
        bench::json::Report report{"cluster"};
        report.set_command(argc, argv);
        report.set_gpu(gpu_name, gpu_count);
        for (const Row& row : rows) {
            const double speedup = row.mode_s > 0 ? row.base_s / row.mode_s : 0;
            std::string shares;
            for (const auto& r : row.ranks) {
                char b[96];
                std::snprintf(b, sizeof b, "%s%d: %llu, %.1f", shares.empty() ? "" : "; ", r.rank,
                              static_cast<unsigned long long>(r.tasks), static_cast<double>(r.time.count()) / 1e6);
                shares += b;
            }
            std::printf("%-12s %10zu %14.2f %14.2f %8.2fx  %s%s\n", row.op.c_str(), row.tasks, row.base_s * 1e3,
                        row.mode_s * 1e3, speedup, shares.c_str(), row.identical ? "" : "  OUTPUTS DIFFER");
            if (!row.identical) status = 3;
            const bool heavy = row.op == ops.heavy.name();
            const bool target = heavy && size == 2 && gpr == 1 && ops.gpu;  // the figure
            const double n = static_cast<double>(row.tasks);
            report.add({row.op + "_" + std::to_string(size) + "x" + std::to_string(gpr) + "_speedup", n / row.mode_s,
                        n / row.base_s, "tasks/s", speedup, target ? ">=" : "", target ? 1.8 : 0, speedup >= 1.8});
        }
        report.extra("mode", [&](bench::json::Writer& w) {
            w.begin_object();
            w.member("ranks", size).member("gpus_per_rank", static_cast<std::uint64_t>(gpr));
            w.member("ranks_on_host", on_host).member("cpu_workers_per_rank", static_cast<std::uint64_t>(workers));
            w.end_object();
        });
        report.extra("shares", [&](bench::json::Writer& w) {
            w.begin_array();
            for (const Row& row : rows) {
                for (const auto& r : row.ranks) {
                    w.begin_object();
                    w.member("op", row.op).member("rank", r.rank).member("tasks", static_cast<std::uint64_t>(r.tasks));
                    w.member("gpu_tasks", static_cast<std::uint64_t>(r.gpu_tasks));
                    w.member("time_ms", static_cast<double>(r.time.count()) / 1e6);
                    w.member("round_trip_ms", static_cast<double>(r.round_trip.count()) / 1e6);
                    w.member("bytes_sent", static_cast<std::uint64_t>(r.bytes_sent));
                    w.end_object();
                }
            }
            w.end_array();
        });
        if (!opt.json.empty() && !report.write(opt.json)) status = status ? status : 4;
    }
    MPI_Finalize();
    return status;
}
