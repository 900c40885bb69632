// Figure (a): a 1-task batch, submit -> result ready, p50/p99, against its baseline in the
// same process: asio::thread_pool + std::promise (post a lambda that sets the promise; the
// caller waits on the future). Sequential round trips, warm-up first, Tandem and Asio
// measured in alternating rounds so drift on the machine hits both alike.
//
//   caller ──submit──► scheduler actor ──chunk──► CPU worker ──complete──► caller (get)
//   caller ──post────► asio pool thread (set_value) ───────────────────────► caller (get)
//
// Target (16 cores): Tandem p50 <= 0.25x Asio p50.

#include "bench_util.hpp"

#include <tandem/tandem.hpp>

#include <asio.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <future>
#include <thread>
#include <vector>

namespace {

constexpr const char* usage =
    "usage: bench_cpu_latency [--quick] [--iters=N] [--warmup=N] [--rounds=N] [--threads=N]\n"
    "                         [--workers=N] [--idle-spin-us=N]\n"
    "  --iters     round trips measured per side (default 20000; --quick 2000)\n"
    "  --warmup    round trips before measuring, per side (default 2000; --quick 200)\n"
    "  --rounds    alternating Tandem/Asio rounds the iterations are split into (default 10)\n"
    "  --threads   asio::thread_pool threads and Tandem cpu_workers (default: hardware threads)\n"
    "  --workers   Tandem cpu_workers only, overriding --threads (diagnostics)\n"
    "  --idle-spin-us  Tandem EngineConfig::idle_spin in microseconds (default: engine default)";

inline std::uint64_t work(std::uint64_t x) { return (x * 2654435761u) ^ (x >> 7); }

struct Samples {
    std::vector<double> total;       // submit -> result in hand (ns)
    std::vector<double> queue_wait;  // Tandem only: ExecStats::queue_wait
    std::vector<double> wall;        // Tandem only: ExecStats::wall_time (submit -> complete)
};

/// One Tandem round trip: the 1-task batch is built before the clock starts; the clock stops
/// when `get()` has returned the results.
double tandem_once(tandem::Engine& engine, const tandem::Op<std::uint64_t, std::uint64_t>& op,
                   std::uint64_t i, Samples* s) {
    tandem::Batch<std::uint64_t> batch;
    batch.reserve(1);
    batch.push(i, i, 1);
    const auto t0 = bench::Clock::now();
    auto result = engine.submit(op, std::move(batch)).get();
    const auto t1 = bench::Clock::now();
    if (result.results.outputs()[0] != work(i)) {
        std::fprintf(stderr, "tandem: wrong result for %llu\n", static_cast<unsigned long long>(i));
        std::exit(1);
    }
    const double ns = bench::ns_between(t0, t1);
    if (s) {
        s->total.push_back(ns);
        s->queue_wait.push_back(static_cast<double>(result.stats.queue_wait.count()));
        s->wall.push_back(static_cast<double>(result.stats.wall_time.count()));
    }
    return ns;
}

/// One Asio round trip: promise and future are made inside the clock (they are Asio's
/// per-request shared state, as the batch job is Tandem's).
double asio_once(asio::thread_pool& pool, std::uint64_t i, Samples* s) {
    const auto t0 = bench::Clock::now();
    std::promise<std::uint64_t> promise;
    auto future = promise.get_future();
    asio::post(pool, [&promise, i] { promise.set_value(work(i)); });
    const std::uint64_t v = future.get();
    const auto t1 = bench::Clock::now();
    if (v != work(i)) {
        std::fprintf(stderr, "asio: wrong result for %llu\n", static_cast<unsigned long long>(i));
        std::exit(1);
    }
    const double ns = bench::ns_between(t0, t1);
    if (s) s->total.push_back(ns);
    return ns;
}

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

}  // namespace

