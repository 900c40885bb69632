// GPU figures, each against a raw CUDA baseline written here and run in the same process:
//   (a) a 4 KiB batch round trip          vs raw H2D + kernel + D2H on one stream   (≤ 1.25×)
//   (b) a 1 GiB transfer-bound map        vs the raw bidirectional copy rate          (≥ 0.9×)
//   (c) a balanced batch (copy ≈ kernel)  vs a hand-written multi-stream pipeline     (≤ 1.05×)
//                                         and vs the sequential version
//   (d) CPU and GPU together              vs the sum of each alone                    (≥ 0.9×)
//
//   usage: gpu_bench [--devices N] [--quick] [--only a|b|c|d] [--json FILE] [--trace [FILE]]
//   (--json: the results as JSON too, bench/json_out.hpp; bench/plot.py draws them.
//    --trace prints stage phases; with FILE, (c)'s last engine writes its trace there.)
//
// Every Tandem run uses batches built in the engine's page-locked memory (the fast path the
// engine offers) and GPU-only execution (cpu_helps = false) except in (d).
#include <tandem/gpu/map.cuh>
#include <tandem/tandem.hpp>

#include "../json_out.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
bool g_trace = false;
std::string g_trace_file;  // --trace FILE: Trace Event Format JSON of (c)

/// Prints how busy each engine of the GPU was during the last `chunks` traced chunks.
void print_trace(std::vector<tandem::GpuChunkTrace> t, std::size_t chunks) {
    if (t.size() > chunks) t.erase(t.begin(), t.end() - static_cast<std::ptrdiff_t>(chunks));
    if (t.empty()) return;
    std::sort(t.begin(), t.end(), [](auto& a, auto& b) { return a.h2d_start < b.h2d_start; });
    const float t0 = t.front().h2d_start;
    float end = 0, h2d = 0, kernel = 0, d2h = 0;
    for (const auto& c : t) {
        end = std::max(end, c.d2h_end);
        h2d += c.h2d_end - c.h2d_start;
        kernel += c.kernel_end - c.h2d_end;
        d2h += c.d2h_end - c.kernel_end;
    }
    const float span = end - t0;
    const std::int64_t host0 = t.front().host_issued_ns;
    std::printf("    trace: %zu chunks over %.3f ms; stage sums H2D %.3f kernel %.3f D2H %.3f ms\n", t.size(), span, h2d,
                kernel, d2h);
    for (std::size_t i = 0; i < t.size() && i < 10; ++i) {
        const auto& c = t[i];
        std::printf("      chunk@%9zu stream %d: h2d %.3f-%.3f kernel-end %.3f d2h-end %.3f | host issued %.3f seen %.3f\n",
                    c.first_task, c.stream, c.h2d_start - t0, c.h2d_end - t0, c.kernel_end - t0, c.d2h_end - t0,
                    static_cast<double>(c.host_issued_ns - host0) / 1e6, static_cast<double>(c.host_seen_ns - host0) / 1e6);
    }
}

void check(cudaError_t s, const char* what) {
    if (s != cudaSuccess) {
        std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(s));
        std::exit(2);
    }
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double percentile(std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

struct AddOne {
    __host__ __device__ std::uint32_t operator()(const std::uint32_t& x) const { return x + 1; }
};

/// A kernel with `rounds` dependent multiply-adds per element: tunable arithmetic per byte.
struct Rounds {
    int rounds;
    __host__ __device__ std::uint32_t operator()(const std::uint32_t& x) const {
        std::uint32_t h = x;
        for (int i = 0; i < rounds; ++i) h = h * 1664525u + 1013904223u;
        return h;
    }
};

template <class F>
__global__ void raw_map(F f, const std::uint32_t* in, std::uint32_t* out, std::size_t n) {
    const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
    for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) out[i] = f(in[i]);
}

template <class F>
void launch_raw(F f, const std::uint32_t* in, std::uint32_t* out, std::size_t n, cudaStream_t s) {
    const std::size_t wanted = (n + 255) / 256;
    const unsigned blocks = static_cast<unsigned>(std::min<std::size_t>(wanted, std::size_t{1} << 20));
    raw_map<<<blocks, 256, 0, s>>>(f, in, out, n);
}

