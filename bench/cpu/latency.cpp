// Figure (a): a 1-task batch, submit -> result ready, p50/p99, and the CPU it costs, against
// its baselines in the same process, back to back and with sparse arrivals.
//
//   Tandem:  caller ──submit──► CPU worker ──complete──► caller (get; the waiting caller runs a
//            batch no worker has started itself)
//   Tandem run: engine.run(op, batch): submit and wait in one call; a small batch is run by the
//            caller and sent to no worker (RESULT lines *_run, against the same asio figures)
//   asio:    caller ──post────► asio::thread_pool thread (set_value) ──► caller (future.get)
//   TBB:     caller ──enqueue─► tbb::task_arena worker (store flag) ───► caller (spins on the flag)
//
// asio + promise is the baseline of the targets: a pool whose threads and caller park. The TBB
// arena is a baseline that spins (TBB's workers spin before they sleep, and the caller spins on
// an atomic until its answer is there), so the figures show what the engine gains beyond
// spinning. Every side builds its per-request state inside the clock (Tandem's batch, asio's
// promise, TBB's flag) and checks its answer outside it.
//
// Three arrival patterns, each measured in alternating rounds (Tandem, asio, TBB, Tandem, …) so
// drift on the machine hits every side alike:
//   back to back  the next request as soon as the last answer is in hand
//   gap 100 us    the caller sleeps 100 us between requests (a lightly loaded service)
//   gap 1 ms      the caller sleeps 1 ms between requests
// CPU per request is the process's CPU time (getrusage: every thread, spinning included) over
// a side's rounds, divided by its requests; each round ends with a settle pause attributed to
// the side that just ran, so idle spinning after its last request is counted against it.
//
// Targets: p50 <= 0.25x asio on 16 cores, <= 1.0x on 2 cores; with gaps p50 and p99 <= 1.0x
// asio; CPU per request <= 1.2x asio in every pattern.

#include "bench_util.hpp"

#include <tandem/tandem.hpp>

#include <asio.hpp>

#if TANDEM_BENCH_HAVE_TBB
#include <tbb/task_arena.h>
#endif

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr const char* usage =
    "usage: bench_cpu_latency [--quick] [--iters=N] [--sparse-iters=N] [--warmup=N] [--rounds=N]\n"
    "                         [--gaps=G1,G2,...] [--threads=N] [--workers=N] [--idle-spin-us=N]\n"
    "                         [--json FILE]\n"
    "  --iters         back-to-back round trips measured per side (default 20000; --quick 2000)\n"
    "  --sparse-iters  round trips per side for each gap (default 3000; --quick 300)\n"
    "  --warmup        round trips before measuring, per side (default 2000; --quick 200)\n"
    "  --rounds        alternating rounds the iterations are split into (default 10)\n"
    "  --gaps          gaps between requests in microseconds besides back to back (default 100,1000)\n"
    "  --no-gaps       back to back only\n"
    "  --no-tbb        leave the TBB side out (diagnostics: its threads' spinning then cannot disturb the others)\n"
    "  --threads       pool threads of every side, and Tandem cpu_workers (default: hardware threads)\n"
    "  --workers       Tandem cpu_workers only, overriding --threads (diagnostics)\n"
    "  --idle-spin-us  Tandem EngineConfig::idle_spin in microseconds (default: engine default)\n"
    "  --json          also write the results as JSON to FILE (bench/plot.py draws them)";

inline std::uint64_t work(std::uint64_t x) { return (x * 2654435761u) ^ (x >> 7); }

[[noreturn]] void wrong(const char* who, std::uint64_t i) {
    std::fprintf(stderr, "%s: wrong result for %llu\n", who, static_cast<unsigned long long>(i));
    std::exit(1);
}

/// One side of the comparison: a function doing one timed round trip for request `i`, and what
/// it measured.
struct Side {
    std::string name;
    std::function<double(std::uint64_t)> once;  // returns the round trip in ns
    std::vector<double> total;                   // round trips (ns)
    std::vector<double> queue_wait;              // Tandem only: ExecStats::queue_wait
    double cpu_s = 0;                            // process CPU during this side's rounds
    std::size_t requests = 0;