int main(int argc, char** argv) {
    bench::Args args{argc, argv, usage};
    const bool quick = args.flag("quick");
    const std::size_t iters = args.num("iters", quick ? 2000 : 20000);
    const std::size_t warmup = args.num("warmup", quick ? 200 : 2000);
    const std::size_t rounds = std::max<std::uint64_t>(1, args.num("rounds", 10));
    const std::size_t threads = std::max<std::uint64_t>(1, args.num("threads", bench::hardware_threads()));
    const std::size_t workers = std::max<std::uint64_t>(1, args.num("workers", threads));
    tandem::EngineConfig config;
    config.cpu_workers = workers;
    const std::uint64_t spin_us = args.num("idle-spin-us", ~std::uint64_t{0});
    if (spin_us != ~std::uint64_t{0}) config.idle_spin = std::chrono::microseconds{spin_us};
    args.finish();
    const bench::MachineLoad load;

    std::printf("figure (a): 1-task batch round trip, submit -> result ready\n");
    std::printf("hardware threads %zu; asio::thread_pool(%zu); Tandem cpu_workers=%zu idle_spin=%lldus; "
                "%zu round trips per side after %zu warm-up, in %zu alternating rounds\n",
                bench::hardware_threads(), threads, workers,
                static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(config.idle_spin).count()),
                iters, warmup, rounds);

    tandem::Engine engine{config};
    asio::thread_pool pool{threads};
    const tandem::Op<std::uint64_t, std::uint64_t> op{"latency", [](const std::uint64_t& x) { return work(x); }};

    std::uint64_t id = 0;
    for (std::size_t i = 0; i < warmup; ++i) tandem_once(engine, op, id++, nullptr);
    for (std::size_t i = 0; i < warmup; ++i) asio_once(pool, id++, nullptr);

    Samples t, a;
    t.total.reserve(iters);
    a.total.reserve(iters);
    for (std::size_t r = 0; r < rounds; ++r) {
        const std::size_t n = iters / rounds + (r < iters % rounds ? 1 : 0);
        for (std::size_t i = 0; i < n; ++i) tandem_once(engine, op, id++, &t);
        for (std::size_t i = 0; i < n; ++i) asio_once(pool, id++, &a);
    }
    auto ping = spin_ping_pong(iters);

    const double t50 = bench::percentile(t.total, 50), t99 = bench::percentile(t.total, 99);
    const double a50 = bench::percentile(a.total, 50), a99 = bench::percentile(a.total, 99);
    const double q50 = bench::percentile(t.queue_wait, 50), w50 = bench::percentile(t.wall, 50);
    const double p50 = bench::percentile(ping, 50);

    std::printf("\n%-44s %10s %10s %10s\n", "", "p50 us", "p99 us", "max us");
    std::printf("%-44s %10.2f %10.2f %10.2f\n", "Tandem submit -> get() returned", t50 / 1e3, t99 / 1e3,
                t.total.back() / 1e3);
    std::printf("%-44s %10.2f %10.2f %10.2f\n", "asio::thread_pool post + promise", a50 / 1e3, a99 / 1e3,
                a.total.back() / 1e3);
    std::printf("%-44s %10.2f %10.2f %10.2f\n", "  Tandem: submit -> chunk starts (queue_wait)", q50 / 1e3,
                bench::percentile(t.queue_wait, 99) / 1e3, t.queue_wait.back() / 1e3);
    std::printf("%-44s %10.2f %10.2f %10.2f\n", "  Tandem: submit -> batch complete (wall)", w50 / 1e3,
                bench::percentile(t.wall, 99) / 1e3, t.wall.back() / 1e3);
    std::printf("%-44s %10.2f %10.2f %10.2f\n", "  reference: spin ping-pong, 1 hop each way", p50 / 1e3,
                bench::percentile(ping, 99) / 1e3, ping.back() / 1e3);
    std::printf("ratio p50 %.3f (target <= 0.25 on 16 cores), p99 %.3f\n\n", t50 / a50, t99 / a99);

    load.report();
    bench::print_results({
        {"latency_1task_p50", t50 / 1e3, a50 / 1e3, "us", "<=", 0.25},
        {"latency_1task_p99", t99 / 1e3, a99 / 1e3, "us", "", 0.0},
    });
    return 0;
}