struct Line {
    std::string figure, tandem, baseline, target;
    double ratio;
    bool met;
    double tandem_value, baseline_value;  // for --json
    std::string unit;
};
std::vector<Line> lines;

void report(const std::string& figure, double tandem, double baseline, const char* unit, double ratio,
            const std::string& target, bool met) {
    char t[64], b[64];
    std::snprintf(t, sizeof t, "%.3f%s", tandem, unit);
    std::snprintf(b, sizeof b, "%.3f%s", baseline, unit);
    lines.push_back({figure, t, b, target, ratio, met, tandem, baseline, unit});
}

std::vector<std::uint32_t> values(std::size_t n) {
    std::vector<std::uint32_t> v(n);
    std::uint32_t x = 12345;
    for (auto& e : v) e = x = x * 747796405u + 2891336453u;
    return v;
}

tandem::EngineConfig gpu_only(std::size_t devices) {
    tandem::EngineConfig c;
    c.gpu.max_devices = devices;
    c.gpu.threshold_tasks = 1;
    c.gpu.cpu_helps = false;
    return c;
}

/// Per-device raw resources for the baselines.
struct RawDevice {
    int id;
    std::vector<cudaStream_t> streams;
    std::uint32_t *d_in = nullptr, *d_out = nullptr;
    std::size_t capacity = 0;
    void reserve(std::size_t n) {
        if (n <= capacity) return;
        cudaSetDevice(id);
        if (d_in) cudaFree(d_in);
        if (d_out) cudaFree(d_out);
        check(cudaMalloc(&d_in, n * 4), "cudaMalloc");
        check(cudaMalloc(&d_out, n * 4), "cudaMalloc");
        capacity = n;
    }
};

// ---- (a') where a round trip's time goes -----------------------------------------------------
// Not a target: the same 4 KiB chain (H2D, kernel, D2H on one stream) timed four ways, in
// interleaved rounds, to tell what the engine's design costs from what its code costs:
//   sync    the caller issues and waits in cudaStreamSynchronize (the (a) baseline);
//   poll    the caller issues and spins on cudaStreamQuery (how the device actor waits);
//   1 hop   the caller hands the request to a spinning thread that issues and polls, and spins
//           until that thread flags completion (a device actor reached directly);
//   2 hops  as 1 hop, through a relay thread first (submitter -> scheduler -> device actor).
void round_trip_anatomy(RawDevice& d, std::uint32_t* h_in, std::uint32_t* h_out, std::size_t n, int iterations) {
    cudaStream_t s = d.streams[1];
    auto chain = [&] {
        cudaMemcpyAsync(d.d_in, h_in, n * 4, cudaMemcpyHostToDevice, s);
        launch_raw(AddOne{}, d.d_in, d.d_out, n, s);
        cudaMemcpyAsync(h_out, d.d_out, n * 4, cudaMemcpyDeviceToHost, s);
    };
    struct alignas(64) Flag {
        std::atomic<std::uint64_t> v{0};
    };
    Flag to_relay, to_issuer, done;
    std::atomic<bool> quit{false};
    std::uint64_t ticket = 0;
    auto handed = [&](Flag& first) {
        const std::uint64_t t = ++ticket;
        first.v.store(t, std::memory_order_release);
        while (done.v.load(std::memory_order_acquire) != t) {
        }
    };
    const char* names[] = {"sync", "poll", "1 hop", "2 hops"};
    std::vector<double> times[4];
    const int rounds = 8, per_round = std::max(25, iterations / rounds);
    for (int round = 0; round < rounds; ++round) {
        std::vector<std::thread> helpers;  // only while the hop variants run: two spinning cores
        for (int v = 0; v < 4; ++v) {
            if (v == 2) {
                quit.store(false);
                // The issuer: like the device actor, it spins for a request, issues, polls, flags.
                // What each has seen is read here, before any request of this round is sent.
                const std::uint64_t issuer_seen = to_issuer.v.load(), relay_seen = to_relay.v.load();
                helpers.emplace_back([&, issuer_seen] {
                    cudaSetDevice(d.id);
                    std::uint64_t seen = issuer_seen;
                    while (!quit.load(std::memory_order_relaxed)) {
                        const std::uint64_t want = to_issuer.v.load(std::memory_order_acquire);
                        if (want == seen) continue;
                        seen = want;
                        chain();
                        while (cudaStreamQuery(s) == cudaErrorNotReady) {
                        }
                        done.v.store(want, std::memory_order_release);
                    }
                });
                helpers.emplace_back([&, relay_seen] {
                    std::uint64_t seen = relay_seen;
                    while (!quit.load(std::memory_order_relaxed)) {
                        const std::uint64_t want = to_relay.v.load(std::memory_order_acquire);
                        if (want == seen) continue;
                        seen = want;
                        to_issuer.v.store(want, std::memory_order_release);
                    }
                });
            }
            for (int i = 0; i < per_round + 10; ++i) {
                const auto t0 = Clock::now();
                switch (v) {
                    case 0: chain(); cudaStreamSynchronize(s); break;
                    case 1: chain(); while (cudaStreamQuery(s) == cudaErrorNotReady) {} break;
                    case 2: handed(to_issuer); break;
                    case 3: handed(to_relay); break;
                }
                if (i >= 10) times[v].push_back(seconds_since(t0) * 1e6);
            }
        }
        quit.store(true);
        for (auto& h : helpers) h.join();
    }
    std::printf("(a') 4 KiB chain, p50 (p10, p90) us:");
    for (int v = 0; v < 4; ++v) {
        std::printf(" %s %.1f (%.1f, %.1f)%s", names[v], median(times[v]), percentile(times[v], 0.1),
                    percentile(times[v], 0.9), v < 3 ? " |" : "\n");
    }
}

