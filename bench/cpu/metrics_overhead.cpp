// The cost of recording the metrics histograms (`EngineConfig::record_histograms`): the same
// work through two engines in one process, one recording (the default) and one not, in
// alternating rounds so that drift on the machine hits both alike. Two workloads:
//
//   1-task batches      submit -> get(), one after another: the per-batch cost at its most
//                       visible (a round trip is a few microseconds)
//   100 µs tasks        batches of --tasks tasks that each spin 100 µs, on every worker
//
// For each, the ratio recording / not recording of the round trip (submit -> results in hand)
// at p10 and p50 over every batch, and the median of the per-round ratios. Target (DESIGN.md,
// "metrics + trace overhead"): <= 1.02. A control runs the 1-task workload through two
// configurations that both do not record: its ratios are the noise floor of the run (on a
// shared machine, often more than the cost measured).

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
    "                                  [--json FILE]\n"
    "  --rounds        alternating rounds per workload, a fresh engine each (default 41; --quick 5)\n"
    "  --batches       1-task batches per engine per round (default 2000; --quick 500)\n"
    "  --task-batches  batches of 100 us tasks per engine per round (default 100; --quick 20)\n"
    "  --tasks         100 us tasks per batch (default: 4 per worker)\n"
    "  --verbose       print every round's median\n"
    "  --json          also write the results as JSON to FILE (bench/plot.py draws them)\n"
    "  --trace         the recording side also records the execution trace (EngineConfig::trace)";

/// Spins for `d` (a task that computes for about that long).
std::uint64_t spin_for(std::chrono::nanoseconds d) {
    const auto until = bench::Clock::now() + d;
    std::uint64_t n = 0;
    while (bench::Clock::now() < until) ++n;
    return n;
}

/// Runs `batches` batches of `tasks` tasks of `op` through `engine`, one after another; adds
/// each one's round trip (submit -> results in hand, ns) to `samples` when given.
void run(tandem::Engine& engine, const tandem::Op<std::uint64_t, std::uint64_t>& op, std::size_t batches,
         std::size_t tasks, std::vector<double>* samples) {
    std::uint64_t check = 0;
    for (std::size_t b = 0; b < batches; ++b) {
        tandem::Batch<std::uint64_t> batch;
        batch.reserve(tasks);
        for (std::size_t i = 0; i < tasks; ++i) batch.push(i, i, 1);
        const auto t0 = bench::Clock::now();
        auto r = engine.submit(op, std::move(batch)).get();
        const auto t1 = bench::Clock::now();
        check += r.results.outputs()[0];
        if (samples) samples->push_back(bench::ns_between(t0, t1));
    }
    bench::do_not_optimize(check);
}

/// One side's round trips, pooled over the rounds, and the median of each round.
struct Side {
    std::vector<double> all, round_medians;
};

/// A workload measured on two configurations: round trips (ns) at p10 and p50 of every batch of
/// every round, and the median of the per-round ratios of the rounds' medians.
struct Figure {
    double p10_a = 0, p10_b = 0, p50_a = 0, p50_b = 0, paired = 0;
};

bool verbose = false;  // --verbose: every round's median

/// One round on a fresh engine, after a warm-up.
void round_on_fresh_engine(const tandem::EngineConfig& config, const tandem::Op<std::uint64_t, std::uint64_t>& op,
                           std::size_t batches, std::size_t tasks, Side& side) {
    tandem::Engine engine{config};
    run(engine, op, batches / 4 + 1, tasks, nullptr);
    std::vector<double> samples;
    samples.reserve(batches);
    run(engine, op, batches, tasks, &samples);
    side.round_medians.push_back(bench::median(samples));
    side.all.insert(side.all.end(), samples.begin(), samples.end());
}

