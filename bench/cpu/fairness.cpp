// Figure (d): a 1-task batch submitted while a huge batch runs on every worker.
//
//   huge batch (64 Mi u32, every worker busy) ──────────────────────────────►
//        1-task probes, one every --gap-us:  ▲   ▲   ▲   ▲ ... each timed submit → result
//
// Tandem serves the batches a worker holds in turn, one chunk each, so a probe waits for
// about one chunk. The baseline is the plain-pool way of running the same work: the huge map
// cut into the same number of chunks, posted to an asio::thread_pool of as many threads, and
// each probe posted behind them (FIFO: it waits for the chunks queued before it).
//
//   usage: bench_cpu_fairness [--quick] [--tasks=N] [--probes=N] [--gap-us=N] [--reps=N] [--threads=N]
//                             [--low-priority]   (Tandem's workers at WorkerPriority::Low)
//                             [--async]          (probes answered through then(): a worker runs
//                                                 them; by default the prober waits in get(),
//                                                 which runs a small batch on its own thread)
//                             [--json FILE]      (the results as JSON too, for bench/plot.py)

#include "bench_util.hpp"

#include <tandem/tandem.hpp>

#include <asio/post.hpp>
#include <asio/thread_pool.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <future>
#include <thread>
#include <vector>

namespace {

std::uint32_t work(std::uint32_t x) { return x * 2654435761u + 1u; }

struct Probes {
    std::vector<double> latencies_ns;
    double huge_ms = 0;
};

/// `async`: each probe's answer comes through `then` (the thread waits on a std::future, not in
/// the engine), so a worker runs it; else the prober blocks in `get()`, which runs a small
/// batch no worker has started on the prober's own thread.
Probes run_tandem(tandem::Engine& engine, std::size_t tasks, std::size_t probes, std::size_t gap_us, bool async) {
    // A lambda, not the function pointer: the per-task call then inlines and vectorises, as the
    // pool's loop does.
    const tandem::Op<std::uint32_t, std::uint32_t> op{"map", [](const std::uint32_t& x) { return work(x); }};
    std::vector<std::uint32_t> payloads(tasks);
    for (std::size_t i = 0; i < tasks; ++i) payloads[i] = static_cast<std::uint32_t>(i);
    auto huge_batch = tandem::Batch<std::uint32_t>::dense(payloads);
    Probes out;
    const auto start = bench::Clock::now();
    auto huge = engine.submit(op, std::move(huge_batch));
    for (std::size_t i = 0; i < probes && !huge.ready(); ++i) {
        tandem::Batch<std::uint32_t> one{{i, static_cast<std::uint32_t>(i), 1}};
        const auto t0 = bench::Clock::now();
        if (async) {
            std::promise<std::uint32_t> answer;
            auto got = answer.get_future();
            engine.submit(op, std::move(one)).then([&answer](std::error_code, tandem::BatchResult<std::uint32_t> r) {
                answer.set_value(r.results.empty() ? 0u : r.results[0].output);
            });
            bench::do_not_optimize(got.get());
        } else {
            auto r = engine.submit(op, std::move(one)).get();
            bench::do_not_optimize(r.results[0].output);
        }
        const auto t1 = bench::Clock::now();
        out.latencies_ns.push_back(bench::ns_between(t0, t1));
        std::this_thread::sleep_for(std::chrono::microseconds{gap_us});
    }
    huge.get();
    out.huge_ms = bench::ns_between(start, bench::Clock::now()) / 1e6;
    return out;
}

Probes run_pool(std::size_t tasks, std::size_t probes, std::size_t gap_us, std::size_t threads) {
    asio::thread_pool pool{threads};
    std::vector<std::uint32_t> in(tasks), outv(tasks);
    for (std::size_t i = 0; i < tasks; ++i) in[i] = static_cast<std::uint32_t>(i);
    // The same chunking as the engine's automatic one: 8 chunks per thread, at most 64 Ki tasks.
    const std::size_t chunk = std::clamp<std::size_t>(tasks / (threads * 8), 1, std::size_t{1} << 16);
    std::atomic<std::size_t> left{(tasks + chunk - 1) / chunk};
    std::promise<void> done;
    Probes out;
    const auto start = bench::Clock::now();
    for (std::size_t b = 0; b < tasks; b += chunk) {
        asio::post(pool, [&, b] {
            const std::size_t e = std::min(b + chunk, tasks);
            for (std::size_t i = b; i < e; ++i) outv[i] = work(in[i]);
            if (left.fetch_sub(1) == 1) done.set_value();
        });
    }
    auto huge = done.get_future();
    for (std::size_t i = 0; i < probes && huge.wait_for(std::chrono::seconds{0}) != std::future_status::ready; ++i) {
        const auto t0 = bench::Clock::now();
        std::promise<std::uint32_t> p;
        auto f = p.get_future();
        asio::post(pool, [&p, i] { p.set_value(work(static_cast<std::uint32_t>(i))); });
        bench::do_not_optimize(f.get());
        out.latencies_ns.push_back(bench::ns_between(t0, bench::Clock::now()));
        std::this_thread::sleep_for(std::chrono::microseconds{gap_us});
    }
    huge.wait();
    out.huge_ms = bench::ns_between(start, bench::Clock::now()) / 1e6;
    pool.join();
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    bench::Args args{argc, argv,
                     "usage: bench_cpu_fairness [--quick] [--tasks=N] [--probes=N] [--gap-us=N] [--reps=N] [--threads=N] [--low-priority] [--async] [--json FILE]"};
    const bool quick = args.flag("quick");
    const std::size_t tasks = args.num("tasks", quick ? (std::size_t{4} << 20) : (std::size_t{64} << 20));
    const std::size_t probes = args.num("probes", quick ? 50 : 200);
    const std::size_t gap_us = args.num("gap-us", 100);
    const std::size_t reps = std::max<std::uint64_t>(1, args.num("reps", quick ? 2 : 10));
    const std::size_t threads = std::max<std::uint64_t>(1, args.num("threads", bench::hardware_threads()));
    const bool low_priority = args.flag("low-priority");  // workers at WorkerPriority::Low
    const bool async = args.flag("async");  // probes answered by a worker, through then()
    const std::string json_path = args.str("json");  // --json FILE: the results as JSON too
    args.finish();
    const bench::MachineLoad load;

    std::printf("figure (d): 1-task batches submitted while a %zu-task batch runs on all %zu workers\n", tasks,
                threads);
    std::printf("%zu repetitions; probe every %zu us (at most %zu, while the huge batch runs); baseline: asio::thread_pool(%zu) "
                "with the huge map posted as chunks\n",
                reps, gap_us, probes, threads);
    std::printf("Tandem's probes: %s\n", async ? "answered through then() (a worker runs them)"
                                               : "waited for in get() (the prober runs a batch no worker has started)");
    // One engine for every repetition, as a service keeps one: its output cache then holds the
    // huge batch's output array after the warm-up, as the pool's output vector is allocated
    // before its clock starts.
    tandem::EngineConfig config;
    config.cpu_workers = threads;
    if (low_priority) config.worker_priority = tandem::WorkerPriority::Low;
    tandem::Engine engine{config};
    run_tandem(engine, tasks, 0, gap_us, async);  // warm-up: the output cache, page faults, thread start
    // Alternating repetitions, so both sides see the same machine; the probes of every
    // repetition are pooled (a huge batch lasts only ~10 ms on 16 cores).
    Probes t, b;
    for (std::size_t rep = 0; rep < reps; ++rep) {
        auto tr = run_tandem(engine, tasks, probes, gap_us, async);
        auto br = run_pool(tasks, probes, gap_us, threads);
        t.latencies_ns.insert(t.latencies_ns.end(), tr.latencies_ns.begin(), tr.latencies_ns.end());
        b.latencies_ns.insert(b.latencies_ns.end(), br.latencies_ns.begin(), br.latencies_ns.end());
        t.huge_ms += tr.huge_ms / static_cast<double>(reps);
        b.huge_ms += br.huge_ms / static_cast<double>(reps);
    }
    const auto show = [](const char* who, Probes& p) {
        std::vector<double>& v = p.latencies_ns;
        if (v.empty()) {
            std::printf("%-8s no probe ran (the huge batch took %.1f ms)\n", who, p.huge_ms);
            return;
        }
        std::printf("%-8s %4zu probes  p50 %10.1f us  p99 %10.1f us  max %10.1f us   huge batch %.1f ms (mean)\n", who,
                    v.size(), bench::percentile(v, 50) / 1e3, bench::percentile(v, 99) / 1e3,
                    bench::percentile(v, 100) / 1e3, p.huge_ms);
    };
    show("tandem", t);
    show("asio", b);
    load.report();
    if (t.latencies_ns.empty() || b.latencies_ns.empty()) return 0;
    return bench::report({
        {async ? "small_behind_huge_p99_async" : "small_behind_huge_p99", bench::percentile(t.latencies_ns, 99) / 1e3,
         bench::percentile(b.latencies_ns, 99) / 1e3, "us", "", 0},
        {async ? "small_behind_huge_max_async" : "small_behind_huge_max", bench::percentile(t.latencies_ns, 100) / 1e3,
         bench::percentile(b.latencies_ns, 100) / 1e3, "us", "", 0},
        {async ? "huge_batch_ms_async" : "huge_batch_ms", t.huge_ms, b.huge_ms, "ms", "<=", 1.1},
    }, json_path, "cpu_fairness", args);
}
