// Learned placement (the engine's per-op performance models) against forced placements of the
// same batches, every figure measured in this process:
//   (a) co-execution at a large batch: learned throughput / (CPU-only + GPU-only throughput)
//       (>= 0.95, when the slower side is at least 10% of the faster: else it cannot matter)
//   (b) learned time / the best fixed CPU share swept in this run (the oracle)      (<= 1.03)
//   (c) per batch size, learned time / the best of CPU-only, GPU-only and fixed shares, the
//       learned engine having had 10 warm-up batches of the op and learning on as it is
//       measured (<= 1.05 at every size); the old fixed threshold (4096 tasks) beside it.
//       The CPU-only, GPU-only, fixed-4096 and learned engines are measured in --passes passes
//       (default 2; a fresh engine each time), each one's point from its faster pass.
// Ops: a trivial u32 map on pageable and on page-locked batches (copy-bound), SHA-256 of
// 64-byte messages, and an integer mixer whose round count is calibrated so the GPU alone is
// 2-8x the CPU alone (these two on pageable batches, the common case). Sampled outputs of every
// batch are checked against the host; wrong ones make the exit status 3.
//
//   usage: hybrid [--quick] [--only <op>] [--rounds N] [--workers N] [--no-cpu-stretch] [--trace DIR] [--verbose] [--json FILE]
//          hybrid --two-gpus R [--quick] [--rounds N]
//   (d) --two-gpus: on two GPUs, device 1 slowed by R repetitions of each kernel
//       (GpuFaultInjection::kernel_repeats), GPU-only: throughput of both / the sum of each
//       alone (>= 0.95), and the fast device's share against the share the speeds give.
//   (--json: the summary and every (c) row as JSON too, bench/json_out.hpp; bench/plot.py draws them)
//
// Every engine has the same CPU workers (one per hardware thread less one), so the CPU-only
// and the hybrid engines have the same CPU. Each configuration runs in its own engine, one
// engine at a time, so an idle engine's threads never compete with the one being measured.
#include <tandem/gpu/map.cuh>
#include <tandem/tandem.hpp>

#include "sha256_device.cuh"

#include "../json_out.hpp"
#include "../mix_ops.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <limits>
#include <map>
#include <memory_resource>
#include <mutex>
#include <new>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---- the ops -------------------------------------------------------------------------------

using bench::Mix;       // `rounds` steps per task (bench/mix_ops.hpp)
using bench::Scramble;  // one multiply-add per task

// SHA-256 of one 64-byte message: the examples' functor (examples/gpu/sha256_device.cuh),
// which the engine runs on the CPU and, through `tandem::gpu::map`, on the GPU.
using examples::Digest;
using examples::Message;
using examples::Sha256;

}  // namespace

namespace examples {
/// Digests compare by their bytes (for the spot checks of every batch).
inline bool operator==(const Digest& a, const Digest& b) { return std::memcmp(a.bytes, b.bytes, sizeof a.bytes) == 0; }
}  // namespace examples

namespace {

/// The known answer for 64 zero bytes: a wrong hash would make every other figure meaningless.
bool sha256_self_test() {
    const char* expected = "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b";
    const Digest d = Sha256{}(Message{});
    char hex[65];
    for (int i = 0; i < 32; ++i) std::snprintf(hex + 2 * i, 3, "%02x", d.bytes[i]);
    if (std::string{hex} == expected) return true;
    std::fprintf(stderr, "SHA-256 self-test failed: sha256(64 zero bytes) = %s, expected %s\n", hex, expected);
    return false;
}

// ---- where the payloads live -----------------------------------------------------------------

/// Pageable heap memory that keeps freed blocks for reuse. Building a 64 MiB batch then faults
/// no pages in, and the engine's free of a batch's inputs (on its thread, while the next batch
/// may already be timed) is a map insert, not an munmap: neither adds noise that no placement
/// could avoid.
class ReusedHeap final : public std::pmr::memory_resource {
public:
    ReusedHeap() = default;
    ReusedHeap(const ReusedHeap&) = delete;
    ReusedHeap& operator=(const ReusedHeap&) = delete;
    ~ReusedHeap() override { trim(); }

    /// Returns every cached block to the system (between ops: their sizes differ).
    void trim() {
        std::lock_guard lock{mutex_};
        for (auto& [bytes, p] : free_) ::operator delete(p, std::align_val_t{alignment});
        free_.clear();
    }

private:
    static constexpr std::size_t alignment = 64;

    void* do_allocate(std::size_t bytes, std::size_t align) override {
        if (align > alignment) throw std::bad_alloc{};
        {
            std::lock_guard lock{mutex_};
            if (auto it = free_.find(bytes); it != free_.end()) {
                void* p = it->second;
                free_.erase(it);
                return p;
            }
        }
        return ::operator new(bytes, std::align_val_t{alignment});
    }
    void do_deallocate(void* p, std::size_t bytes, std::size_t) override {
        std::lock_guard lock{mutex_};
        free_.emplace(bytes, p);
    }
    bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }

    std::mutex mutex_;
    std::multimap<std::size_t, void*> free_;
};

ReusedHeap g_heap;

/// A CPU-only engine's `pinned_memory()` is the plain heap, whose frees unmap; for it a
/// "page-locked" batch goes to the reused heap instead, which is what page-locked memory is
/// to the CPU: memory already mapped.
std::pmr::memory_resource* payload_memory(tandem::Engine& engine, bool pinned) {
    return pinned && engine.gpu_count() > 0 ? engine.pinned_memory() : &g_heap;
}

// ---- configurations --------------------------------------------------------------------------

std::size_t g_workers = 1;
bool g_cpu_stretch = true;  // --no-cpu-stretch: placement without the CPU's learned stretch
std::string g_trace_dir;    // --trace DIR: the learned and the 0.20-share engines' traces
bool g_verbose = false;     // --verbose: the learned engine's curves after each size
int g_passes = 2;           // --passes: how many times (c)'s configurations are measured

tandem::EngineConfig base_config() {
    tandem::EngineConfig c;
    c.cpu_workers = g_workers;
    c.gpu.model.learn_cpu_stretch = g_cpu_stretch;
    c.gpu.max_devices = 1;  // (a)-(c) compare one GPU with the CPU; (d) sets its own
    return c;
}
tandem::EngineConfig cpu_only() {
    auto c = base_config();
    c.gpu.enabled = false;
    return c;
}
tandem::EngineConfig gpu_only() {
    auto c = base_config();
    c.gpu.threshold_tasks = 1;
    c.gpu.cpu_helps = false;
    return c;
}
tandem::EngineConfig fixed_share(double share) {
    auto c = base_config();
    c.gpu.threshold_tasks = 1;
    c.gpu.cpu_share = share;
    return c;
}
tandem::EngineConfig fixed_4096() {
    auto c = base_config();
    c.gpu.threshold_tasks = 4096;
    return c;
}
tandem::EngineConfig learned() { return base_config(); }