/// Alternating rounds of configurations `a` and `b` (the order flips every round). Each round
/// builds its engine afresh and only one lives at a time: on a small, shared machine where an
/// engine's threads land (on the submitter's core or not) moves a round trip between ~15 and
/// ~120 us and stays for the engine's life, so it is drawn anew for every round, alike for both
/// sides. p10 shows the fast path, where a fixed per-batch cost is least hidden by that noise.
Figure measure(const tandem::EngineConfig& a, const tandem::EngineConfig& b,
               const tandem::Op<std::uint64_t, std::uint64_t>& op, std::size_t rounds, std::size_t batches,
               std::size_t tasks) {
    Side x, y;
    for (std::size_t r = 0; r < rounds; ++r) {
        if (r % 2 == 0) {
            round_on_fresh_engine(a, op, batches, tasks, x);
            round_on_fresh_engine(b, op, batches, tasks, y);
        } else {
            round_on_fresh_engine(b, op, batches, tasks, y);
            round_on_fresh_engine(a, op, batches, tasks, x);
        }
    }
    std::vector<double> ratios;
    for (std::size_t r = 0; r < rounds; ++r) ratios.push_back(x.round_medians[r] / y.round_medians[r]);
    if (verbose) {
        std::printf("  round medians, us (a b):");
        for (std::size_t r = 0; r < rounds; ++r) std::printf(" %.1f %.1f,", x.round_medians[r] / 1e3, y.round_medians[r] / 1e3);
        std::printf("\n");
    }
    Figure f;
    f.p10_a = bench::percentile(x.all, 10);
    f.p10_b = bench::percentile(y.all, 10);
    f.p50_a = bench::percentile(x.all, 50);
    f.p50_b = bench::percentile(y.all, 50);
    f.paired = bench::median(ratios);
    return f;
}

}  // namespace

int main(int argc, char** argv) {
    bench::Args args{argc, argv, usage};
    const bool quick = args.flag("quick");
    verbose = args.flag("verbose");
    const bool trace = args.flag("trace");
    const std::size_t rounds = std::max<std::uint64_t>(1, args.num("rounds", quick ? 5 : 41));
    const std::size_t batches = std::max<std::uint64_t>(1, args.num("batches", quick ? 500 : 2000));
    const std::size_t task_batches = std::max<std::uint64_t>(1, args.num("task-batches", quick ? 20 : 100));
    const std::size_t workers = bench::hardware_threads();
    const std::size_t tasks = std::max<std::uint64_t>(1, args.num("tasks", 4 * workers));
    const std::string json_path = args.str("json");  // --json FILE: the results as JSON too
    args.finish();
    const bench::MachineLoad load;

    std::printf("metrics overhead: histogram recording on vs off, same process, %zu alternating rounds\n", rounds);
    std::printf("hardware threads %zu; 1-task batches: %zu per engine per round, 1 worker; "
                "100 us tasks: %zu batches of %zu per engine per round, %zu workers\n\n",
                workers, batches, task_batches, tasks, workers);

    const tandem::Op<std::uint64_t, std::uint64_t> tiny{"tiny", [](const std::uint64_t& x) { return x * 3 + 1; }};
    const tandem::Op<std::uint64_t, std::uint64_t> heavy{
        "spin_100us", [](const std::uint64_t& x) { return x + spin_for(std::chrono::microseconds{100}); }};

    auto config = [trace](std::size_t cpu_workers, bool record) {
        tandem::EngineConfig c;
        c.cpu_workers = cpu_workers;
        c.record_histograms = record;
        c.trace.enabled = record && trace;
        return c;
    };
    const Figure one = measure(config(1, true), config(1, false), tiny, rounds, batches, 1);
    const Figure control = measure(config(1, false), config(1, false), tiny, rounds, batches, 1);
    const Figure hundred = measure(config(workers, true), config(workers, false), heavy, rounds, task_batches, tasks);

    auto row = [](const char* name, const Figure& f) {
        std::printf("%-30s %9.2f %9.2f %7.4f   %9.2f %9.2f %7.4f   %7.4f\n", name, f.p10_a / 1e3, f.p10_b / 1e3,
                    f.p10_a / f.p10_b, f.p50_a / 1e3, f.p50_b / 1e3, f.p50_a / f.p50_b, f.paired);
    };
    std::printf("%-30s %9s %9s %7s   %9s %9s %7s   %7s\n", "round trip, us", "p10 on", "p10 off", "ratio", "p50 on",
                "p50 off", "ratio", "paired");
    row("1-task batches", one);
    row("batches of 100 us tasks", hundred);
    row("control: 1-task, off vs off", control);
    std::printf("(every batch of every round pooled; paired: median over rounds of on/off of the rounds' medians;\n"
                " the control's ratios are this run's noise floor)\n\n");
    load.report();
    return bench::report({
        {"metrics_overhead_1task_p10", one.p10_a / 1e3, one.p10_b / 1e3, "us", "<=", 1.02},
        {"metrics_overhead_1task_p50", one.p50_a / 1e3, one.p50_b / 1e3, "us", "<=", 1.02},
        {"metrics_overhead_100us_tasks_p50", hundred.p50_a / 1e3, hundred.p50_b / 1e3, "us", "<=", 1.02},
        {"metrics_overhead_control_1task_p50", control.p50_a / 1e3, control.p50_b / 1e3, "us", "", 0.0},
    }, json_path, "cpu_metrics_overhead", args);
}
