// Figure (b): throughput of 1-task batches from 1, 4 and N submitting threads (N = hardware
// threads, 16 on the reference machine), against its baseline in the same process:
// asio::thread_pool posts, one std::promise per post.
//
// Same structure on both sides: each submitting thread submits K requests, keeping at most
// W futures in flight (a ring; when it is full the oldest is waited for and checked before the
// next submit), then waits for the rest. Everything a request costs the caller (building the
// 1-task batch / the promise, submitting, waiting, checking) is inside the clock.
//
//   submitter × S ──batches──► scheduler actor ──chunks──► CPU workers × threads
//   submitter × S ──post─────► asio::thread_pool(threads)
//
// Target (16 cores, 16 submitting threads): Tandem >= 5x Asio's batches/s.

#include "bench_util.hpp"

#include <tandem/tandem.hpp>

#include <asio.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <future>
#include <latch>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

constexpr const char* usage =
    "usage: bench_cpu_throughput [--quick] [--batches=K] [--window=W] [--submitters=a,b,c]\n"
    "                            [--reps=R] [--threads=N] [--workers=N] [--idle-spin-us=N] [--json FILE]\n"
    "  --batches     1-task batches (and posts) per submitting thread (default 100000; --quick 3000)\n"
    "  --window      futures in flight per submitting thread (default 256)\n"
    "  --submitters  submitting-thread counts (default 1,4,<hardware threads>)\n"
    "  --reps        repetitions per point, the median is reported (default 3; --quick 1)\n"
    "  --threads     asio::thread_pool threads and Tandem cpu_workers (default: hardware threads)\n"
    "  --workers     Tandem cpu_workers only, overriding --threads (diagnostics)\n"
    "  --idle-spin-us  Tandem EngineConfig::idle_spin in microseconds (default: engine default)\n"
    "  --tandem-only / --asio-only  run one side (for profiling; no RESULT ratio is meaningful then)\n"
    "  --json          also write the results as JSON to FILE (bench/plot.py draws them)";

inline std::uint64_t work(std::uint64_t x) { return (x * 2654435761u) ^ (x >> 7); }

[[noreturn]] void wrong(const char* who, std::uint64_t x) {
    std::fprintf(stderr, "%s: wrong result for %llu\n", who, static_cast<unsigned long long>(x));
    std::exit(1);
}

/// What one measurement gives: requests per second, and the CPU time the whole process spent
/// per request (submitters, engine/pool threads, spinning included).
struct Rate {
    double per_s = 0;
    double cpu_us = 0;
};

/// Runs `body(thread_index)` on `threads` threads released together; returns the seconds from
/// the release to the last thread's end, and the process CPU seconds spent meanwhile.
template <class Body>
std::pair<double, double> run_threads(std::size_t threads, Body body) {
    std::latch ready{static_cast<std::ptrdiff_t>(threads) + 1};
    std::latch go{1};
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (std::size_t t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            ready.count_down();
            go.wait();
            body(t);
        });
    }
    ready.arrive_and_wait();
    const double c0 = bench::process_cpu_seconds();
    const auto t0 = bench::Clock::now();
    go.count_down();
    for (auto& th : pool) th.join();
    const double wall = bench::ns_between(t0, bench::Clock::now()) / 1e9;
    return {wall, bench::process_cpu_seconds() - c0};
}

Rate make_rate(std::pair<double, double> wall_cpu, double requests) {
    return {requests / wall_cpu.first, wall_cpu.second / requests * 1e6};
}

Rate tandem_rate(tandem::Engine& engine, const tandem::Op<std::uint64_t, std::uint64_t>& op,
                   std::size_t submitters, std::size_t per_thread, std::size_t window) {
    const auto s = run_threads(submitters, [&](std::size_t t) {
        std::vector<tandem::BatchFuture<std::uint64_t>> ring(window);
        const std::uint64_t base = std::uint64_t{t} << 40;
        auto drain = [&](std::size_t slot, std::uint64_t x) {
            auto r = ring[slot].get();
            if (r.results.outputs()[0] != work(x)) wrong("tandem", x);
        };
        for (std::size_t k = 0; k < per_thread; ++k) {
            const std::size_t slot = k % window;
            if (k >= window) drain(slot, base + k - window);
            tandem::Batch<std::uint64_t> batch;
            batch.reserve(1);
            batch.push(base + k, base + k, 1);
            ring[slot] = engine.submit(op, std::move(batch));
        }
        for (std::size_t k = per_thread > window ? per_thread - window : 0; k < per_thread; ++k) {
            drain(k % window, base + k);
        }
    });
    return make_rate(s, static_cast<double>(submitters * per_thread));
}