/// The oracle's sweep at the large size, and the reduced sweep of (c) at sizes from 64 Ki on.
constexpr double sweep_shares[] = {0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
constexpr double reduced_shares[] = {0.05, 0.1, 0.2, 0.3, 0.5, 0.7};
constexpr std::size_t reduced_from = 65536;
/// What the learned engine sees of an op before (c): mixed sizes, as a service would.
constexpr std::size_t warm_up_sizes[] = {256, 65536, 1 << 20, 16, 4096, 1 << 20, 256, 65536, 4096, 1 << 20};

bool in_reduced_sweep(double share) {
    return std::find(std::begin(reduced_shares), std::end(reduced_shares), share) != std::end(reduced_shares);
}

// ---- measuring -------------------------------------------------------------------------------

/// One op as measured: its name, functor (CPU function, kernel and reference at once), where
/// its batches are built, the payloads every size takes a prefix of, and its sizes.
template <class T, class R, class F>
struct Case {
    using Payload = T;
    Case(std::string name_, F f_, bool pinned_, std::span<const T> payloads_, std::size_t large_,
         std::vector<std::size_t> sizes_)
        : name{std::move(name_)}, f{f_}, pinned{pinned_}, payloads{payloads_}, large{large_}, sizes{std::move(sizes_)},
          op{name, f, tandem::gpu::map<T, R>(f)} {}

    std::string name;
    F f;
    bool pinned;
    std::span<const T> payloads;
    std::size_t large;               // the size of (a) and (b)
    std::vector<std::size_t> sizes;  // the sizes of (c)
    tandem::Op<T, R> op;
};

std::uint64_t g_wrong = 0;

/// Checks outputs spread over the whole batch, so both sides of a hybrid split are checked.
template <class C, class Result>
void verify(const C& c, const Result& r, std::size_t n) {
    const auto out = r.results.outputs();
    if (out.size() != n) {
        ++g_wrong;
        return;
    }
    for (std::size_t k = 0; k <= 32; ++k) {
        const std::size_t i = k == 32 ? n - 1 : k * n / 32;
        if (!(out[i] == c.f(c.payloads[i]))) ++g_wrong;
    }
    g_wrong += r.results.errors().size();
}

/// One batch, submitted and waited for; only that is timed (building the batch and freeing
/// its results are not).
template <class C>
tandem::ExecStats run_once(tandem::Engine& engine, const C& c, std::size_t n, double& seconds) {
    auto batch = tandem::Batch<typename C::Payload>::dense(c.payloads.first(n), 0, payload_memory(engine, c.pinned));
    const auto t0 = Clock::now();
    auto r = engine.submit(c.op, std::move(batch)).get();
    seconds = seconds_since(t0);
    verify(c, r, n);
    return r.stats;
}

struct Point {
    double seconds = 0;  // median
    std::vector<double> times;  // every rep's, in order
    tandem::ExecStats last;     // the last rep's
    // Where the reps ran, and (medians over the reps) their CPU chunks and queue wait: what
    // tells a wrong placement from a CPU batch run more slowly than on the CPU-only engine.
    std::size_t on_cpu = 0, on_gpu = 0, on_both = 0;
    double cpu_chunks = 0, queue_wait_s = 0;
    // Medians over the reps where that side ran: from submit to the end of the CPU's and the
    // GPU's last chunk, the plan's predicted finish, and how busy the CPU kept its workers
    // (worker time / (workers x the CPU's span)): which side a split waited on, and whether
    // the CPU's time was its tasks or its idle workers.
    double cpu_done_s = 0, gpu_done_s = 0, predicted_s = 0, cpu_busy = 0;
    // Median of the engine's own wall time (submit to completion, before the waiter wakes):
    // what the time measured around get() adds beyond it is the waiter's wake-up.
    double engine_wall_s = 0;
};

constexpr std::size_t min_reps = 5, max_reps = 200;
// 100 ms rather than 20: on an H200 host, 5 reps of ~15 ms batches still moved medians by
// ~10% between neighbouring configurations, more than the targets allow; the whole run stays
// within a few minutes.
constexpr double min_total_s = 0.100;

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/// The median of enough reps for >= `min_total_s` in all (at least 5, at most 200), one batch at a
/// time, after `warmups` untimed batches.
template <class C>
Point measure(tandem::Engine& engine, const C& c, std::size_t n, int warmups) {
    double s = 0;
    for (int i = 0; i < warmups; ++i) run_once(engine, c, n, s);
    Point p;
    std::vector<double> times, chunks, waits, cpu_done, gpu_done, predicted, busy, engine_wall;
    double total = 0;
    while (times.size() < max_reps && (times.size() < min_reps || total < min_total_s)) {
        p.last = run_once(engine, c, n, s);
        times.push_back(s);
        total += s;
        const auto& st = p.last;
        (st.gpu_tasks == 0 ? p.on_cpu : st.cpu_tasks == 0 ? p.on_gpu : p.on_both) += 1;
        chunks.push_back(static_cast<double>(st.cpu_chunks));
        waits.push_back(static_cast<double>(st.queue_wait.count()) / 1e9);
        predicted.push_back(static_cast<double>(st.placement.predicted.count()) / 1e9);
        engine_wall.push_back(static_cast<double>(st.wall_time.count()) / 1e9);
        if (st.cpu_tasks != 0) {
            cpu_done.push_back(static_cast<double>(st.cpu_done.count()) / 1e9);
            const double workers = static_cast<double>(std::min<std::size_t>(g_workers, st.cpu_chunks));
            if (st.cpu_span.count() > 0) {
                busy.push_back(static_cast<double>(st.cpu_time.count()) /
                               (workers * static_cast<double>(st.cpu_span.count())));
            }
        }
        if (st.gpu_tasks != 0) gpu_done.push_back(static_cast<double>(st.gpu_done.count()) / 1e9);
    }
    auto median_or_0 = [](const std::vector<double>& v) { return v.empty() ? 0.0 : median(v); };
    p.cpu_done_s = median_or_0(cpu_done);
    p.gpu_done_s = median_or_0(gpu_done);
    p.predicted_s = median_or_0(predicted);
    p.cpu_busy = median_or_0(busy);
    p.engine_wall_s = median_or_0(engine_wall);
    p.cpu_chunks = median(chunks);
    p.queue_wait_s = median(waits);
    p.seconds = median(times);
    p.times = std::move(times);
    return p;
}

// ---- printing --------------------------------------------------------------------------------

std::string fmt_time(double s) {
    char b[32];
    if (s < 1e-3) {
        std::snprintf(b, sizeof b, "%.1f us", s * 1e6);
    } else if (s < 1) {
        std::snprintf(b, sizeof b, "%.2f ms", s * 1e3);
    } else {
        std::snprintf(b, sizeof b, "%.3f s", s);
    }
    return b;
}

std::string fmt_size(std::size_t n) {
    char b[32];
    if (n >= (1u << 20) && n % (1u << 20) == 0) {
        std::snprintf(b, sizeof b, "%zuM", n >> 20);
    } else if (n >= 1024 && n % 1024 == 0) {
        std::snprintf(b, sizeof b, "%zuK", n >> 10);
    } else {
        std::snprintf(b, sizeof b, "%zu", n);
    }
    return b;
}

std::string fmt_rate(double tasks_per_s) {
    char b[32];
    if (tasks_per_s >= 1e9) {
        std::snprintf(b, sizeof b, "%.2f G/s", tasks_per_s / 1e9);
    } else {
        std::snprintf(b, sizeof b, "%.1f M/s", tasks_per_s / 1e6);
    }
    return b;
}

/// "cpu 12.0% / gpu 88.0%, model": where the last rep's tasks ran and why.
std::string fmt_placement(const tandem::ExecStats& s) {
    const double total = std::max(1.0, static_cast<double>(s.tasks));
    char b[128];
    std::snprintf(b, sizeof b, "cpu %5.1f%% / gpu %5.1f%%, %s", 100.0 * static_cast<double>(s.cpu_tasks) / total,
                  100.0 * static_cast<double>(s.gpu_tasks) / total, tandem::to_string(s.placement.reason));
    std::string out = b;
    if (s.fallback_tasks != 0) out += ", " + std::to_string(s.fallback_tasks) + " fell back";
    return out;
}

/// How an adaptive engine's reps went: a slow first rep is a size seen for the first time, slow
/// reps throughout are placement.
std::string fmt_reps(const Point& p) {
    const auto [lo, hi] = std::minmax_element(p.times.begin(), p.times.end());
    return std::to_string(p.times.size()) + " reps: first " + fmt_time(p.times.front()) + ", min " + fmt_time(*lo) +
           ", max " + fmt_time(*hi);
}

/// "learned: predicted 1.2 ms, cpu done 1.3 ms (busy 0.91), gpu done 1.1 ms" (medians).
std::string fmt_sides(const char* label, const Point& p) {
    std::string out = std::string{label} + ":";
    if (p.predicted_s > 0) out += " predicted " + fmt_time(p.predicted_s) + ",";
    if (p.cpu_done_s > 0) {
        char b[32];
        std::snprintf(b, sizeof b, " (busy %.2f)", p.cpu_busy);
        out += " cpu done " + fmt_time(p.cpu_done_s) + b;
    }
    if (p.gpu_done_s > 0) out += ", gpu done " + fmt_time(p.gpu_done_s);
    if (p.engine_wall_s > 0) out += ", completed " + fmt_time(p.engine_wall_s);
    return out;
}

std::string fmt_threshold(std::size_t t) {
    if (t == 0) return "not calibrated";
    if (t == std::numeric_limits<std::size_t>::max()) return "never";
    return std::to_string(t) + " tasks";
}

void print_models(const std::vector<tandem::OpModelInfo>& models, const std::string& op) {
    for (const tandem::OpModelInfo& m : models) {
        if (m.op != op) continue;
        std::printf("  learned models of %s; smallest batch the GPU takes part in: pageable %s, page-locked %s;"
                    " cpu stretch %.3f\n",
                    m.op.c_str(), fmt_threshold(m.threshold_pageable).c_str(), fmt_threshold(m.threshold_pinned).c_str(),
                    m.cpu_stretch);
        for (const tandem::CostModelInfo& l : m.costs) {
            const bool cpu = l.device == "cpu";
            std::printf("    %-26s %-11s fixed %11.0f ns  per task %10.4f ns", l.device.c_str(),
                        cpu ? "" : (l.pinned ? "page-locked" : "pageable"), l.fixed_ns, l.per_task_ns);
            // The CPU line sums worker time; per wall-clock task it is shared by the workers.
            if (cpu) std::printf(" (%.4f ns wall over %zu workers)", l.per_task_ns / static_cast<double>(g_workers), g_workers);
            if (!cpu) std::printf("  start delay %.1f us", l.start_delay_ns / 1e3);
            std::printf("  samples %llu  outliers %llu  %s\n", static_cast<unsigned long long>(l.samples),
                        static_cast<unsigned long long>(l.outliers), l.calibrated ? "calibrated" : "not calibrated");
        }
    }
}

/// --verbose: the learned engine's curves (points, samples, outliers) as they stand.
void print_curves(tandem::Engine& e, const std::string& op, const char* when) {
    for (const tandem::OpModelInfo& m : e.op_models()) {
        if (m.op != op) continue;
        for (const tandem::CostModelInfo& l : m.costs) {
            if (l.samples == 0) continue;
            std::printf("      [%s] %s%s: samples %llu, outliers %llu, points", when, l.device.c_str(),
                        l.device == "cpu" ? "" : (l.pinned ? " page-locked" : " pageable"),
                        static_cast<unsigned long long>(l.samples), static_cast<unsigned long long>(l.outliers));
            for (auto [x, y] : l.points) std::printf(" %.0f:%s", x, fmt_time(y / 1e9).c_str());
            std::printf("\n");
        }
    }
}

// ---- one op ----------------------------------------------------------------------------------

/// One (c) row, for --json (seconds are medians; NaN where not measured).
struct SizeRow {
    std::size_t size = 0;
    double cpu_s = 0, gpu_s = 0, best_split_s = std::numeric_limits<double>::quiet_NaN(),
           best_split_share = std::numeric_limits<double>::quiet_NaN(), best_s = 0, learned_s = 0,
           learned_predicted_s = 0, fixed4096_s = 0;
    double learned_cpu_fraction = 0;  // of the last rep's tasks
    std::size_t learned_reps = 0;
};

struct Row {
    std::string op;
    double efficiency = 0, slower_share = 0, vs_oracle = 0, worst = 0, worst_fixed = 0;
    std::size_t worst_size = 0, worst_fixed_size = 0;
    // For --json: (a)/(b) at the large size, and (c).
    bool pinned = false;
    std::size_t large = 0;
    double large_cpu_s = 0, large_gpu_s = 0, large_learned_s = 0, large_predicted_s = 0, oracle_s = 0,
           large_learned_cpu_fraction = 0;
    std::string oracle_label;
    std::vector<std::pair<double, double>> large_shares;  // (cpu share, seconds)
    std::vector<SizeRow> sizes;
};

/// Runs `body(engine)` on a fresh engine of `config` and says how long that took.
template <class Body>
void with_engine(const char* label, const tandem::EngineConfig& config, Body&& body, const std::string& trace = {}) {
    const auto t0 = Clock::now();
    {
        tandem::EngineConfig c = config;
        if (!trace.empty()) c.trace = tandem::TraceConfig{true, std::size_t{1} << 18};
        tandem::Engine engine{c};
        body(engine);
        if (!trace.empty()) engine.save_trace(trace);
    }
    std::printf("  %-12s done in %5.1f s\n", label, seconds_since(t0));
}

template <class C>
Row run_case(const C& c) {
    std::printf("\n==== %s: %s batches; (a)/(b) at %s tasks; (c) at %s..%s ====\n", c.name.c_str(),
                c.pinned ? "page-locked" : "pageable", fmt_size(c.large).c_str(), fmt_size(c.sizes.front()).c_str(),
                fmt_size(c.sizes.back()).c_str());
    std::vector<std::size_t> baseline_sizes = c.sizes;
    if (std::find(baseline_sizes.begin(), baseline_sizes.end(), c.large) == baseline_sizes.end()) {
        baseline_sizes.push_back(c.large);
        std::sort(baseline_sizes.begin(), baseline_sizes.end());
    }
    constexpr std::size_t shares = std::size(sweep_shares);
    std::map<std::size_t, Point> cpu, gpu, fixed, learned_c;
    std::vector<std::map<std::size_t, Point>> split(shares);
    Point learned_large;
    std::vector<tandem::OpModelInfo> models;

    // Forced placements never change, so an untimed batch before each point only warms caches
    // and pools. The learned and the fixed-4096 engines (which also splits by the models above
    // its threshold) get only their warm-up sequence: from then on every batch counts, and
    // teaches them.
    with_engine("cpu-only", cpu_only(), [&](tandem::Engine& e) {
        for (std::size_t n : baseline_sizes) cpu[n] = measure(e, c, n, 1);
    });
    with_engine("gpu-only", gpu_only(), [&](tandem::Engine& e) {
        for (std::size_t n : baseline_sizes) gpu[n] = measure(e, c, n, 1);
    });
    const auto sweep_start = Clock::now();
    for (std::size_t i = 0; i < shares; ++i) {
        tandem::EngineConfig sc = fixed_share(sweep_shares[i]);
        const bool traced = !g_trace_dir.empty() && sweep_shares[i] == 0.2;
        if (traced) sc.trace = tandem::TraceConfig{true, std::size_t{1} << 18};
        tandem::Engine e{sc};
        struct Save {
            tandem::Engine& e;
            std::string path;
            ~Save() {
                if (path.empty()) return;
                try {
                    e.save_trace(path);
                } catch (const std::exception& x) {
                    std::fprintf(stderr, "hybrid: %s\n", x.what());
                }
            }
        } save{e, traced ? g_trace_dir + "/" + c.name + "_share_0.20.json" : std::string{}};
        split[i][c.large] = measure(e, c, c.large, 1);
        if (!in_reduced_sweep(sweep_shares[i])) continue;
        for (std::size_t n : c.sizes) {
            if (n >= reduced_from && n != c.large) split[i][n] = measure(e, c, n, 1);
        }
    }
    std::printf("  %-12s done in %5.1f s\n", "fixed shares", seconds_since(sweep_start));
    auto warm_up = [&](tandem::Engine& e) {
        double s = 0;
        for (std::size_t n : warm_up_sizes) run_once(e, c, std::min(n, c.payloads.size()), s);
    };
    with_engine("fixed-4096", fixed_4096(), [&](tandem::Engine& e) {
        warm_up(e);
        for (std::size_t n : c.sizes) fixed[n] = measure(e, c, n, 0);
    });
    with_engine("learned", learned(), [&](tandem::Engine& e) {
        warm_up(e);
        if (g_verbose) print_curves(e, c.name, "after the warm-up");
        for (std::size_t n : c.sizes) {
            learned_c[n] = measure(e, c, n, 0);
            if (g_verbose) print_curves(e, c.name, ("after " + fmt_size(n)).c_str());
        }
        // (a) and (b) after (c), so that (c) sees only the 10-batch warm-up; by now the models
        // have seen the op at every size.
        learned_large = measure(e, c, c.large, 2);
        models = e.op_models();
    }, g_trace_dir.empty() ? std::string{} : g_trace_dir + "/" + c.name + "_learned.json");

    // More passes of (c)'s four configurations, in the reverse order, each in a fresh engine (the
    // learned one again after only its warm-up). The host has slow periods of a few seconds:
    // in one pass the CPU-only engine took 113 us for a batch it ran in 26-28 us in every other
    // run. A configuration measured once moves its side of a ratio alone; each configuration's
    // point now comes from its faster pass (the same rule for every one), and every pass's
    // worst learned ratio is printed too. The fixed-share sweep is measured once.
    struct Pass {
        std::map<std::size_t, Point> cpu, gpu, fixed, learned;
    };
    std::vector<Pass> passes(1, Pass{cpu, gpu, fixed, learned_c});
    for (int pass = 1; pass < g_passes; ++pass) {
        Pass p;
        with_engine("learned", learned(), [&](tandem::Engine& e) {
            warm_up(e);
            for (std::size_t n : c.sizes) p.learned[n] = measure(e, c, n, 0);
        });
        with_engine("fixed-4096", fixed_4096(), [&](tandem::Engine& e) {
            warm_up(e);
            for (std::size_t n : c.sizes) p.fixed[n] = measure(e, c, n, 0);
        });
        with_engine("gpu-only", gpu_only(), [&](tandem::Engine& e) {
            for (std::size_t n : c.sizes) p.gpu[n] = measure(e, c, n, 1);
        });
        with_engine("cpu-only", cpu_only(), [&](tandem::Engine& e) {
            for (std::size_t n : c.sizes) p.cpu[n] = measure(e, c, n, 1);
        });
        auto keep_faster = [](std::map<std::size_t, Point>& into, const std::map<std::size_t, Point>& from) {
            for (const auto& [size, point] : from) {
                auto it = into.find(size);
                if (it == into.end() || point.seconds < it->second.seconds) into[size] = point;
            }
        };
        keep_faster(cpu, p.cpu);
        keep_faster(gpu, p.gpu);
        keep_faster(fixed, p.fixed);
        keep_faster(learned_c, p.learned);
        passes.push_back(std::move(p));
    }

    // (a) and (b) at the large size.
    const double n = static_cast<double>(c.large);
    std::printf("  at %s tasks:\n", fmt_size(c.large).c_str());
    auto line = [&](const std::string& label, const Point& p) {
        std::printf("    %-16s %10s  %10s  %3zu reps  %s\n", label.c_str(), fmt_time(p.seconds).c_str(),
                    fmt_rate(n / p.seconds).c_str(), p.times.size(), fmt_placement(p.last).c_str());
    };
    line("cpu-only", cpu[c.large]);
    line("gpu-only", gpu[c.large]);
    std::string oracle_label = "cpu-only";
    double oracle = cpu[c.large].seconds;
    if (gpu[c.large].seconds < oracle) oracle = gpu[c.large].seconds, oracle_label = "gpu-only";
    for (std::size_t i = 0; i < shares; ++i) {
        char label[32];
        std::snprintf(label, sizeof label, "cpu_share %.2f", sweep_shares[i]);
        line(label, split[i][c.large]);
        if (split[i][c.large].seconds < oracle) oracle = split[i][c.large].seconds, oracle_label = label;
    }
    line("learned", learned_large);
    std::printf("    learned %s\n", fmt_reps(learned_large).c_str());
    std::printf("    learned predicted %s (cpu alone %s, devices alone %s), planned %llu tasks on the CPU\n",
                fmt_time(static_cast<double>(learned_large.last.placement.predicted.count()) / 1e9).c_str(),
                fmt_time(static_cast<double>(learned_large.last.placement.predicted_cpu.count()) / 1e9).c_str(),
                fmt_time(static_cast<double>(learned_large.last.placement.predicted_devices.count()) / 1e9).c_str(),
                static_cast<unsigned long long>(learned_large.last.placement.planned_cpu_tasks));
    std::printf("    %s\n", fmt_sides("learned", learned_large).c_str());
    std::printf("    %s\n", fmt_sides("cpu-only", cpu[c.large]).c_str());

    Row row;
    row.op = c.name;
    row.pinned = c.pinned;
    row.large = c.large;
    row.large_cpu_s = cpu[c.large].seconds;
    row.large_gpu_s = gpu[c.large].seconds;
    row.large_learned_s = learned_large.seconds;
    row.large_predicted_s = static_cast<double>(learned_large.last.placement.predicted.count()) / 1e9;
    row.oracle_s = oracle;
    row.large_learned_cpu_fraction = static_cast<double>(learned_large.last.cpu_tasks) /
                                     std::max(1.0, static_cast<double>(learned_large.last.tasks));
    row.oracle_label = oracle_label;
    for (std::size_t i = 0; i < shares; ++i) row.large_shares.emplace_back(sweep_shares[i], split[i][c.large].seconds);
    const double tp_cpu = n / cpu[c.large].seconds, tp_gpu = n / gpu[c.large].seconds;
    row.efficiency = (n / learned_large.seconds) / (tp_cpu + tp_gpu);
    row.slower_share = std::min(tp_cpu, tp_gpu) / std::max(tp_cpu, tp_gpu);
    const bool balanced = row.slower_share >= 0.10;
    std::printf("  (a) co-execution: learned %s / (cpu %s + gpu %s) = %.3f; slower side %.0f%% of the faster: %s\n",
                fmt_rate(n / learned_large.seconds).c_str(), fmt_rate(tp_cpu).c_str(), fmt_rate(tp_gpu).c_str(),
                row.efficiency, 100 * row.slower_share,
                balanced ? (row.efficiency >= 0.95 ? "target >= 0.95 met" : "target >= 0.95 NOT met")
                         : "one side dominates, no target");
    row.vs_oracle = learned_large.seconds / oracle;
    std::printf("  (b) learned / oracle (%s, %s) = %.3f: target <= 1.03 %s\n", oracle_label.c_str(),
                fmt_time(oracle).c_str(), row.vs_oracle, row.vs_oracle <= 1.03 ? "met" : "NOT met");

    // (c) per size.
    std::printf("  (c) per batch size (medians; ratio = time / best):\n");
    std::printf("    %6s %10s %10s %20s %10s %10s %6s %10s %6s  %s\n", "size", "cpu-only", "gpu-only", "best share",
                "learned", "predicted", "ratio", "fixed4096", "ratio", "learned placement (last rep); its reps");
    for (std::size_t size : c.sizes) {
        double best = std::min(cpu[size].seconds, gpu[size].seconds);
        std::string best_share = "-";
        SizeRow sr;
        if (size >= reduced_from) {
            double best_split = std::numeric_limits<double>::infinity();
            for (std::size_t i = 0; i < shares; ++i) {
                if (!in_reduced_sweep(sweep_shares[i])) continue;
                const double t = split[i].at(size).seconds;
                if (t < best_split) {
                    best_split = t;
                    sr.best_split_s = t;
                    sr.best_split_share = sweep_shares[i];
                    char b[48];
                    std::snprintf(b, sizeof b, "%s @%.2f", fmt_time(t).c_str(), sweep_shares[i]);
                    best_share = b;
                }
            }
            best = std::min(best, best_split);
        }
        const Point& l = learned_c[size];
        const double ratio = l.seconds / best, fixed_ratio = fixed[size].seconds / best;
        if (ratio > row.worst) row.worst = ratio, row.worst_size = size;
        if (fixed_ratio > row.worst_fixed) row.worst_fixed = fixed_ratio, row.worst_fixed_size = size;
        sr.size = size;
        sr.cpu_s = cpu[size].seconds;
        sr.gpu_s = gpu[size].seconds;
        sr.best_s = best;
        sr.learned_s = l.seconds;
        sr.learned_predicted_s = static_cast<double>(l.last.placement.predicted.count()) / 1e9;
        sr.fixed4096_s = fixed[size].seconds;
        sr.learned_cpu_fraction =
            static_cast<double>(l.last.cpu_tasks) / std::max(1.0, static_cast<double>(l.last.tasks));
        sr.learned_reps = l.times.size();
        row.sizes.push_back(sr);
        std::printf("    %6s %10s %10s %20s %10s %10s %6.3f %10s %6.3f  %s; %s\n", fmt_size(size).c_str(),
                    fmt_time(cpu[size].seconds).c_str(), fmt_time(gpu[size].seconds).c_str(), best_share.c_str(),
                    fmt_time(l.seconds).c_str(),
                    fmt_time(static_cast<double>(l.last.placement.predicted.count()) / 1e9).c_str(), ratio,
                    fmt_time(fixed[size].seconds).c_str(), fixed_ratio, fmt_placement(l.last).c_str(),
                    fmt_reps(l).c_str());
        const Point& co = cpu[size];
        std::printf("           learned reps on cpu/gpu/both %zu/%zu/%zu, cpu chunks %.0f, queue wait %s;"
                    " cpu-only cpu chunks %.0f, queue wait %s\n",
                    l.on_cpu, l.on_gpu, l.on_both, l.cpu_chunks, fmt_time(l.queue_wait_s).c_str(), co.cpu_chunks,
                    fmt_time(co.queue_wait_s).c_str());
        std::printf("           %s; %s\n", fmt_sides("learned", l).c_str(), fmt_sides("cpu-only", co).c_str());
    }
    if (passes.size() > 1) {
        // Each pass against its own CPU-only and GPU-only points (and the one sweep).
        std::printf("  (c) worst learned ratio in each pass alone:");
        for (const Pass& p : passes) {
            double worst = 0;
            std::size_t at = 0;
            for (std::size_t size : c.sizes) {
                double best = std::min(p.cpu.at(size).seconds, p.gpu.at(size).seconds);
                if (size >= reduced_from) {
                    for (std::size_t i = 0; i < shares; ++i) {
                        if (in_reduced_sweep(sweep_shares[i])) best = std::min(best, split[i].at(size).seconds);
                    }
                }
                const double r = p.learned.at(size).seconds / best;
                if (r > worst) worst = r, at = size;
            }
            std::printf(" %.3f at %s;", worst, fmt_size(at).c_str());
        }
        std::printf(" below, each configuration's faster pass\n");
    }
    std::printf("  (c) worst learned ratio %.3f at %s: target <= 1.05 %s; worst fixed-4096 ratio %.3f at %s\n",
                row.worst, fmt_size(row.worst_size).c_str(), row.worst <= 1.05 ? "met" : "NOT met", row.worst_fixed,
                fmt_size(row.worst_fixed_size).c_str());
    print_models(models, c.name);
    g_heap.trim();
    return row;
}

// ---- the mixer's round count -------------------------------------------------------------------

/// The round count at which the GPU alone is 2-8x the CPU alone at `n` tasks. While the GPU
/// is bound by its copies, that ratio grows about in proportion to the rounds, so each step
/// jumps by the power of two that would bring it to 4 (at least one doubling or halving).
std::uint32_t calibrate_rounds(std::span<const std::uint32_t> payloads, std::size_t n) {
    std::printf("\n==== calibrating rounds at %s tasks (gpu-only rate / cpu-only rate in [2, 8]) ====\n",
                fmt_size(n).c_str());
    tandem::Engine cpu{cpu_only()};
    tandem::Engine gpu{gpu_only()};
    std::map<std::uint32_t, double> tried;  // rounds -> ratio
    std::uint32_t rounds = 256;
    for (int step = 0; step < 8; ++step) {
        const Case<std::uint32_t, std::uint32_t, Mix> c{"calibrate_rounds_" + std::to_string(rounds), Mix{rounds}, false,
                                                        payloads, n, {}};
        const double tc = measure(cpu, c, n, 1).seconds, tg = measure(gpu, c, n, 1).seconds;
        const double ratio = tc / tg;
        tried[rounds] = ratio;
        std::printf("  %5u rounds: cpu-only %s, gpu-only %s: ratio %.2f\n", rounds, fmt_time(tc).c_str(),
                    fmt_time(tg).c_str(), ratio);
        if (ratio >= 2 && ratio <= 8) break;
        int shift = static_cast<int>(std::lround(std::log2(4 / ratio)));
        if (shift == 0) shift = ratio < 2 ? 1 : -1;
        shift = std::clamp(shift, -4, 4);
        const double next = std::clamp(std::ldexp(static_cast<double>(rounds), shift), 1.0, 65536.0);
        const auto next_rounds = static_cast<std::uint32_t>(next);
        if (tried.count(next_rounds) != 0) break;  // oscillating between neighbours: take the better
        rounds = next_rounds;
    }
    auto distance = [](double ratio) { return std::abs(std::log2(ratio / 4)); };
    auto best = tried.begin();
    for (auto it = tried.begin(); it != tried.end(); ++it) {
        if (distance(it->second) < distance(best->second)) best = it;
    }
    std::printf("  chosen: %u rounds (gpu-only / cpu-only rate %.2f)\n", best->first, best->second);
    return best->first;
}

// ---- (d): two GPUs, one slowed ---------------------------------------------------------------

/// Tasks each device ran since `before`.
std::vector<double> device_tasks_since(const tandem::Engine& engine, const std::vector<tandem::DeviceMetrics>& before) {
    const auto now = engine.metrics().devices;
    std::vector<double> v(now.size());
    for (std::size_t d = 0; d < now.size(); ++d) {
        v[d] = static_cast<double>(now[d].tasks - (d < before.size() ? before[d].tasks : 0));
    }
    return v;
}

struct TwoGpuRow {
    std::string op;
    double fast_alone = 0, slow_alone = 0, both = 0, ratio = 0, fast_share = 0, ideal_share = 0;
};

/// (d): GPU-only engines (no CPU share, so the figure is the devices' own): device 0 alone,
/// a device slowed by `repeats` kernel repetitions alone (device 0 again: it stands for
/// device 1 only on a host of two GPUs of one model in like slots; the log prints both
/// names), and both devices with device 1 slowed, its split learned (the engine's defaults,
/// stealing on: the shares printed are what each device ran, not only the plan). Throughput
/// of both ÷ the sum of the two alone: >= 0.95.
template <class C>
TwoGpuRow run_two_gpus(const C& c, std::uint32_t repeats) {
    std::printf("\n==== (d) %s: two GPUs, device 1 slowed by %u kernel repetitions, %s tasks, GPU only ====\n",
                c.name.c_str(), repeats, fmt_size(c.large).c_str());
    auto config = [&](std::size_t devices, int slowed) {
        auto k = gpu_only();
        k.gpu.max_devices = devices;
        if (slowed >= 0) {
            k.gpu.faults.kernel_repeats = repeats;
            k.gpu.faults.device = slowed;
        }
        return k;
    };
    TwoGpuRow row;
    row.op = c.name;
    for (int d = 0; d < 2; ++d) {
        cudaDeviceProp p{};
        cudaGetDeviceProperties(&p, d);
        std::printf("  device %d: %s, PCI %04x:%02x:%02x\n", d, p.name, p.pciDomainID, p.pciBusID, p.pciDeviceID);
    }
    double t_fast = 0, t_slow = 0, t_both = 0;
    {
        tandem::Engine e{config(1, -1)};
        t_fast = measure(e, c, c.large, 10).seconds;
    }
    {
        tandem::Engine e{config(1, 0)};
        t_slow = measure(e, c, c.large, 10).seconds;
    }
    std::vector<double> tasks;
    {
        tandem::Engine e{config(2, 1)};
        double s = 0;
        for (int i = 0; i < 20; ++i) run_once(e, c, c.large, s);  // learn both devices
        const auto before = e.metrics().devices;
        t_both = measure(e, c, c.large, 0).seconds;
        tasks = device_tasks_since(e, before);
    }
    const double n = static_cast<double>(c.large);
    row.fast_alone = n / t_fast;
    row.slow_alone = n / t_slow;
    row.both = n / t_both;
    row.ratio = row.both / (row.fast_alone + row.slow_alone);
    row.ideal_share = row.fast_alone / (row.fast_alone + row.slow_alone);
    const double total = tasks.size() >= 2 ? tasks[0] + tasks[1] : 0;
    row.fast_share = total > 0 ? tasks[0] / total : 0;
    std::printf("  device 0 alone %s (%.0f M tasks/s); slowed device alone %s (%.0f M tasks/s); both %s (%.0f M tasks/s)\n",
                fmt_time(t_fast).c_str(), row.fast_alone / 1e6, fmt_time(t_slow).c_str(), row.slow_alone / 1e6,
                fmt_time(t_both).c_str(), row.both / 1e6);
    std::printf("  (d) both / (fast + slow) = %.3f (target >= 0.95); fast device ran %.1f%% of the tasks (speeds say %.1f%%)\n",
                row.ratio, 100 * row.fast_share, 100 * row.ideal_share);
    return row;
}

/// Raw copies, no engine: `bytes` host->device then device->host from page-locked memory, on
/// device 0 alone and on both devices at once (one host thread each). The ratio says how much
/// of two devices' copy bandwidth this host gives at once: a transfer-bound op cannot reach the
/// (d) target on a host whose two GPUs share a link or a memory controller.
double raw_copy_seconds(int device, std::size_t bytes, int reps) {
    cudaSetDevice(device);
    void* host = nullptr;
    void* dev = nullptr;
    cudaStream_t s{};
    if (cudaMallocHost(&host, bytes) != cudaSuccess || cudaMalloc(&dev, bytes) != cudaSuccess ||
        cudaStreamCreate(&s) != cudaSuccess) {
        std::fprintf(stderr, "raw copy check: CUDA allocation failed on device %d\n", device);
        std::exit(2);
    }
    std::memset(host, 1, bytes);
    cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, s);  // warm-up
    cudaStreamSynchronize(s);
    const auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) {
        cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, s);
        cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, s);
    }
    cudaStreamSynchronize(s);
    const double t = seconds_since(t0);
    cudaStreamDestroy(s);
    cudaFree(dev);
    cudaFreeHost(host);
    return t;
}