    void reset() {
        total.clear();
        queue_wait.clear();
        cpu_s = 0;
        requests = 0;
    }
    double cpu_us_per_request() const { return requests ? cpu_s * 1e6 / static_cast<double>(requests) : 0.0; }
};

/// Reference only: one thread spinning on an atomic answers the caller (the lower bound of
/// any two-thread hand-off on this machine).
std::vector<double> spin_ping_pong(std::size_t iters) {
    alignas(64) std::atomic<std::uint64_t> ping{0};
    alignas(64) std::atomic<std::uint64_t> pong{0};
    std::thread partner{[&] {
        for (std::uint64_t seen = 0;;) {
            std::uint64_t v;
            while ((v = ping.load(std::memory_order_acquire)) == seen) bench::cpu_relax();
            if (v == ~std::uint64_t{0}) return;
            seen = v;
            pong.store(v, std::memory_order_release);
        }
    }};
    std::vector<double> out;
    out.reserve(iters);
    for (std::uint64_t i = 1; i <= iters + iters / 10; ++i) {
        const auto t0 = bench::Clock::now();
        ping.store(i, std::memory_order_release);
        while (pong.load(std::memory_order_acquire) != i) bench::cpu_relax();
        const auto t1 = bench::Clock::now();
        if (i > iters / 10) out.push_back(bench::ns_between(t0, t1));
    }
    ping.store(~std::uint64_t{0}, std::memory_order_release);
    partner.join();
    return out;
}