// ---- (a) 4 KiB round trip ------------------------------------------------------------------
void round_trip(std::vector<RawDevice>& devs, int iterations) {
    const std::size_t n = 1024;  // 4 KiB of u32
    auto v = values(n);
    RawDevice& d = devs[0];
    cudaSetDevice(d.id);
    d.reserve(n);
    std::uint32_t *h_in, *h_out;
    check(cudaHostAlloc(&h_in, n * 4, cudaHostAllocPortable), "cudaHostAlloc");
    check(cudaHostAlloc(&h_out, n * 4, cudaHostAllocPortable), "cudaHostAlloc");
    std::memcpy(h_in, v.data(), n * 4);
    std::vector<double> raw;
    for (int i = 0; i < iterations + 100; ++i) {
        const auto t0 = Clock::now();
        cudaMemcpyAsync(d.d_in, h_in, n * 4, cudaMemcpyHostToDevice, d.streams[0]);
        launch_raw(AddOne{}, d.d_in, d.d_out, n, d.streams[0]);
        cudaMemcpyAsync(h_out, d.d_out, n * 4, cudaMemcpyDeviceToHost, d.streams[0]);
        check(cudaStreamSynchronize(d.streams[0]), "sync");
        if (i >= 100) raw.push_back(seconds_since(t0) * 1e6);
    }
    if (h_out[n - 1] != v[n - 1] + 1) std::printf("raw round trip: wrong result\n");
    round_trip_anatomy(d, h_in, h_out, n, iterations);

    tandem::EngineConfig c = gpu_only(1);
    c.cpu_workers = 2;
    c.gpu.trace = g_trace;
    tandem::Engine engine{c};
    // --trace: where the time goes, phase by phase, on the host clock. "handed" is stamped where
    // placement hands the batch to its devices (the rest of the plan and the send fall in
    // "handed->received"); "completed" is when the engine began completing the batch, taken as
    // t0 + ExecStats::wall_time although wall_time counts from the job's creation inside
    // submit(), after t0 (so "seen->completed" reads short and "completed->ready" long by the
    // validation and allocation before it); "ready" is when the waiting thread saw the batch
    // ready, before get() took the result. Traced rounds also time submit().
    const char* phase_names[] = {"submit->handed", "handed->received", "received->began", "began->issued",
                                 "issued->seen", "seen->completed", "completed->ready", "ready->get"};
    constexpr int phase_count = 8;
    std::vector<double> phases[phase_count], submit_call;
    tandem::Op<std::uint32_t, std::uint32_t> op{"add_one", AddOne{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(AddOne{})};
    std::vector<double> ours;
    std::size_t wrong = 0, on_gpu = 0;
    for (int i = 0; i < iterations + 100; ++i) {
        auto batch = tandem::Batch<std::uint32_t>::dense(v, 0, engine.pinned_memory());  // outside the timer
        const auto t0 = Clock::now();
        Clock::time_point submitted, ready;
        auto r = [&] {
            if (!g_trace) return engine.submit(op, std::move(batch)).get();
            auto future = engine.submit(op, std::move(batch));
            submitted = Clock::now();
            future.wait();
            ready = Clock::now();
            return future.get();
        }();
        const auto t1 = Clock::now();
        const double us = std::chrono::duration<double>(t1 - t0).count() * 1e6;
        if (i >= 100) ours.push_back(us);
        if (g_trace && i >= 100 && r.stats.gpu_tasks == n) {  // else the last trace record is another batch's
            const auto tr = engine.gpu_trace().back();
            const std::int64_t sub = t0.time_since_epoch().count();
            const std::int64_t points[] = {sub,
                                           tr.host_handed_ns,
                                           tr.host_received_ns,
                                           tr.host_began_ns,
                                           tr.host_issued_ns,
                                           tr.host_seen_ns,
                                           sub + r.stats.wall_time.count(),
                                           ready.time_since_epoch().count(),
                                           t1.time_since_epoch().count()};
            for (int p = 0; p < phase_count; ++p) phases[p].push_back(static_cast<double>(points[p + 1] - points[p]) / 1e3);
            submit_call.push_back(std::chrono::duration<double>(submitted - t0).count() * 1e6);
        }
        wrong += r.results[n - 1].output != v[n - 1] + 1;
        on_gpu += r.stats.gpu_tasks == n;
    }
    const double p50r = median(raw), p50t = median(ours);
    std::printf("(a) 4 KiB round trip: tandem p50 %.1f us p99 %.1f us | raw p50 %.1f us p99 %.1f us | %zu/%d on GPU, %zu wrong\n",
                p50t, percentile(ours, 0.99), p50r, percentile(raw, 0.99), on_gpu, iterations + 100, wrong);
    if (g_trace) {
        std::printf("    p50 phases (us):");
        for (int p = 0; p < phase_count; ++p) std::printf(" %s %.2f,", phase_names[p], median(phases[p]));
        std::printf(" submit() returned after %.2f\n", median(submit_call));
    }
    report("4KiB_round_trip_p50", p50t, p50r, "us", p50t / p50r, "<=1.25", p50t / p50r <= 1.25 && wrong == 0);
    cudaFreeHost(h_in);
    cudaFreeHost(h_out);
}

// ---- (b) 1 GiB transfer-bound map -----------------------------------------------------------
void transfer_bound(std::vector<RawDevice>& devs, std::size_t bytes, int reps) {
    const std::size_t n = bytes / 4;
    const std::size_t chunk = (std::size_t{8} << 20) / 4;
    // Raw: each device copies its share in both directions at once, 8 MiB pieces on two
    // streams per direction: the bidirectional copy rate with no kernel in between.
    std::uint32_t *h_in, *h_out;
    check(cudaHostAlloc(&h_in, bytes, cudaHostAllocPortable), "cudaHostAlloc");
    check(cudaHostAlloc(&h_out, bytes, cudaHostAllocPortable), "cudaHostAlloc");
    auto v = values(n);
    std::memcpy(h_in, v.data(), bytes);
    const std::size_t share = n / devs.size();
    for (auto& d : devs) d.reserve(std::min(share, std::size_t{256} << 20));
    std::vector<double> raw;
    for (int rep = 0; rep < reps + 1; ++rep) {
        const auto t0 = Clock::now();
        for (std::size_t di = 0; di < devs.size(); ++di) {
            auto& d = devs[di];
            cudaSetDevice(d.id);
            const std::size_t begin = di * share, end = di + 1 == devs.size() ? n : begin + share;
            std::size_t k = 0;
            for (std::size_t b = begin; b < end; b += chunk, ++k) {
                const std::size_t m = std::min(chunk, end - b);
                const std::size_t slot = (k * chunk) % (d.capacity - chunk + 1);
                cudaMemcpyAsync(d.d_in + slot, h_in + b, m * 4, cudaMemcpyHostToDevice, d.streams[k % 2]);
                cudaMemcpyAsync(h_out + b, d.d_out + slot, m * 4, cudaMemcpyDeviceToHost, d.streams[2 + k % 2]);
            }
        }
        for (auto& d : devs) {
            cudaSetDevice(d.id);
            check(cudaDeviceSynchronize(), "sync");
        }
        if (rep > 0) raw.push_back(2.0 * static_cast<double>(bytes) / seconds_since(t0) / 1e9);
    }

    tandem::EngineConfig config = gpu_only(devs.size());
    config.gpu.trace = g_trace;
    tandem::Engine engine{config};
    tandem::Op<std::uint32_t, std::uint32_t> op{"add_one", AddOne{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(AddOne{})};
    std::vector<double> ours;
    std::size_t wrong = 0;
    std::uint32_t last_chunks = 0;
    for (int rep = 0; rep < reps + 1; ++rep) {
        auto batch = tandem::Batch<std::uint32_t>::dense(v, 0, engine.pinned_memory());
        const auto t0 = Clock::now();
        auto r = engine.submit(op, std::move(batch)).get();
        const double rate = 2.0 * static_cast<double>(bytes) / seconds_since(t0) / 1e9;
        if (rep > 0) ours.push_back(rate);  // the first run also fills the page-locked cache
        auto out = r.results.outputs();
        for (std::size_t i = 0; i < n; i += 4099) wrong += out[i] != v[i] + 1;
        last_chunks = r.stats.gpu_chunks;
        if (rep == reps) {
            std::printf("    stats: gpu_tasks=%llu chunks=%u h2d=%.1f ms kernel=%.1f ms d2h=%.1f ms overlap=%.2f\n",
                        static_cast<unsigned long long>(r.stats.gpu_tasks), r.stats.gpu_chunks,
                        static_cast<double>(r.stats.h2d_time.count()) / 1e6,
                        static_cast<double>(r.stats.kernel_time.count()) / 1e6,
                        static_cast<double>(r.stats.d2h_time.count()) / 1e6, r.stats.overlap_ratio);
        }
    }
    if (g_trace) print_trace(engine.gpu_trace(), last_chunks);
    const double t = median(ours), b = median(raw);
    std::printf("(b) %zu MiB transfer-bound map: tandem %.1f GB/s | raw bidirectional copy %.1f GB/s | %zu wrong\n",
                bytes >> 20, t, b, wrong);
    report("transfer_bound_GBps", t, b, "GB/s", t / b, ">=0.9", t / b >= 0.9 && wrong == 0);
    cudaFreeHost(h_in);
    cudaFreeHost(h_out);
}

// ---- (c) balanced batch -----------------------------------------------------------------------
/// Raw pipeline: pieces of `chunk` elements round-robin over `streams` streams per device.
double raw_pipeline(std::vector<RawDevice>& devs, Rounds f, const std::uint32_t* h_in, std::uint32_t* h_out,
                    std::size_t n, std::size_t chunk, std::size_t streams) {
    const std::size_t share = n / devs.size();
    const auto t0 = Clock::now();
    for (std::size_t di = 0; di < devs.size(); ++di) {
        auto& d = devs[di];
        cudaSetDevice(d.id);
        const std::size_t begin = di * share, end = di + 1 == devs.size() ? n : begin + share;
        std::size_t k = 0;
        for (std::size_t b = begin; b < end; b += chunk, ++k) {
            const std::size_t m = std::min(chunk, end - b);
            const std::size_t s = k % streams;
            std::uint32_t* din = d.d_in + s * chunk;
            std::uint32_t* dout = d.d_out + s * chunk;
            cudaMemcpyAsync(din, h_in + b, m * 4, cudaMemcpyHostToDevice, d.streams[s]);
            launch_raw(f, din, dout, m, d.streams[s]);
            cudaMemcpyAsync(h_out + b, dout, m * 4, cudaMemcpyDeviceToHost, d.streams[s]);
        }
    }
    for (auto& d : devs) {
        cudaSetDevice(d.id);
        check(cudaDeviceSynchronize(), "sync");
    }
    return seconds_since(t0) * 1e3;
}

double raw_sequential(RawDevice& d, Rounds f, const std::uint32_t* h_in, std::uint32_t* h_out, std::size_t n) {
    cudaSetDevice(d.id);
    const auto t0 = Clock::now();
    cudaMemcpyAsync(d.d_in, h_in, n * 4, cudaMemcpyHostToDevice, d.streams[0]);
    launch_raw(f, d.d_in, d.d_out, n, d.streams[0]);
    cudaMemcpyAsync(h_out, d.d_out, n * 4, cudaMemcpyDeviceToHost, d.streams[0]);
    check(cudaStreamSynchronize(d.streams[0]), "sync");
    return seconds_since(t0) * 1e3;
}

void balanced(std::vector<RawDevice>& devs, std::size_t bytes, int reps) {
    const std::size_t n = bytes / 4;
    std::uint32_t *h_in, *h_out;
    check(cudaHostAlloc(&h_in, bytes, cudaHostAllocPortable), "cudaHostAlloc");
    check(cudaHostAlloc(&h_out, bytes, cudaHostAllocPortable), "cudaHostAlloc");
    auto v = values(n);
    std::memcpy(h_in, v.data(), bytes);
    for (auto& d : devs) d.reserve(n);
    // Calibrate on device 0: the round count whose kernel takes as long as the H2D copy.
    RawDevice& d0 = devs[0];
    cudaSetDevice(d0.id);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    auto time_ms = [&](auto&& enqueue) {
        cudaEventRecord(e0, d0.streams[0]);
        enqueue();
        cudaEventRecord(e1, d0.streams[0]);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        return static_cast<double>(ms);
    };
    time_ms([&] { cudaMemcpyAsync(d0.d_in, h_in, bytes, cudaMemcpyHostToDevice, d0.streams[0]); });
    const double copy_ms = time_ms([&] { cudaMemcpyAsync(d0.d_in, h_in, bytes, cudaMemcpyHostToDevice, d0.streams[0]); });
    int rounds = 16;
    for (int it = 0; it < 12; ++it) {
        launch_raw(Rounds{rounds}, d0.d_in, d0.d_out, n, d0.streams[0]);
        const double k_ms = time_ms([&] { launch_raw(Rounds{rounds}, d0.d_in, d0.d_out, n, d0.streams[0]); });
        if (k_ms > 0.95 * copy_ms && k_ms < 1.05 * copy_ms) break;
        rounds = std::max(1, static_cast<int>(rounds * copy_ms / k_ms));
    }
    const double kernel_ms = time_ms([&] { launch_raw(Rounds{rounds}, d0.d_in, d0.d_out, n, d0.streams[0]); });
    std::printf("    balanced kernel: %d rounds, kernel %.2f ms vs H2D %.2f ms for %zu MiB\n", rounds, kernel_ms, copy_ms,
                bytes >> 20);
    const Rounds f{rounds};

    // Sequential, and the best hand-written pipeline over a few chunk sizes and stream counts.
    std::vector<double> seq;
    for (int rep = 0; rep < reps; ++rep) seq.push_back(raw_sequential(d0, f, h_in, h_out, n));
    double best = 1e300;
    std::size_t best_chunk = 0, best_streams = 0;
    for (std::size_t chunk_mib : {2, 4, 8, 16}) {
        for (std::size_t streams : {2, 3, 4}) {
            const std::size_t chunk = (chunk_mib << 20) / 4;
            raw_pipeline(devs, f, h_in, h_out, n, chunk, streams);
            std::vector<double> t;
            for (int rep = 0; rep < reps; ++rep) t.push_back(raw_pipeline(devs, f, h_in, h_out, n, chunk, streams));
            const double m = median(t);
            if (m < best) best = m, best_chunk = chunk_mib, best_streams = streams;
        }
    }
    std::size_t raw_wrong = 0;
    for (std::size_t i = 0; i < n; i += 4099) raw_wrong += h_out[i] != f(v[i]);

    tandem::Op<std::uint32_t, std::uint32_t> op{"rounds", f, tandem::gpu::map<std::uint32_t, std::uint32_t>(f)};
    std::size_t wrong = 0;
    double overlap = 0;
    auto run_tandem = [&](tandem::EngineConfig config, bool trace) {
        config.gpu.trace = trace;
        config.trace.enabled = trace && !g_trace_file.empty();
        tandem::Engine engine{config};
        std::vector<double> ours;
        std::uint32_t last_chunks = 0;
        for (int rep = 0; rep < reps + 1; ++rep) {
            auto batch = tandem::Batch<std::uint32_t>::dense(v, 0, engine.pinned_memory());
            const auto t0 = Clock::now();
            auto r = engine.submit(op, std::move(batch)).get();
            const double ms = seconds_since(t0) * 1e3;
            if (rep > 0) ours.push_back(ms);
            auto out = r.results.outputs();
            for (std::size_t i = 0; i < n; i += 4099) wrong += out[i] != f(v[i]);
            overlap = r.stats.overlap_ratio;
            last_chunks = r.stats.gpu_chunks;
        }
        if (trace) print_trace(engine.gpu_trace(), last_chunks);
        if (config.trace.enabled) engine.save_trace(g_trace_file);
        return median(ours);
    };
    // The default of streams_per_device (chunks in flight per device), measured here.
    for (std::size_t streams : {2, 4, 8, 16}) {
        tandem::EngineConfig c = gpu_only(devs.size());
        c.gpu.streams_per_device = streams;
        std::printf("    tandem with %2zu chunks in flight per device: %.2f ms\n", streams, run_tandem(c, false));
    }
    const double t = run_tandem(gpu_only(devs.size()), g_trace);
    const double s = median(seq);
    std::printf("(c) balanced %zu MiB: tandem %.2f ms (overlap %.2f) | hand pipeline %.2f ms (%zu MiB x %zu streams) | "
                "sequential %.2f ms | %zu wrong, raw %zu wrong\n",
                bytes >> 20, t, overlap, best, best_chunk, best_streams, s, wrong, raw_wrong);
    report("balanced_vs_hand_pipeline_ms", t, best, "ms", t / best, "<=1.05", t / best <= 1.05 && wrong == 0);
    report("balanced_vs_sequential_ms", t, s, "ms", t / s, "<1", t < s && wrong == 0);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFreeHost(h_in);
    cudaFreeHost(h_out);
}

// ---- (d) CPU and GPU together ---------------------------------------------------------------
void together(std::size_t devices, std::size_t n, int reps) {
    const Rounds f{64};
    tandem::Op<std::uint32_t, std::uint32_t> op{"rounds64", f, tandem::gpu::map<std::uint32_t, std::uint32_t>(f)};
    auto v = values(n);
    auto rate = [&](tandem::EngineConfig c) {
        tandem::Engine engine{c};
        std::vector<double> r;
        for (int rep = 0; rep < reps + 1; ++rep) {
            auto batch = tandem::Batch<std::uint32_t>::dense(v, 0, engine.pinned_memory());
            const auto t0 = Clock::now();
            auto res = engine.submit(op, std::move(batch)).get();
            const double s = seconds_since(t0);
            if (rep > 0) r.push_back(static_cast<double>(n) / s / 1e6);
            std::printf("    %s rep %d: %.2f ms, cpu_tasks %llu (%u chunks, %.1f ms CPU) gpu_tasks %llu (%u chunks)\n",
                        c.gpu.enabled ? (c.gpu.cpu_helps ? "hybrid" : "gpu") : "cpu", rep, s * 1e3,
                        static_cast<unsigned long long>(res.stats.cpu_tasks), res.stats.cpu_chunks,
                        static_cast<double>(res.stats.cpu_time.count()) / 1e6,
                        static_cast<unsigned long long>(res.stats.gpu_tasks), res.stats.gpu_chunks);
        }
        return median(r);
    };
    tandem::EngineConfig cpu;
    cpu.gpu.enabled = false;
    tandem::EngineConfig gpu = gpu_only(devices);
    tandem::EngineConfig both = gpu;
    both.gpu.cpu_helps = true;
    const double c = rate(cpu), g = rate(gpu), h = rate(both);
    std::printf("(d) CPU+GPU, %zu tasks of 64 rounds: together %.1f M/s | CPU alone %.1f M/s + GPU alone %.1f M/s = %.1f M/s\n",
                n, h, c, g, c + g);
    report("cpu_plus_gpu_Mtasks_per_s", h, c + g, "M/s", h / (c + g), ">=0.9", h / (c + g) >= 0.9);
}

}  // namespace

int main(int argc, char** argv) {
    std::size_t devices = 1;
    bool quick = false;
    std::string only;  // --only: the figures to run, e.g. "ac" (default: all)
    std::string json_path, gpu_name;
    for (int i = 1; i < argc; ++i) {
        if (std::string{argv[i]} == "--devices" && i + 1 < argc) devices = std::strtoull(argv[++i], nullptr, 10);
        if (std::string{argv[i]} == "--quick") quick = true;
        if (std::string{argv[i]} == "--only" && i + 1 < argc) only = argv[++i];
        if (std::string{argv[i]} == "--json" && i + 1 < argc) json_path = argv[++i];
        if (std::string{argv[i]} == "--trace") g_trace = true;
        if (std::string{argv[i]} == "--trace" && i + 1 < argc && argv[i + 1][0] != '-') g_trace_file = argv[++i];
    }
    int count = 0;
    check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    devices = std::min<std::size_t>(devices, static_cast<std::size_t>(count));
    std::vector<RawDevice> devs;
    for (std::size_t d = 0; d < devices; ++d) {
        RawDevice r{static_cast<int>(d), {}};
        cudaSetDevice(r.id);
        cudaDeviceProp p{};
        cudaGetDeviceProperties(&p, r.id);
        if (d == 0) gpu_name = p.name;
        std::printf("device %zu: %s, %d SMs, %.0f GiB\n", d, p.name, p.multiProcessorCount,
                    static_cast<double>(p.totalGlobalMem) / (1 << 30));
        for (int s = 0; s < 4; ++s) {
            cudaStream_t st;
            check(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "stream");
            r.streams.push_back(st);
        }
        devs.push_back(std::move(r));
    }
    std::printf("devices used: %zu\n", devices);
    auto runs = [&](char figure) { return only.empty() || only.find(figure) != std::string::npos; };
    if (runs('a')) round_trip(devs, quick ? 200 : 2000);
    if (runs('b')) transfer_bound(devs, quick ? (std::size_t{64} << 20) : (std::size_t{1} << 30), quick ? 2 : 5);
    if (runs('c')) balanced(devs, quick ? (std::size_t{64} << 20) : (std::size_t{256} << 20), quick ? 2 : 5);
    if (runs('d')) together(devices, quick ? (std::size_t{1} << 22) : (std::size_t{1} << 26), quick ? 1 : 3);

    std::printf("\n%-32s %16s %16s %8s %8s %4s\n", "figure", "tandem", "baseline", "ratio", "target", "met");
    for (const auto& l : lines) {
        std::printf("%-32s %16s %16s %8.3f %8s %4s\n", l.figure.c_str(), l.tandem.c_str(), l.baseline.c_str(), l.ratio,
                    l.target.c_str(), l.met ? "yes" : "no");
    }
    for (const auto& l : lines) {
        std::printf("RESULT name=%s devices=%zu tandem=%s baseline=%s ratio=%.3f target=%s met=%s\n", l.figure.c_str(),
                    devices, l.tandem.c_str(), l.baseline.c_str(), l.ratio, l.target.c_str(), l.met ? "yes" : "no");
    }
    if (!json_path.empty()) {
        bench::json::Report report{"gpu"};
        report.set_command(argc, argv);
        report.set_gpu(gpu_name, static_cast<int>(devices));
        for (const auto& l : lines) {
            // l.target is "<=1.25", ">=0.9" or "<1": the operator, then the number.
            const std::size_t digits = l.target.find_first_of("0123456789.");
            const std::string op = l.target.substr(0, digits);
            const double target = digits == std::string::npos ? 0.0 : std::strtod(l.target.c_str() + digits, nullptr);
            report.add({l.figure, l.tandem_value, l.baseline_value, l.unit, l.ratio, op, target, l.met});
        }
        if (!report.write(json_path)) return 1;
    }
}