void raw_copy_check() {
    const std::size_t bytes = std::size_t{64} << 20;
    const int reps = 20;
    const double alone = raw_copy_seconds(0, bytes, reps);
    double both[2] = {0, 0};
    std::thread other{[&] { both[1] = raw_copy_seconds(1, bytes, reps); }};
    both[0] = raw_copy_seconds(0, bytes, reps);
    other.join();
    const double gbs_alone = 2.0 * reps * bytes / alone / 1e9;
    const double gbs_both = 2.0 * reps * bytes / both[0] / 1e9 + 2.0 * reps * bytes / both[1] / 1e9;
    std::printf("raw copies (64 MiB H2D + D2H, page-locked, 20 times): device 0 alone %.1f GB/s; both at once "
                "%.1f GB/s together = %.2f of twice one device\n",
                gbs_alone, gbs_both, gbs_both / (2 * gbs_alone));
}

// ---- main ------------------------------------------------------------------------------------

std::vector<std::uint32_t> u32_payloads(std::size_t n) {
    std::vector<std::uint32_t> v(n);
    std::uint32_t x = 12345;
    for (auto& e : v) e = x = x * 747796405u + 2891336453u;
    return v;
}

std::vector<Message> messages(std::size_t n) {
    std::vector<Message> v(n);
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    for (auto& m : v) {
        for (std::size_t i = 0; i < sizeof m.bytes; i += 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for (std::size_t b = 0; b < 8; ++b) m.bytes[i + b] = static_cast<std::uint8_t>(x >> (8 * b));
        }
    }
    return v;
}

