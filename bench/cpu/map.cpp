// Figure (c): a map over 64 Mi u32 (x -> x*2654435761 ^ (x>>7)) on N threads (N = hardware
// threads, 16 on the reference machine), against tbb::parallel_for over the same layout and a
// serial loop, all in the same process.
//
// Layouts, kept equal: Tandem reads its batch's contiguous payload array and writes the
// contiguous output array it allocates in `submit`; TBB reads a std::vector<uint32_t> and
// writes another.
//   * primary baseline ("TBB, output preallocated"): the output vector exists (and has been
//     touched) before the clock starts. Tandem allocates its output array inside `submit`, so
//     this is the stricter baseline; large output arrays come from the engine's block cache
//     (EngineConfig::output_cache_bytes), so after the warm-up round Tandem's output pages are
//     already mapped too, as long as the previous result was dropped before the next submit
//     (it is, here);
//   * "TBB, output allocated in the clock": `new uint32_t[n]` (uninitialised, as Tandem's
//     output buffer is) inside the clock, freed after it: what a fresh allocation costs
//     (glibc maps a 256 MiB block anew each time: 65,536 page faults).
// Input construction (the Batch for Tandem, the vector for TBB) is outside the clock for both.
// The clock stops when `get()` has returned / `parallel_for` has returned.
// Thread counts: Tandem cpu_workers = N; TBB runs in a task_arena of N (the calling thread
// takes one of its slots), under a global_control of N.
//
// Target (16 cores): Tandem <= 1.1x TBB (preallocated).

#include "bench_util.hpp"

#include <tandem/tandem.hpp>

#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

namespace {

constexpr const char* usage =
    "usage: bench_cpu_map [--quick] [--n=N] [--reps=R] [--threads=N] [--workers=N] [--chunk=N] [--json FILE]\n"
    "  --n        elements (default 64M = 67108864; --quick 4M); suffixes k, m (10^3, 10^6), M (2^20)\n"
    "  --reps     timed repetitions per variant, the median is reported (default 7; --quick 3)\n"
    "  --threads  Tandem cpu_workers and TBB threads (default: hardware threads)\n"
    "  --workers  Tandem cpu_workers only, overriding --threads (diagnostics)\n"
    "  --chunk    Tandem EngineConfig::cpu_chunk (default 0: automatic)\n"
    "  --json     also write the results as JSON to FILE (bench/plot.py draws them)";

inline std::uint32_t work(std::uint32_t x) { return (x * 2654435761u) ^ (x >> 7); }

std::vector<std::uint32_t> make_input(std::size_t n) {
    std::vector<std::uint32_t> v(n);
    std::uint64_t s = 0x9E3779B97F4A7C15ull;
    for (auto& x : v) {  // splitmix-ish, so the data are not a trivial pattern
        s += 0x9E3779B97F4A7C15ull;
        std::uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = static_cast<std::uint32_t>(z ^ (z >> 27));
    }
    return v;
}

/// The batch: ids 0..n-1, cost 1, payloads copied in one go (outside the clock).
tandem::Batch<std::uint32_t> make_batch(const std::vector<std::uint32_t>& in) {
    return tandem::Batch<std::uint32_t>::dense(in);
}

void tbb_map(tbb::task_arena& arena, const std::uint32_t* in, std::uint32_t* out, std::size_t n) {
    arena.execute([&] {
        tbb::parallel_for(tbb::blocked_range<std::size_t>{0, n}, [&](const tbb::blocked_range<std::size_t>& r) {
            for (std::size_t i = r.begin(); i != r.end(); ++i) out[i] = work(in[i]);
        });
    });
}

void check(const char* who, const std::uint32_t* got, const std::vector<std::uint32_t>& want) {
    if (std::memcmp(got, want.data(), want.size() * sizeof(std::uint32_t)) != 0) {
        std::fprintf(stderr, "%s: output differs from the serial loop\n", who);
        std::exit(1);
    }
}

struct TandemRun {
    double ns = 0;         // submit -> get() returned
    double wall_ns = 0;    // ExecStats::wall_time: submit -> last chunk done
    double ready_ns = 0;   // submit -> wait() returned
    double get_ns = 0;     // get() once ready: takes the result (and drops the job if last owner)
    double cpu_ns = 0;     // ExecStats::cpu_time: summed over chunks
    double release_ns = 0; // destroying the result after the clock (freeing the output array)
    std::uint32_t chunks = 0;
};

TandemRun tandem_once(tandem::Engine& engine, const tandem::Op<std::uint32_t, std::uint32_t>& op,
                      const std::vector<std::uint32_t>& in, const std::vector<std::uint32_t>& want) {
    auto batch = make_batch(in);  // outside the clock
    TandemRun run;
    const auto t0 = bench::Clock::now();
    auto future = engine.submit(op, std::move(batch));
    future.wait();  // split out only to time get()'s own part; get() would wait the same way
    const auto tr = bench::Clock::now();
    auto result = std::make_unique<tandem::BatchResult<std::uint32_t>>(future.get());
    const auto t1 = bench::Clock::now();
    run.ns = bench::ns_between(t0, t1);
    run.ready_ns = bench::ns_between(t0, tr);
    run.get_ns = bench::ns_between(tr, t1);
    run.wall_ns = static_cast<double>(result->stats.wall_time.count());
    run.cpu_ns = static_cast<double>(result->stats.cpu_time.count());
    run.chunks = result->stats.cpu_chunks;
    if (!result->results.all_ok()) {
        std::fprintf(stderr, "tandem: %zu tasks failed\n", result->results.errors().size());
        std::exit(1);
    }
    check("tandem", result->results.outputs().data(), want);
    const auto r0 = bench::Clock::now();
    result.reset();
    run.release_ns = bench::ns_between(r0, bench::Clock::now());
    return run;
}

}  // namespace

