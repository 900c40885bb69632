// The cost of recording the metrics histograms (`EngineConfig::record_histograms`): the same
// work through two engines in one process, one recording (the default) and one not, in
// alternating rounds so that drift on the machine hits both alike. Two workloads:
//
//   1-task batches      submit -> get(), one after another: the per-batch cost at its most
//                       visible (a round trip is a few microseconds)
//   100 µs tasks        batches of --tasks tasks that each spin 100 µs, on every worker
//
// For each, the ratio recording / not recording of the time per batch: the median of the
// per-round ratios (each round runs both engines back to back). Target (DESIGN.md, "metrics +
// trace overhead"): <= 1.02.

#include "bench_util.hpp"

#include <tandem/tandem.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr const char* usage =
    "usage: bench_cpu_metrics_overhead [--quick] [--rounds=N] [--batches=N] [--task-batches=N] [--tasks=N]\n"
    "  --rounds        alternating rounds per workload (default 21; --quick 5)\n"
    "  --batches       1-task batches per engine per round (default 4000; --quick 500)\n"
    "  --task-batches  batches of 100 us tasks per engine per round (default 100; --quick 20)\n"
    "  --tasks         100 us tasks per batch (default: 4 per worker)";

/// Spins for `d` (a task that computes for about that long).
std::uint64_t spin_for(std::chrono::nanoseconds d) {
    const auto until = bench::Clock::now() + d;
    std::uint64_t n = 0;
    while (bench::Clock::now() < until) ++n;
    return n;
}

/// Runs `batches` batches of `tasks` tasks of `op` through `engine`, one after another;
/// returns nanoseconds per batch.
double run(tandem::Engine& engine, const tandem::Op<std::uint64_t, std::uint64_t>& op, std::size_t batches,
           std::size_t tasks) {
    std::uint64_t check = 0;
    const auto t0 = bench::Clock::now();
    for (std::size_t b = 0; b < batches; ++b) {
        tandem::Batch<std::uint64_t> batch;
        batch.reserve(tasks);
        for (std::size_t i = 0; i < tasks; ++i) batch.push(i, i, 1);
        auto r = engine.submit(op, std::move(batch)).get();
        check += r.results.outputs()[0];
    }
    const auto t1 = bench::Clock::now();
    bench::do_not_optimize(check);
    return bench::ns_between(t0, t1) / static_cast<double>(batches);
}

struct Figure {
    double on = 0, off = 0, ratio = 0;  // medians: ns per batch, and of the per-round ratios
};

/// Alternating rounds of the two engines (the order flips every round).
Figure measure(tandem::Engine& on, tandem::Engine& off, const tandem::Op<std::uint64_t, std::uint64_t>& op,
               std::size_t rounds, std::size_t batches, std::size_t tasks) {
    run(on, op, batches / 4 + 1, tasks);  // warm-up
    run(off, op, batches / 4 + 1, tasks);
    std::vector<double> t_on, t_off, ratios;
    for (std::size_t r = 0; r < rounds; ++r) {
        double a = 0, b = 0;
        if (r % 2 == 0) {
            a = run(on, op, batches, tasks);
            b = run(off, op, batches, tasks);
        } else {
            b = run(off, op, batches, tasks);
            a = run(on, op, batches, tasks);
        }
        t_on.push_back(a);
        t_off.push_back(b);
        ratios.push_back(a / b);
    }
    return {bench::median(t_on), bench::median(t_off), bench::median(ratios)};
}

}  // namespace

int main(int argc, char** argv) {
    bench::Args args{argc, argv, usage};
    const bool quick = args.flag("quick");
    const std::size_t rounds = std::max<std::uint64_t>(1, args.num("rounds", quick ? 5 : 21));
    const std::size_t batches = std::max<std::uint64_t>(1, args.num("batches", quick ? 500 : 4000));
    const std::size_t task_batches = std::max<std::uint64_t>(1, args.num("task-batches", quick ? 20 : 100));
    const std::size_t workers = bench::hardware_threads();
    const std::size_t tasks = std::max<std::uint64_t>(1, args.num("tasks", 4 * workers));
    args.finish();
    const bench::MachineLoad load;

    std::printf("metrics overhead: histogram recording on vs off, same process, %zu alternating rounds\n", rounds);
    std::printf("hardware threads %zu; 1-task batches: %zu per engine per round, 1 worker; "
                "100 us tasks: %zu batches of %zu per engine per round, %zu workers\n\n",
                workers, batches, task_batches, tasks, workers);

    const tandem::Op<std::uint64_t, std::uint64_t> tiny{"tiny", [](const std::uint64_t& x) { return x * 3 + 1; }};
    const tandem::Op<std::uint64_t, std::uint64_t> heavy{
        "spin_100us", [](const std::uint64_t& x) { return x + spin_for(std::chrono::microseconds{100}); }};

    auto config = [](std::size_t cpu_workers, bool record) {
        tandem::EngineConfig c;
        c.cpu_workers = cpu_workers;
        c.record_histograms = record;
        return c;
    };
    Figure one, hundred;
    {
        tandem::Engine on{config(1, true)}, off{config(1, false)};
        one = measure(on, off, tiny, rounds, batches, 1);
    }
    {
        tandem::Engine on{config(workers, true)}, off{config(workers, false)};
        hundred = measure(on, off, heavy, rounds, task_batches, tasks);
    }

    std::printf("%-34s %14s %14s %10s\n", "", "on us/batch", "off us/batch", "on/off");
    std::printf("%-34s %14.3f %14.3f %10.4f\n", "1-task batches, round trip", one.on / 1e3, one.off / 1e3, one.ratio);
    std::printf("%-34s %14.3f %14.3f %10.4f\n", "batches of 100 us tasks", hundred.on / 1e3, hundred.off / 1e3,
                hundred.ratio);
    std::printf("(medians over rounds; on/off is the median of the per-round ratios)\n\n");
    load.report();
    // `tandem` is the engine recording, `baseline` the same engine not recording; the ratio
    // printed is tandem/baseline of the medians, the table above has the paired one.
    bench::print_results({
        {"metrics_overhead_1task", one.on / 1e3, one.off / 1e3, "us", "<=", 1.02},
        {"metrics_overhead_100us_tasks", hundred.on / 1e3, hundred.off / 1e3, "us", "<=", 1.02},
    });
    return 0;
}