/// The --json file: (a), (b) and (c)'s worst as results, every (c) row as "sizes" and the
/// large-size sweep as "large".
bool write_json(const std::string& path, const std::vector<Row>& rows, const std::string& gpu_name, int devices,
                int argc, char** argv) {
    bench::json::Report report{"hybrid"};
    report.set_command(argc, argv);
    report.set_gpu(gpu_name, devices);
    for (const Row& r : rows) {
        const double n = static_cast<double>(r.large);
        const bool balanced = r.slower_share >= 0.10;
        report.add({r.op + "_coexec_efficiency", n / r.large_learned_s, n / r.large_cpu_s + n / r.large_gpu_s,
                    "tasks/s", r.efficiency, balanced ? ">=" : "", 0.95, r.efficiency >= 0.95});
        report.add({r.op + "_vs_oracle", r.large_learned_s * 1e3, r.oracle_s * 1e3, "ms", r.vs_oracle, "<=", 1.03,
                    r.vs_oracle <= 1.03});
        const auto at = [&](std::size_t size) {
            for (const SizeRow& s : r.sizes) {
                if (s.size == size) return s;
            }
            return SizeRow{};
        };
        const SizeRow w = at(r.worst_size), f = at(r.worst_fixed_size);
        report.add({r.op + "_worst_size_vs_best", w.learned_s * 1e3, w.best_s * 1e3, "ms", r.worst, "<=", 1.05,
                    r.worst <= 1.05});
        report.add({r.op + "_fixed4096_worst_vs_best", f.fixed4096_s * 1e3, f.best_s * 1e3, "ms", r.worst_fixed, "", 0,
                    false});
    }
    report.extra("sizes", [&](bench::json::Writer& w) {
        w.begin_array();
        for (const Row& r : rows) {
            for (const SizeRow& s : r.sizes) {
                w.begin_object();
                w.member("op", r.op).member("size", s.size).member("cpu_only_s", s.cpu_s).member("gpu_only_s", s.gpu_s);
                w.member("best_split_s", s.best_split_s).member("best_split_cpu_share", s.best_split_share);
                w.member("oracle_s", s.best_s).member("learned_s", s.learned_s);
                w.member("learned_predicted_s", s.learned_predicted_s).member("fixed4096_s", s.fixed4096_s);
                w.member("learned_cpu_fraction", s.learned_cpu_fraction).member("learned_reps", s.learned_reps);
                w.end_object();
            }
        }
        w.end_array();
    });
    report.extra("large", [&](bench::json::Writer& w) {
        w.begin_array();
        for (const Row& r : rows) {
            w.begin_object();
            w.member("op", r.op).member("pinned", r.pinned).member("size", r.large);
            w.member("cpu_only_s", r.large_cpu_s).member("gpu_only_s", r.large_gpu_s);
            w.member("learned_s", r.large_learned_s).member("learned_predicted_s", r.large_predicted_s);
            w.member("learned_cpu_fraction", r.large_learned_cpu_fraction);
            w.member("oracle_s", r.oracle_s).member("oracle", r.oracle_label);
            w.member("slower_side_share", r.slower_share);
            w.key("cpu_shares").begin_array();
            for (const auto& [share, s] : r.large_shares) w.begin_object().member("cpu_share", share).member("s", s).end_object();
            w.end_array();
            w.end_object();
        }
        w.end_array();
    });
    return report.write(path);
}