int main(int argc, char** argv) {
    bench::Args args{argc, argv, usage};
    const bool quick = args.flag("quick");
    const std::size_t n = std::max<std::uint64_t>(1, args.num("n", quick ? (std::uint64_t{4} << 20) : (std::uint64_t{64} << 20)));
    const std::size_t reps = std::max<std::uint64_t>(1, args.num("reps", quick ? 3 : 7));
    const std::size_t threads = std::max<std::uint64_t>(1, args.num("threads", bench::hardware_threads()));
    const std::size_t workers = std::max<std::uint64_t>(1, args.num("workers", threads));
    tandem::EngineConfig config;
    config.cpu_workers = workers;
    config.cpu_chunk = args.num("chunk", 0);
    const std::string json_path = args.str("json");  // --json FILE: the results as JSON too
    args.finish();
    const bench::MachineLoad load;

    std::printf("figure (c): map over %zu u32 (%.0f MiB in, %.0f MiB out)\n", n,
                static_cast<double>(n * 4) / (1 << 20), static_cast<double>(n * 4) / (1 << 20));
    std::printf("hardware threads %zu; Tandem cpu_workers=%zu cpu_chunk=%zu; TBB task_arena(%zu); "
                "median of %zu repetitions after one warm-up each\n",
                bench::hardware_threads(), workers, config.cpu_chunk, threads, reps);

    const auto in = make_input(n);

    // Serial loop: the reference result and a yardstick.
    std::vector<std::uint32_t> want(n);
    std::vector<double> serial;
    for (std::size_t r = 0; r < reps + 1; ++r) {
        const auto t0 = bench::Clock::now();
        for (std::size_t i = 0; i < n; ++i) want[i] = work(in[i]);
        bench::do_not_optimize(want.data());
        if (r > 0) serial.push_back(bench::ns_between(t0, bench::Clock::now()));
    }

    tbb::global_control limit{tbb::global_control::max_allowed_parallelism, threads};
    tbb::task_arena arena{static_cast<int>(threads)};
    tandem::Engine engine{config};
    const tandem::Op<std::uint32_t, std::uint32_t> op{"map_u32", [](const std::uint32_t& x) { return work(x); }};

    std::vector<std::uint32_t> out(n);  // preallocated and touched (zeroed) before any clock
    std::vector<double> tbb_pre, tbb_alloc, tandem_ns, tandem_wall, tandem_ready, tandem_get, tandem_cpu,
        tandem_release;
    std::uint32_t chunks = 0;
    // Warm-up round (r == 0) then `reps` timed rounds; variants alternate inside each round.
    for (std::size_t r = 0; r < reps + 1; ++r) {
        {
            const auto t0 = bench::Clock::now();
            tbb_map(arena, in.data(), out.data(), n);
            const double ns = bench::ns_between(t0, bench::Clock::now());
            check("tbb (preallocated)", out.data(), want);
            std::memset(out.data(), 0, n * sizeof(std::uint32_t));
            if (r > 0) tbb_pre.push_back(ns);
        }
        {
            const auto t0 = bench::Clock::now();
            std::unique_ptr<std::uint32_t[]> fresh{new std::uint32_t[n]};
            tbb_map(arena, in.data(), fresh.get(), n);
            const double ns = bench::ns_between(t0, bench::Clock::now());
            check("tbb (allocating)", fresh.get(), want);
            if (r > 0) tbb_alloc.push_back(ns);
        }
        {
            const TandemRun run = tandem_once(engine, op, in, want);
            if (r > 0) {
                tandem_ns.push_back(run.ns);
                tandem_wall.push_back(run.wall_ns);
                tandem_ready.push_back(run.ready_ns);
                tandem_get.push_back(run.get_ns);
                tandem_cpu.push_back(run.cpu_ns);
                tandem_release.push_back(run.release_ns);
                chunks = run.chunks;
            }
        }
    }

    const double ser = bench::median(serial) / 1e6;
    const double pre = bench::median(tbb_pre) / 1e6;
    const double alloc = bench::median(tbb_alloc) / 1e6;
    const double tan = bench::median(tandem_ns) / 1e6;
    const double gbs = static_cast<double>(2 * n * sizeof(std::uint32_t)) / 1e9;  // bytes read + written
    std::printf("\n%-46s %10s %10s %10s\n", "", "median ms", "min ms", "GB/s");
    auto row = [&](const char* name, const std::vector<double>& v) {
        const double med = bench::median(v) / 1e6;
        std::printf("%-46s %10.2f %10.2f %10.2f\n", name, med, *std::min_element(v.begin(), v.end()) / 1e6,
                    gbs / (med / 1e3));
    };
    row("serial loop (1 thread)", serial);
    row("tbb::parallel_for, output preallocated", tbb_pre);
    row("tbb::parallel_for, output allocated in clock", tbb_alloc);
    row("Tandem submit -> get() returned", tandem_ns);
    std::printf("%-46s %10.2f\n", "  Tandem: submit -> last chunk done (wall)", bench::median(tandem_wall) / 1e6);
    std::printf("%-46s %10.2f\n", "  Tandem: submit -> wait() returned", bench::median(tandem_ready) / 1e6);
    std::printf("%-46s %10.2f\n", "  Tandem: get() once ready (takes the result)", bench::median(tandem_get) / 1e6);
    std::printf("%-46s %10.2f   (%u chunks)\n", "  Tandem: CPU time in the op, all workers", bench::median(tandem_cpu) / 1e6,
                chunks);
    std::printf("%-46s %10.2f   (after the clock)\n", "  Tandem: dropping the result", bench::median(tandem_release) / 1e6);
    std::printf("ratio vs TBB preallocated %.3f (target <= 1.1 on 16 cores); vs TBB allocating %.3f; "
                "vs serial %.3f\n\n",
                tan / pre, tan / alloc, tan / ser);

    load.report();
    return bench::report({
        {"map_u32_vs_tbb", tan, pre, "ms", "<=", 1.1},
        {"map_u32_vs_tbb_alloc", tan, alloc, "ms", "", 0.0},
        {"map_u32_vs_serial", tan, ser, "ms", "", 0.0},
    }, json_path, "cpu_map", args);
}