/// Measures every side over `iters` requests with `gap_us` of sleep before each (outside the
/// clock), in `rounds` alternating rounds. Each round of a side ends with `settle` of sleep
/// whose CPU is charged to that side (its threads' idle spinning).
void measure(std::vector<Side*>& sides, std::uint64_t& id, std::size_t iters, std::size_t rounds,
             std::uint64_t gap_us, std::chrono::microseconds settle) {
    for (Side* s : sides) s->reset();
    for (std::size_t r = 0; r < rounds; ++r) {
        const std::size_t n = iters / rounds + (r < iters % rounds ? 1 : 0);
        for (Side* s : sides) {
            const double cpu0 = bench::process_cpu_seconds();
            for (std::size_t i = 0; i < n; ++i) {
                if (gap_us) std::this_thread::sleep_for(std::chrono::microseconds{gap_us});
                s->total.push_back(s->once(id++));
            }
            std::this_thread::sleep_for(settle);
            s->cpu_s += bench::process_cpu_seconds() - cpu0;
            s->requests += n;
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    bench::Args args{argc, argv, usage};
    const bool quick = args.flag("quick");
    const std::size_t iters = args.num("iters", quick ? 2000 : 20000);
    const std::size_t sparse_iters = args.num("sparse-iters", quick ? 300 : 3000);
    const std::size_t warmup = args.num("warmup", quick ? 200 : 2000);
    const std::size_t rounds = std::max<std::uint64_t>(1, args.num("rounds", 10));
    std::vector<std::uint64_t> gaps = args.list("gaps", {100, 1000});
    if (args.flag("no-gaps")) gaps.clear();
    const bool with_tbb = !args.flag("no-tbb");
    const std::size_t threads = std::max<std::uint64_t>(1, args.num("threads", bench::hardware_threads()));
    const std::size_t workers = std::max<std::uint64_t>(1, args.num("workers", threads));
    tandem::EngineConfig config;
    config.cpu_workers = workers;
    const std::uint64_t spin_us = args.num("idle-spin-us", ~std::uint64_t{0});
    if (spin_us != ~std::uint64_t{0}) config.idle_spin = std::chrono::microseconds{spin_us};
    const std::string json_path = args.str("json");  // --json FILE: the results as JSON too
    args.finish();
    const bench::MachineLoad load;

    std::printf("figure (a): 1-task batch round trip, submit -> result ready, and CPU per request\n");
    std::printf("hardware threads %zu; asio::thread_pool(%zu)%s; Tandem cpu_workers=%zu idle_spin=%lldus (%s); "
                "%zu back-to-back and %zu sparse round trips per side after %zu warm-up, in %zu alternating "
                "rounds\n",
                bench::hardware_threads(), threads,
#if TANDEM_BENCH_HAVE_TBB
                "; tbb::task_arena with a spinning wait",
#else
                "; (no TBB: the spinning baseline is not built)",
#endif
                workers,
                static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(config.idle_spin).count()),
                config.idle_spin == tandem::default_idle_spin() ? "default" : "set", iters, sparse_iters, warmup,
                rounds);

    tandem::Engine engine{config};
    const tandem::Op<std::uint64_t, std::uint64_t> op{"latency", [](const std::uint64_t& x) { return work(x); }};
    // The same request through `submit + get` and through `Engine::run` (submit and wait in one
    // call: a small batch is run by the caller without waking a worker).
    const auto tandem_once = [&](Side& side, bool through_run) {
        return [&engine, &op, &side, through_run](std::uint64_t i) {
            const auto t0 = bench::Clock::now();
            tandem::Batch<std::uint64_t> batch{{i, i, 1}};
            auto result = through_run ? engine.run(op, std::move(batch)) : engine.submit(op, std::move(batch)).get();
            const auto t1 = bench::Clock::now();
            if (result.results.outputs()[0] != work(i)) wrong(through_run ? "tandem run" : "tandem", i);
            side.queue_wait.push_back(static_cast<double>(result.stats.queue_wait.count()));
            return bench::ns_between(t0, t1);
        };
    };
    Side tandem_side{"Tandem submit + get", {}, {}, {}, 0, 0};
    tandem_side.once = tandem_once(tandem_side, false);
    Side tandem_run_side{"Tandem run (submit + wait in one)", {}, {}, {}, 0, 0};
    tandem_run_side.once = tandem_once(tandem_run_side, true);

    asio::thread_pool pool{threads};
    Side asio_side{"asio::thread_pool post + promise", {}, {}, {}, 0, 0};
    asio_side.once = [&](std::uint64_t i) {
        const auto t0 = bench::Clock::now();
        std::promise<std::uint64_t> promise;
        auto future = promise.get_future();
        asio::post(pool, [&promise, i] { promise.set_value(work(i)); });
        const std::uint64_t v = future.get();
        const auto t1 = bench::Clock::now();
        if (v != work(i)) wrong("asio", i);
        return bench::ns_between(t0, t1);
    };

    std::vector<Side*> sides{&tandem_side, &tandem_run_side, &asio_side};
#if TANDEM_BENCH_HAVE_TBB
    tbb::task_arena arena{static_cast<int>(threads)};
    Side tbb_side{"TBB arena enqueue + spinning wait", {}, {}, {}, 0, 0};
    tbb_side.once = [&](std::uint64_t i) {
        const auto t0 = bench::Clock::now();
        struct alignas(64) Slot {
            std::atomic<bool> done{false};
            std::uint64_t value = 0;
        } slot;
        arena.enqueue([&slot, i] {
            slot.value = work(i);
            slot.done.store(true, std::memory_order_release);
        });
        while (!slot.done.load(std::memory_order_acquire)) bench::cpu_relax();
        const auto t1 = bench::Clock::now();
        if (slot.value != work(i)) wrong("tbb", i);
        return bench::ns_between(t0, t1);
    };
    if (with_tbb) sides.push_back(&tbb_side);
#else
    (void)with_tbb;
#endif

    std::uint64_t id = 0;
    for (Side* s : sides) {
        for (std::size_t i = 0; i < warmup; ++i) s->once(id++);
    }

    struct Pattern {
        std::string name;
        std::string key;  // for the RESULT lines
        std::uint64_t gap_us;
    };
    std::vector<Pattern> patterns{{"back to back", "b2b", 0}};
    for (std::uint64_t g : gaps) {
        patterns.push_back({"gap " + (g % 1000 == 0 ? std::to_string(g / 1000) + " ms" : std::to_string(g) + " us"),
                            "gap" + std::to_string(g) + "us", g});
    }
    constexpr std::chrono::microseconds settle{5000};

    std::vector<bench::Result> results;
    std::printf("\n%-14s %-36s %10s %10s %10s %14s\n", "arrivals", "side", "p50 us", "p99 us", "max us",
                "CPU us/request");
    double b2b_t50 = 0, b2b_a50 = 0;
    for (const Pattern& p : patterns) {
        measure(sides, id, p.gap_us ? sparse_iters : iters, rounds, p.gap_us, settle);
        for (Side* s : sides) {
            std::vector<double> v = s->total;
            const double p50 = bench::percentile(v, 50), p99 = bench::percentile(v, 99);
            std::printf("%-14s %-36s %10.2f %10.2f %10.2f %14.2f\n", p.name.c_str(), s->name.c_str(), p50 / 1e3,
                        p99 / 1e3, v.back() / 1e3, s->cpu_us_per_request());
        }
        std::vector<double> qw = tandem_side.queue_wait;
        std::printf("%-14s %-36s %10.2f %10.2f\n", "", "  Tandem: submit -> chunk starts", bench::percentile(qw, 50) / 1e3,
                    bench::percentile(qw, 99) / 1e3);
        std::vector<double> tv = tandem_side.total, av = asio_side.total;
        const double t50 = bench::percentile(tv, 50), t99 = bench::percentile(tv, 99);
        const double a50 = bench::percentile(av, 50), a99 = bench::percentile(av, 99);
        if (p.gap_us == 0) {
            b2b_t50 = t50;
            b2b_a50 = a50;
        }
        const bool b2b = p.gap_us == 0;
        const double latency_target = b2b ? (bench::hardware_threads() >= 16 ? 0.25 : 1.0) : 1.0;
        results.push_back({"latency_1task_" + p.key + "_p50", t50 / 1e3, a50 / 1e3, "us", "<=", latency_target});
        results.push_back({"latency_1task_" + p.key + "_p99", t99 / 1e3, a99 / 1e3, "us", b2b ? "" : "<=", 1.0});
        results.push_back({"cpu_per_1000_" + p.key, tandem_side.cpu_us_per_request(), asio_side.cpu_us_per_request(),
                           "ms", "<=", 1.2});
        std::vector<double> rv = tandem_run_side.total;
        results.push_back({"latency_1task_" + p.key + "_p50_run", bench::percentile(rv, 50) / 1e3, a50 / 1e3, "us", "", 0.0});
        results.push_back({"latency_1task_" + p.key + "_p99_run", bench::percentile(rv, 99) / 1e3, a99 / 1e3, "us", "", 0.0});
        results.push_back({"cpu_per_1000_" + p.key + "_run", tandem_run_side.cpu_us_per_request(),
                           asio_side.cpu_us_per_request(), "ms", "", 0.0});
#if TANDEM_BENCH_HAVE_TBB
        std::vector<double> bv = tbb_side.total;
        if (with_tbb) results.push_back({"latency_1task_" + p.key + "_p50_vs_tbb_spin", t50 / 1e3, bench::percentile(bv, 50) / 1e3,
                           "us", "", 0.0});
        if (with_tbb) results.push_back({"cpu_per_1000_" + p.key + "_vs_tbb_spin", tandem_side.cpu_us_per_request(),
                           tbb_side.cpu_us_per_request(), "ms", "", 0.0});
#endif
    }
    auto ping = spin_ping_pong(std::min<std::size_t>(iters, 20000));
    std::printf("%-14s %-36s %10.2f %10.2f\n", "reference", "spin ping-pong, 1 hop each way",
                bench::percentile(ping, 50) / 1e3, bench::percentile(ping, 99) / 1e3);
    std::printf("back-to-back ratio p50 %.3f (target <= 0.25 on 16 cores, <= 1.0 on 2)\n"
                "(CPU us/request = CPU ms per 1000 requests: process CPU time over the side's rounds, every thread)\n\n",
                b2b_a50 > 0 ? b2b_t50 / b2b_a50 : 0.0);

    load.report();
    return bench::report(results, json_path, "cpu_latency", args);
}