int usage() {
    std::fprintf(stderr,
                 "usage: hybrid [--quick] [--only map_pageable|map_pinned|sha256_64B|rounds] [--rounds N] [--workers N] [--passes N] [--no-cpu-stretch] [--trace DIR] [--verbose] [--json FILE]\n"
                 "       --passes: measure (c)'s CPU-only, GPU-only, fixed-4096 and learned engines N times (default 2, 1..10), each\n"
                 "                 configuration's point from its faster pass\n"
                 "       --workers: CPU workers of every engine (default: one per hardware thread less one)\n"
                 "       --no-cpu-stretch: placement does not learn the CPU's stretch (ModelConfig::learn_cpu_stretch)\n"
                 "       --trace DIR: save the learned and the 0.20-share engines' traces there, per op\n"
                 "       --verbose: print the learned engine's curves after its warm-up and after each size\n"
                 "       hybrid --two-gpus R [--quick] [--rounds N]   (d): two GPUs, device 1 slowed by R kernel repetitions\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) try {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows as it happens, even piped
    bool quick = false;
    std::string only, json_path;
    std::uint32_t fixed_rounds = 0, two_gpus_repeats = 0;
    long workers = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") {
            quick = true;
        } else if (a == "--json" && i + 1 < argc) {
            json_path = argv[++i];
        } else if (a == "--only" && i + 1 < argc) {
            only = argv[++i];
        } else if (a == "--two-gpus" && i + 1 < argc) {
            const long r = std::strtol(argv[++i], nullptr, 10);
            if (r < 1 || r > 1000) return usage();
            two_gpus_repeats = static_cast<std::uint32_t>(r);
        } else if (a == "--trace" && i + 1 < argc) {
            g_trace_dir = argv[++i];
        } else if (a == "--verbose") {
            g_verbose = true;
        } else if (a == "--passes" && i + 1 < argc) {
            const long p = std::strtol(argv[++i], nullptr, 10);
            if (p < 1 || p > 10) return usage();
            g_passes = static_cast<int>(p);
        } else if (a == "--no-cpu-stretch") {
            g_cpu_stretch = false;
        } else if (a == "--workers" && i + 1 < argc) {
            workers = std::strtol(argv[++i], nullptr, 10);
            if (workers < 1 || workers > 1024) return usage();
        } else if (a == "--rounds" && i + 1 < argc) {
            const long r = std::strtol(argv[++i], nullptr, 10);
            if (r < 1 || r > (1 << 24)) return usage();
            fixed_rounds = static_cast<std::uint32_t>(r);
        } else {
            return usage();
        }
    }
    // "rounds" also matches "rounds_N", the name the op is printed under.
    auto wanted = [&](const std::string& op) {
        return only.empty() || only == op || (op == "rounds" && only.rfind("rounds_", 0) == 0);
    };
    if (!only.empty() && !wanted("map_pageable") && !wanted("map_pinned") && !wanted("sha256_64B") && !wanted("rounds")) {
        return usage();
    }
    if (!sha256_self_test()) return 1;

    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::fprintf(stderr, "hybrid: no CUDA device; this benchmark compares CPU and GPU placements\n");
        return 2;
    }
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, 0);
    std::string gpu_name = prop.name;
    if (devices > 1) gpu_name = std::to_string(devices) + " x " + gpu_name;
    const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
    g_workers = workers > 0 ? static_cast<std::size_t>(workers) : std::max<std::size_t>(cores - 1, 1);
    std::printf("hybrid placement benchmark: %s, %zu cores, %zu CPU workers in every engine%s\n", gpu_name.c_str(), cores,
                g_workers, quick ? ", --quick" : "");
    std::printf("configurations: cpu-only (gpu.enabled = false); gpu-only (threshold 1, cpu_helps = false); "
                "cpu_share s (threshold 1, fixed share); fixed-4096 (threshold 4096); learned (defaults)\n");

    const auto start = Clock::now();
    const std::size_t div = quick ? 4 : 1;
    if (two_gpus_repeats != 0) {
        if (devices < 2) {
            std::fprintf(stderr, "hybrid --two-gpus: needs two CUDA devices, found %d\n", devices);
            return 2;
        }
        // A compute-bound mixer (page-locked batches: the copies are small next to the kernel)
        // and SHA-256 (pageable).
        const std::size_t n = (std::size_t{16} << 20) / div;
        const std::vector<std::uint32_t> w = u32_payloads(n);
        const std::uint32_t rounds = fixed_rounds != 0 ? fixed_rounds : 256;
        raw_copy_check();
        std::vector<TwoGpuRow> d_rows;
        // Compute-bound: 4096 rounds per 4-byte task, the copies a few per cent of the kernel.
        const std::size_t heavy_n = (std::size_t{4} << 20) / div;
        const std::vector<std::uint32_t> heavy(w.begin(), w.begin() + static_cast<std::ptrdiff_t>(heavy_n));
        d_rows.push_back(run_two_gpus(Case<std::uint32_t, std::uint32_t, Mix>{"rounds_4096_pinned", Mix{4096}, true,
                                                                              heavy, heavy_n, {}},
                                      two_gpus_repeats));
        d_rows.push_back(run_two_gpus(Case<std::uint32_t, std::uint32_t, Mix>{"rounds_" + std::to_string(rounds) + "_pinned",
                                                                              Mix{rounds}, true, w, n, {}},
                                      two_gpus_repeats));
        const std::vector<Message> msgs = messages((std::size_t{4} << 20) / div);
        d_rows.push_back(run_two_gpus(Case<Message, Digest, Sha256>{"sha256_64B", Sha256{}, false, msgs, msgs.size(), {}},
                                      two_gpus_repeats));
        std::printf("\n%-20s %12s %12s %12s %8s %5s %11s %11s\n", "op", "fast M/s", "slowed M/s", "both M/s", "(d)", "met",
                    "fast share", "by speeds");
        for (const auto& r : d_rows) {
            std::printf("%-20s %12.0f %12.0f %12.0f %8.3f %5s %10.1f%% %10.1f%%\n", r.op.c_str(), r.fast_alone / 1e6,
                        r.slow_alone / 1e6, r.both / 1e6, r.ratio, r.ratio >= 0.95 ? "yes" : "no", 100 * r.fast_share,
                        100 * r.ideal_share);
        }
        std::printf("machine: %s, %zu cores; device 1 slowed by %u kernel repetitions\n", gpu_name.c_str(), cores,
                    two_gpus_repeats);
        if (g_wrong != 0) std::printf("WRONG RESULTS: %llu outputs differ from the host reference\n",
                                      static_cast<unsigned long long>(g_wrong));
        return g_wrong == 0 ? 0 : 3;
    }
    // (c)'s sizes; --quick drops the largest.
    std::vector<std::size_t> map_sizes{1, 16, 256, 4096, 65536, std::size_t{1} << 20, std::size_t{16} << 20};
    std::vector<std::size_t> sha_sizes{1, 16, 256, 4096, 65536, std::size_t{1} << 20, std::size_t{4} << 20};
    if (quick) {
        map_sizes.pop_back();
        sha_sizes.pop_back();
    }
    const std::size_t map_large = (std::size_t{16} << 20) / div, sha_large = (std::size_t{1} << 20) / div,
                      rounds_large = (std::size_t{4} << 20) / div;

    std::vector<Row> rows;
    std::vector<std::uint32_t> words;
    if (wanted("map_pageable") || wanted("map_pinned") || wanted("rounds")) {
        words = u32_payloads(std::max({map_sizes.back(), map_large, rounds_large}));
    }
    if (wanted("map_pageable")) {
        rows.push_back(run_case(Case<std::uint32_t, std::uint32_t, Scramble>{"map_pageable", Scramble{}, false, words,
                                                                             map_large, map_sizes}));
    }
    if (wanted("map_pinned")) {
        rows.push_back(run_case(
            Case<std::uint32_t, std::uint32_t, Scramble>{"map_pinned", Scramble{}, true, words, map_large, map_sizes}));
    }
    if (wanted("sha256_64B")) {
        const std::vector<Message> msgs = messages(std::max(sha_sizes.back(), sha_large));
        rows.push_back(
            run_case(Case<Message, Digest, Sha256>{"sha256_64B", Sha256{}, false, msgs, sha_large, sha_sizes}));
    }
    if (wanted("rounds")) {
        const std::uint32_t rounds =
            fixed_rounds != 0 ? fixed_rounds : calibrate_rounds(std::span<const std::uint32_t>{words}, rounds_large);
        rows.push_back(run_case(Case<std::uint32_t, std::uint32_t, Mix>{"rounds_" + std::to_string(rounds), Mix{rounds},
                                                                       false, words, rounds_large, map_sizes}));
    }

    std::printf("\ntotal run time %.1f s\n", seconds_since(start));
    if (g_wrong != 0) std::printf("WRONG RESULTS: %llu outputs differ from the host reference\n",
                                  static_cast<unsigned long long>(g_wrong));
    // The summary: (a) with the slower side's share of the faster one's throughput (the
    // target applies from 10%), (b), and the worst (c) ratios of the learned and the fixed
    // 4096-task threshold engines, with the batch size where each was worst.
    std::printf("\n%-14s %8s %7s %4s %12s %4s %10s %8s %4s %11s %8s\n", "op", "(a) eff", "slower", "met",
                "(b) /oracle", "met", "(c) worst", "at size", "met", "fixed-4096", "at size");
    for (const Row& r : rows) {
        const char* a_met = r.slower_share < 0.10 ? "n/a" : (r.efficiency >= 0.95 ? "yes" : "no");
        std::printf("%-14s %8.3f %6.0f%% %4s %12.3f %4s %10.3f %8s %4s %11.3f %8s\n", r.op.c_str(), r.efficiency,
                    100 * r.slower_share, a_met, r.vs_oracle, r.vs_oracle <= 1.03 ? "yes" : "no", r.worst,
                    fmt_size(r.worst_size).c_str(), r.worst <= 1.05 ? "yes" : "no", r.worst_fixed,
                    fmt_size(r.worst_fixed_size).c_str());
    }
    std::printf("machine: %s, %zu cores%s\n", gpu_name.c_str(), cores, g_cpu_stretch ? "" : "; --no-cpu-stretch");
    if (!json_path.empty() && !write_json(json_path, rows, prop.name, devices, argc, argv)) return 1;
    return g_wrong == 0 ? 0 : 3;
} catch (const std::exception& e) {
    std::fprintf(stderr, "hybrid: %s\n", e.what());
    return 1;
}