Rate asio_rate(asio::thread_pool& pool, std::size_t submitters, std::size_t per_thread, std::size_t window) {
    const auto s = run_threads(submitters, [&](std::size_t t) {
        std::vector<std::future<std::uint64_t>> ring(window);
        const std::uint64_t base = std::uint64_t{t} << 40;
        auto drain = [&](std::size_t slot, std::uint64_t x) {
            if (ring[slot].get() != work(x)) wrong("asio", x);
        };
        for (std::size_t k = 0; k < per_thread; ++k) {
            const std::size_t slot = k % window;
            if (k >= window) drain(slot, base + k - window);
            std::promise<std::uint64_t> promise;
            ring[slot] = promise.get_future();
            asio::post(pool, [p = std::move(promise), x = base + k]() mutable { p.set_value(work(x)); });
        }
        for (std::size_t k = per_thread > window ? per_thread - window : 0; k < per_thread; ++k) {
            drain(k % window, base + k);
        }
    });
    return make_rate(s, static_cast<double>(submitters * per_thread));
}

}  // namespace

int main(int argc, char** argv) {
    bench::Args args{argc, argv, usage};
    const bool quick = args.flag("quick");
    const bool tandem_only = args.flag("tandem-only");
    const bool asio_only = args.flag("asio-only");
    const std::size_t per_thread = std::max<std::uint64_t>(1, args.num("batches", quick ? 3000 : 100000));
    const std::size_t window = std::max<std::uint64_t>(1, args.num("window", 256));
    const std::size_t hw = bench::hardware_threads();
    auto submitters = args.list("submitters", {1, 4, hw});
    std::sort(submitters.begin(), submitters.end());
    submitters.erase(std::unique(submitters.begin(), submitters.end()), submitters.end());
    const std::size_t reps = std::max<std::uint64_t>(1, args.num("reps", quick ? 1 : 3));
    const std::size_t threads = std::max<std::uint64_t>(1, args.num("threads", hw));
    const std::size_t workers = std::max<std::uint64_t>(1, args.num("workers", threads));
    tandem::EngineConfig config;
    config.cpu_workers = workers;
    const std::uint64_t spin_us = args.num("idle-spin-us", ~std::uint64_t{0});
    if (spin_us != ~std::uint64_t{0}) config.idle_spin = std::chrono::microseconds{spin_us};
    const std::string json_path = args.str("json");  // --json FILE: the results as JSON too
    args.finish();
    const bench::MachineLoad load;

    std::printf("figure (b): 1-task batches/s from S submitting threads\n");
    std::printf("hardware threads %zu; asio::thread_pool(%zu); Tandem cpu_workers=%zu idle_spin=%lldus; "
                "%zu requests per submitting thread, window %zu, median of %zu\n",
                hw, threads, workers,
                static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(config.idle_spin).count()),
                per_thread, window, reps);

    tandem::Engine engine{config};
    asio::thread_pool pool{threads};
    const tandem::Op<std::uint64_t, std::uint64_t> op{"throughput", [](const std::uint64_t& x) { return work(x); }};

    // Warm-up: first-touch allocations, thread start-up, queue blocks.
    if (!asio_only) tandem_rate(engine, op, 1, std::min<std::size_t>(per_thread, 20000), window);
    if (!tandem_only) asio_rate(pool, 1, std::min<std::size_t>(per_thread, 20000), window);

    std::vector<bench::Result> results;
    std::printf("\n%-11s %15s %15s %8s %14s %14s\n", "submitters", "Tandem batch/s", "Asio post/s", "ratio",
                "Tandem CPU us", "Asio CPU us");
    for (const std::size_t s : submitters) {
        std::vector<double> t, a, tc, ac;
        for (std::size_t r = 0; r < reps; ++r) {  // alternate, so drift hits both alike
            const Rate tr = asio_only ? Rate{} : tandem_rate(engine, op, s, per_thread, window);
            const Rate ar = tandem_only ? Rate{} : asio_rate(pool, s, per_thread, window);
            t.push_back(tr.per_s);
            tc.push_back(tr.cpu_us);
            a.push_back(ar.per_s);
            ac.push_back(ar.cpu_us);
        }
        const double tm = bench::median(t), am = bench::median(a);
        std::printf("%-11zu %15.0f %15.0f %8.3f %14.2f %14.2f\n", s, tm, am, am > 0 ? tm / am : 0.0,
                    bench::median(tc), bench::median(ac));
        const bool is_target = s == hw;
        results.push_back({"throughput_1task_" + std::to_string(s) + "sub", tm / 1e6, am / 1e6, "M/s",
                           is_target ? ">=" : "", is_target ? 5.0 : 0.0});
    }
    std::printf("(CPU us: process CPU time per request, every thread and any spinning included)\n"
                "(target: >= 5x Asio at %zu submitting threads = hardware threads; 16 on the reference machine)\n\n",
                hw);
    load.report();
    return bench::report(results, json_path, "cpu_throughput", args);
}
