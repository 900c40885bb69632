// The GPU backend: same results as the CPU, overlap across streams, every injected fault
// falling back to the CPU with no task lost, device retirement, several devices.
// Every test needs a GPU and is skipped (visibly, as "skipped") without one.
#define BOOST_TEST_MODULE gpu
#include <boost/test/unit_test.hpp>

#include <tandem/gpu/map.cuh>
#include <tandem/tandem.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

namespace utf = boost::unit_test;

namespace {

int visible_gpus() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

struct HasGpus {
    int needed;
    boost::test_tools::assertion_result operator()(utf::test_unit_id) const {
        const int n = visible_gpus();
        boost::test_tools::assertion_result r(static_cast<bool>(n >= needed));
        if (n < needed) r.message() << "needs " << needed << " GPU(s), found " << n;
        return r;
    }
};

/// An integer mix (bit-exact on CPU and GPU).
struct Mix {
    __host__ __device__ std::uint32_t operator()(const std::uint32_t& x) const {
        std::uint32_t h = x * 0x9E3779B1u;
        h ^= h >> 15;
        h *= 0x85EBCA77u;
        h ^= h >> 13;
        return h;
    }
};

/// Work heavy enough that a chunk's kernel takes about as long as its copies.
struct Spin {
    __host__ __device__ std::uint32_t operator()(const std::uint32_t& x) const {
        std::uint32_t h = x;
        for (int i = 0; i < 200; ++i) h = h * 1664525u + 1013904223u;
        return h;
    }
};

/// A struct payload with integer maths (float maths may differ in the last bit: nvcc fuses
/// multiply-adds that the host compiler does not).
struct Point {
    std::int32_t x, y;
    std::uint32_t tag;
};
struct Norm {
    __host__ __device__ std::uint64_t operator()(const Point& p) const {
        const std::int64_t x = p.x, y = p.y;
        return (static_cast<std::uint64_t>(p.tag) << 40) ^ static_cast<std::uint64_t>(x * x + y * y);
    }
};

tandem::EngineConfig gpu_config() {
    tandem::EngineConfig c;
    c.cpu_workers = 4;
    c.gpu.threshold_tasks = 1;  // small batches go to the GPU too
    c.gpu.cpu_helps = false;    // so the GPU really runs them
    return c;
}

std::vector<std::uint32_t> random_u32(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng{seed};
    std::vector<std::uint32_t> v(n);
    for (auto& x : v) x = static_cast<std::uint32_t>(rng());
    return v;
}

template <class T>
tandem::Batch<T> batch_of(const std::vector<T>& values, std::pmr::memory_resource* memory = nullptr) {
    tandem::Batch<T> b = memory ? tandem::Batch<T>{memory} : tandem::Batch<T>{};
    b.reserve(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) b.push({i, values[i], 1});
    return b;
}

/// Runs `op` over `values` and checks every output against the functor on the host.
template <class F>
tandem::ExecStats check_mix(tandem::Engine& engine, const tandem::Op<std::uint32_t, std::uint32_t>& op,
                            const std::vector<std::uint32_t>& values, F f, bool pinned = false) {
    auto r = engine.submit(op, batch_of(values, pinned ? engine.pinned_memory() : nullptr)).get();
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < values.size(); ++i) wrong += r.results[i].output != f(values[i]);
    BOOST_TEST(wrong == 0u);
    BOOST_TEST(r.stats.cpu_tasks + r.stats.gpu_tasks == values.size());
    return r.stats;
}

}  // namespace

BOOST_AUTO_TEST_CASE(gpu_results_equal_cpu_results_on_random_inputs_of_size_1_7_4096_and_1m,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    tandem::Engine engine{gpu_config()};
    BOOST_REQUIRE(engine.gpu_count() >= 1u);
    tandem::Op<std::uint32_t, std::uint32_t> mix{"mix", Mix{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(Mix{})};
    for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{4096}, std::size_t{1} << 20}) {
        for (bool pinned : {false, true}) {
            BOOST_TEST_CONTEXT("n=" << n << " pinned=" << pinned) {
                auto stats = check_mix(engine, mix, random_u32(n, n + pinned), Mix{}, pinned);
                BOOST_TEST(stats.gpu_tasks == n);
                BOOST_TEST((stats.device == tandem::DeviceKind::Gpu));
                BOOST_TEST(stats.bytes_h2d == n * sizeof(std::uint32_t));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(struct_payloads_give_the_same_results_on_gpu_and_cpu,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    tandem::Engine engine{gpu_config()};
    tandem::Op<Point, std::uint64_t> norm{"norm", Norm{}, tandem::gpu::map<Point, std::uint64_t>(Norm{})};
    std::mt19937 rng{3};
    std::uniform_int_distribution<std::int32_t> d{-1000000, 1000000};
    std::vector<Point> pts(100000);
    for (std::uint32_t i = 0; i < pts.size(); ++i) pts[i] = Point{d(rng), d(rng), i};
    auto r = engine.submit(norm, batch_of(pts)).get();
    for (std::size_t i = 0; i < pts.size(); ++i) BOOST_REQUIRE_EQUAL(r.results[i].output, Norm{}(pts[i]));
    BOOST_TEST(r.stats.gpu_tasks == pts.size());
}

BOOST_AUTO_TEST_CASE(by_default_a_large_batch_runs_at_least_partly_on_the_gpu,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    tandem::Engine engine{tandem::EngineConfig{}};
    tandem::Op<std::uint32_t, std::uint32_t> mix{"mix", Mix{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(Mix{})};
    auto stats = check_mix(engine, mix, random_u32(std::size_t{1} << 24, 11), Mix{}, true);
    BOOST_TEST(stats.gpu_tasks > 0u);
}

BOOST_AUTO_TEST_CASE(chunk_k_plus_1_copies_in_while_chunk_k_computes,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    tandem::EngineConfig c = gpu_config();
    c.gpu.trace = true;
    c.gpu.chunk_bytes = std::size_t{4} << 20;
    tandem::Engine engine{c};
    tandem::Op<std::uint32_t, std::uint32_t> spin{"spin", Spin{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(Spin{})};
    auto stats = check_mix(engine, spin, random_u32(std::size_t{1} << 25, 5), Spin{}, true);
    BOOST_TEST(stats.gpu_chunks >= 8u);
    auto trace = engine.gpu_trace();
    std::sort(trace.begin(), trace.end(), [](auto& a, auto& b) { return a.first_task < b.first_task; });
    // Some chunk's host-to-device copy ran while the previous chunk's kernel was running.
    int overlapping = 0;
    for (std::size_t k = 0; k + 1 < trace.size(); ++k) {
        const auto& a = trace[k];
        const auto& b = trace[k + 1];
        if (a.device == b.device && b.h2d_start < a.kernel_end && b.h2d_end > a.h2d_end) ++overlapping;
    }
    BOOST_TEST_MESSAGE("chunks " << trace.size() << ", overlapping pairs " << overlapping
                                 << ", overlap ratio " << stats.overlap_ratio);
    BOOST_TEST(overlapping > 0);
    BOOST_TEST(stats.overlap_ratio > 1.0);
}

BOOST_AUTO_TEST_CASE(gpu_busy_time_is_the_union_of_chunk_intervals_within_wall_time,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    const auto t0 = std::chrono::steady_clock::now();
    tandem::EngineConfig c = gpu_config();
    c.gpu.max_devices = 1;
    c.gpu.chunk_bytes = std::size_t{4} << 20;
    tandem::EngineMetrics m;
    tandem::ExecStats large;
    std::uint64_t gpu_tasks = 0;
    {
        tandem::Engine engine{c};
        tandem::Op<std::uint32_t, std::uint32_t> spin{"spin", Spin{},
                                                      tandem::gpu::map<std::uint32_t, std::uint32_t>(Spin{})};
        // Large chunks (timed with events, overlapping on the stage streams), then small ones
        // (timed on the host).
        large = check_mix(engine, spin, random_u32(std::size_t{1} << 25, 6), Spin{}, true);
        gpu_tasks += large.gpu_tasks;
        for (std::uint64_t i = 0; i < 50; ++i) gpu_tasks += check_mix(engine, spin, random_u32(1024, 100 + i), Spin{}).gpu_tasks;
        const tandem::DeviceMetrics live = engine.metrics().devices.at(0);
        BOOST_TEST(live.device_pool_used > 0u);
        BOOST_TEST(live.device_pool_used <= live.device_pool_capacity);
        engine.shutdown();
        m = engine.metrics();
    }
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const tandem::DeviceMetrics& d = m.devices.at(0);
    BOOST_TEST_MESSAGE("busy " << d.busy_seconds << " s of " << wall << " s; chunk time summed "
                               << d.chunk_duration.sum_seconds << " s; overlap ratio " << large.overlap_ratio);
    BOOST_TEST(d.tasks == gpu_tasks);
    BOOST_TEST(d.chunk_duration.count() == d.chunks);
    BOOST_TEST(d.stage_duration[static_cast<std::size_t>(tandem::GpuStage::Kernel)].count() > 0u);
    BOOST_TEST(d.busy_seconds > 0.0);
    BOOST_TEST(d.busy_seconds <= wall);
    // Each chunk's interval lies within its own span: the union is at most their sum, and
    // less where chunks overlapped.
    const double slack = static_cast<double>(d.chunks) * 1e-6;
    BOOST_TEST(d.busy_seconds <= d.chunk_duration.sum_seconds + slack);
    if (large.overlap_ratio > 1.05) BOOST_TEST(d.busy_seconds < d.chunk_duration.sum_seconds);
    BOOST_TEST((d.utilization >= 0.0 && d.utilization <= 1.0), d.utilization);
}

namespace {

void expect_full_fallback(const tandem::GpuFaultInjection& faults, bool pinned, tandem::FallbackReason reason) {
    tandem::EngineConfig c = gpu_config();
    c.gpu.faults = faults;
    tandem::Engine engine{c};
    tandem::Op<std::uint32_t, std::uint32_t> mix{"mix", Mix{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(Mix{})};
    const std::size_t n = std::size_t{1} << 21;
    auto stats = check_mix(engine, mix, random_u32(n, 9), Mix{}, pinned);
    BOOST_TEST(stats.fallback_tasks == n);
    BOOST_TEST(stats.cpu_tasks == n);
    BOOST_TEST(!stats.fallback_reason.empty());
    BOOST_TEST_MESSAGE("fallback reason: " << stats.fallback_reason);
    BOOST_TEST(engine.metrics().cpu_fallback_count == n);
    BOOST_TEST(engine.metrics().fallbacks(reason) == n, "counted under " << tandem::to_string(reason));
}

}  // namespace

// A split's shares, and its chunks with them, move a few percent from batch to batch: a chunk a
// little larger than the last must fit the streams' buffers. Before, each stream reallocated
// its buffers to the exact size of every larger chunk (cudaFree waits for the whole device; a
// 4 M-task SHA-256 batch's first chunks started 4.5 ms apart instead of 1.1 ms on an H200).
BOOST_AUTO_TEST_CASE(a_chunk_a_little_larger_than_the_last_fits_the_streams_buffers,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    tandem::EngineConfig c = gpu_config();
    c.gpu.max_devices = 1;
    tandem::Engine engine{c};
    tandem::Op<std::uint32_t, std::uint32_t> mix{"mix", Mix{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(Mix{})};
    // 12 M tasks of 4 bytes: chunks of a thirty-second, 1.5 MiB; then 5% more.
    const std::size_t n = std::size_t{12} << 20;
    const auto first = check_mix(engine, mix, random_u32(n, 1), Mix{});
    BOOST_TEST(first.gpu_tasks == n);
    BOOST_TEST(first.gpu_chunks == 32u);  // 393216 tasks each
    const tandem::DeviceMetrics before = engine.metrics().devices.at(0);
    BOOST_TEST(before.device_pool_used > 0u);
    BOOST_TEST(before.pinned_pool_used > 0u);
    const auto second = check_mix(engine, mix, random_u32(n + n / 20, 2), Mix{});
    BOOST_TEST(second.gpu_tasks == n + n / 20);
    BOOST_TEST(second.gpu_chunks == 33u);  // 412876 tasks each, and the rest: the chunk grew
    const tandem::DeviceMetrics after = engine.metrics().devices.at(0);
    BOOST_TEST(after.device_pool_used == before.device_pool_used);
    BOOST_TEST(after.pinned_pool_used == before.pinned_pool_used);
    BOOST_TEST(after.device_pool_used <= after.device_pool_capacity);
    BOOST_TEST(after.pinned_pool_used <= after.pinned_pool_capacity);
}

BOOST_AUTO_TEST_CASE(an_injected_launch_error_reruns_every_chunk_on_the_cpu,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    expect_full_fallback(tandem::GpuFaultInjection{.fail_launch = true}, true, tandem::FallbackReason::LaunchError);
}

BOOST_AUTO_TEST_CASE(an_injected_device_out_of_memory_reruns_every_chunk_on_the_cpu,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    expect_full_fallback(tandem::GpuFaultInjection{.fail_device_alloc = true}, false, tandem::FallbackReason::OutOfMemory);
}

BOOST_AUTO_TEST_CASE(an_injected_pinned_allocation_failure_reruns_every_chunk_on_the_cpu,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    expect_full_fallback(tandem::GpuFaultInjection{.fail_pinned_alloc = true}, false, tandem::FallbackReason::OutOfMemory);
}

BOOST_AUTO_TEST_CASE(a_device_failing_mid_batch_is_retired_and_its_work_reruns_on_the_cpu,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    tandem::EngineConfig c = gpu_config();
    c.gpu.chunk_bytes = 1 << 20;
    c.gpu.faults.fail_device_after_chunks = 3;
    tandem::Engine engine{c};
    const std::size_t before = engine.gpu_count();
    tandem::Op<std::uint32_t, std::uint32_t> mix{"mix", Mix{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(Mix{})};
    const std::size_t n = std::size_t{1} << 23;
    auto stats = check_mix(engine, mix, random_u32(n, 21), Mix{}, true);
    BOOST_TEST(stats.gpu_tasks > 0u);
    BOOST_TEST(stats.fallback_tasks > 0u);
    BOOST_TEST(engine.gpu_count() == 0u);
    BOOST_TEST(before >= 1u);
    const auto gpus = engine.gpus();
    BOOST_TEST(std::none_of(gpus.begin(), gpus.end(), [](const auto& g) { return g.healthy; }));
    // With every device retired the engine carries on, on the CPU.
    auto after = check_mix(engine, mix, random_u32(4096, 22), Mix{});
    BOOST_TEST(after.gpu_tasks == 0u);
}

BOOST_AUTO_TEST_CASE(a_gpu_only_op_runs_on_the_gpu_and_fails_cleanly_when_it_cannot,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    tandem::EngineConfig c = gpu_config();
    tandem::Engine engine{c};
    tandem::Op<std::uint32_t, std::uint32_t> gpu_only{"mix_gpu", tandem::gpu::map<std::uint32_t, std::uint32_t>(Mix{})};
    auto stats = check_mix(engine, gpu_only, random_u32(100000, 4), Mix{});
    BOOST_TEST(stats.gpu_tasks == 100000u);

    c.gpu.faults.fail_launch = true;
    tandem::Engine failing{c};
    try {
        failing.submit(gpu_only, batch_of(random_u32(1000, 5))).get();
        BOOST_FAIL("a GPU-only op whose every launch fails must fail");
    } catch (const tandem::Error& e) {
        BOOST_TEST(e.code() == tandem::make_error_code(tandem::ExecError::DeviceFailed));
    }
}

BOOST_AUTO_TEST_CASE(a_batch_is_split_across_two_devices_with_identical_results,
                     *utf::precondition(HasGpus{2}) * utf::label("gpu")) {
    tandem::EngineConfig c = gpu_config();
    c.gpu.chunk_bytes = 1 << 20;
    tandem::Engine engine{c};
    BOOST_REQUIRE(engine.gpu_count() >= 2u);
    tandem::Op<std::uint32_t, std::uint32_t> spin{"spin", Spin{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(Spin{})};
    auto stats = check_mix(engine, spin, random_u32(std::size_t{1} << 24, 8), Spin{}, true);
    BOOST_TEST(stats.gpu_devices_used >= 2u);
    BOOST_TEST(stats.gpu_tasks == std::size_t{1} << 24);
}

BOOST_AUTO_TEST_CASE(a_borrowed_page_locked_batch_with_page_locked_outputs_is_copied_by_the_gpu_without_staging,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    tandem::Engine engine{gpu_config()};
    BOOST_REQUIRE(engine.gpu_count() >= 1u);
    tandem::Op<std::uint32_t, std::uint32_t> mix{"mix", Mix{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(Mix{})};
    const std::size_t n = std::size_t{1} << 22;
    const auto values = random_u32(n, 31);
    // The caller's own page-locked storage, in and out (as the cluster keeps a batch's columns).
    auto memory = engine.output_memory(n * sizeof(std::uint32_t));
    BOOST_REQUIRE(memory.get() == engine.pinned_memory());
    auto* in = static_cast<std::uint32_t*>(memory->allocate(n * sizeof(std::uint32_t), 64));
    auto* out = static_cast<std::uint32_t*>(memory->allocate(n * sizeof(std::uint32_t), 64));
    std::copy(values.begin(), values.end(), in);
    auto r = engine
                 .submit(mix, tandem::Batch<std::uint32_t>::borrow({in, n}, nullptr, engine.pinned_memory()),
                         tandem::OutputSpan<std::uint32_t>{{out, n}, nullptr, engine.pinned_memory()})
                 .get();
    BOOST_TEST(r.stats.gpu_tasks == n);
    BOOST_TEST(r.results.outputs().data() == out);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < n; ++i) wrong += out[i] != Mix{}(values[i]);
    BOOST_TEST(wrong == 0u);
    // Neither side went through the device's staging buffers: the copies were the GPU's own.
    for (const auto& d : engine.metrics().devices) BOOST_TEST(d.pinned_pool_used == 0u);
    r = {};
    memory->deallocate(out, n * sizeof(std::uint32_t), 64);
    memory->deallocate(in, n * sizeof(std::uint32_t), 64);
}

// Disabled: it FAILS on real hardware (2 x H200 host, 2026-11-28: the device slowed by eight
// kernel repetitions ran 18.5 M tasks, the other 15.9 M, with stealing off), i.e. the learned
// split between two real GPUs of unequal speed does not follow their speeds yet (bench/hybrid
// --two-gpus measured 0.75-0.89 of the two devices' sum). Not diagnosed; kept as the test the
// fix must pass (run it with --run_test=... on a two-GPU host).
BOOST_AUTO_TEST_CASE(a_device_slowed_by_repeated_kernels_gets_a_smaller_share_with_identical_results,
                     *utf::precondition(HasGpus{2}) * utf::label("gpu") * utf::disabled()) {
    tandem::EngineConfig c = gpu_config();
    c.gpu.threshold_tasks = tandem::GpuConfig::learned;
    c.gpu.max_devices = 2;
    c.gpu.faults.kernel_repeats = 8;  // device 1 does its kernels' work eight times over
    c.gpu.faults.device = 1;
    c.gpu.model.steal = false;  // each device runs its planned share: the split is the models'
    tandem::Engine engine{c};
    BOOST_REQUIRE(engine.gpu_count() >= 2u);
    tandem::Op<std::uint32_t, std::uint32_t> spin{"spin8", Spin{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(Spin{})};
    const auto values = random_u32(std::size_t{1} << 22, 12);
    for (int i = 0; i < 12; ++i) check_mix(engine, spin, values, Spin{}, true);  // learn both devices
    const auto before = engine.metrics().devices;
    for (int i = 0; i < 6; ++i) {
        const auto s = check_mix(engine, spin, values, Spin{}, true);
        BOOST_TEST_MESSAGE("batch " << i << ": reason " << static_cast<int>(s.placement.reason) << " calibrated "
                                    << s.placement.calibrated << " predicted " << s.placement.predicted.count()
                                    << " ns, ran " << s.wall_time.count() << " ns, devices used " << s.gpu_devices_used);
    }
    // What each device's model learned (the failure message of this test is the diagnosis).
    for (const auto& m : engine.op_models()) {
        for (const auto& c : m.costs) {
            std::ostringstream points;
            for (const auto& [x, y] : c.points) points << " (" << x << ", " << y << ")";
            BOOST_TEST_MESSAGE(m.op << " " << c.device << (c.pinned ? " pinned" : " pageable") << ": samples "
                                    << c.samples << " outliers " << c.outliers << " per task " << c.per_task_ns
                                    << " ns, points" << points.str());
        }
    }
    const auto after = engine.metrics().devices;
    BOOST_REQUIRE_EQUAL(after.size(), 2u);
    const double fast = static_cast<double>(after[0].tasks - before[0].tasks);
    const double slow = static_cast<double>(after[1].tasks - before[1].tasks);
    BOOST_TEST_MESSAGE("tasks on the fast device " << fast << ", on the slowed one " << slow);
    // Eight times the kernel work (the copies are not repeated): the slowed device is at least
    // twice as slow, so an equal split (or one that ignores speed) fails this.
    BOOST_TEST(fast > 2 * slow);
}

namespace {

/// A rendezvous between the two sides of one batch, in page-locked host memory mapped into the
/// device: a GPU chunk's kernel cannot finish before some CPU worker has run a task of the
/// batch, and a CPU task cannot finish before some GPU chunk's kernel has started. Neither side
/// can then take the whole batch however the threads are scheduled, as long as each side can
/// claim a chunk while the other waits (the test's config leaves plenty of chunks for both).
/// Both waits are bounded (a few seconds), so a broken engine fails the test, never hangs it.
struct Rendezvous {
    int gpu_started;   // set by the first GPU chunk's kernel
    int cpu_ran;       // set by every CPU task
    int gpu_gave_up;   // a kernel stopped waiting for the CPU (the CPU never ran)
    int cpu_gave_up;   // a CPU task stopped waiting for the GPU (the GPU never started)
};

/// Page-locked, device-mapped memory for a `Rendezvous` (or any small flag block).
template <class T>
class MappedHost {
public:
    MappedHost() {
        void* p = nullptr;
        BOOST_REQUIRE(cudaHostAlloc(&p, sizeof(T), cudaHostAllocMapped) == cudaSuccess);
        std::memset(p, 0, sizeof(T));
        host_ = static_cast<T*>(p);
        void* d = nullptr;
        BOOST_REQUIRE(cudaHostGetDevicePointer(&d, p, 0) == cudaSuccess);
        device_ = static_cast<T*>(d);
    }
    MappedHost(const MappedHost&) = delete;
    MappedHost& operator=(const MappedHost&) = delete;
    ~MappedHost() {
        if (host_) cudaFreeHost(host_);
    }
    T* host() const noexcept { return host_; }
    T* device() const noexcept { return device_; }

private:
    T* host_ = nullptr;
    T* device_ = nullptr;
};

/// Clock cycles in about `seconds` on the current device (a safety net's bound, not a timing).
long long cycles_in(double seconds) {
    int device = 0, khz = 0;
    cudaGetDevice(&device);
    if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device) != cudaSuccess || khz <= 0) {
        cudaGetLastError();
        khz = 2'000'000;  // 2 GHz
    }
    return static_cast<long long>(seconds * 1e3 * khz);
}

/// Mix on every element (grid-stride); block 0's thread 0 first waits until a CPU task of the
/// batch has run (at most `limit` cycles).
__global__ void mix_after_cpu_ran(Rendezvous* r, const std::uint32_t* in, std::uint32_t* out, std::size_t n,
                                  long long limit) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        volatile Rendezvous* v = r;
        v->gpu_started = 1;
        __threadfence_system();
        const long long start = clock64();
        while (v->cpu_ran == 0) {
            if (clock64() - start > limit) {
                v->gpu_gave_up = 1;
                break;
            }
            __nanosleep(1000);
        }
    }
    const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
    for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = Mix{}(in[i]);
    }
}

}  // namespace

BOOST_AUTO_TEST_CASE(cpu_and_gpu_share_a_batch_when_the_cpu_helps,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    MappedHost<Rendezvous> rendezvous;
    Rendezvous* host = rendezvous.host();
    Rendezvous* device = rendezvous.device();
    const long long limit = cycles_in(5.0);

    tandem::EngineConfig c;
    c.cpu_workers = 4;
    c.cpu_chunk = 1024;              // each worker holds little of the batch while it waits
    c.gpu.cpu_helps = true;
    c.gpu.threshold_tasks = 1;
    c.gpu.max_devices = 1;
    c.gpu.streams_per_device = 2;    // the device holds at most two chunks at once
    c.gpu.chunk_bytes = 256 << 10;   // 64 Ki tasks per GPU chunk: 16 chunks in the batch
    tandem::Engine engine{c};
    BOOST_REQUIRE(engine.gpu_count() == 1u);

    auto cpu = [host](const std::uint32_t& x) -> std::uint32_t {
        std::atomic_ref<int>{host->cpu_ran}.store(1, std::memory_order_release);
        if (std::atomic_ref<int>{host->gpu_started}.load(std::memory_order_acquire) == 0 &&
            std::atomic_ref<int>{host->cpu_gave_up}.load(std::memory_order_relaxed) == 0) {
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{5};
            while (std::atomic_ref<int>{host->gpu_started}.load(std::memory_order_acquire) == 0) {
                if (std::chrono::steady_clock::now() > deadline) {
                    std::atomic_ref<int>{host->cpu_gave_up}.store(1, std::memory_order_relaxed);
                    break;
                }
                std::this_thread::yield();
            }
        }
        return Mix{}(x);
    };
    auto gpu = tandem::gpu::launcher<std::uint32_t, std::uint32_t>(
        [device, limit](cudaStream_t s, const std::uint32_t* in, std::uint32_t* out, std::size_t n) {
            const unsigned blocks = static_cast<unsigned>(std::min<std::size_t>((n + 255) / 256, 4096));
            mix_after_cpu_ran<<<blocks, 256, 0, s>>>(device, in, out, n, limit);
            return cudaGetLastError();
        });
    tandem::Op<std::uint32_t, std::uint32_t> op{"mix_rendezvous", cpu, gpu};

    const std::size_t n = std::size_t{1} << 20;
    const auto values = random_u32(n, 12);
    auto r = engine.submit(op, batch_of(values, engine.pinned_memory())).get();

    std::size_t wrong = 0;
    for (std::size_t i = 0; i < n; ++i) wrong += r.results[i].output != Mix{}(values[i]);
    BOOST_TEST(wrong == 0u);
    BOOST_TEST_MESSAGE("cpu " << r.stats.cpu_tasks << " gpu " << r.stats.gpu_tasks << " fallback "
                              << r.stats.fallback_tasks);
    BOOST_TEST(r.stats.tasks == n);
    BOOST_TEST(r.stats.cpu_tasks > 0u);
    BOOST_TEST(r.stats.gpu_tasks > 0u);
    BOOST_TEST(r.stats.cpu_tasks + r.stats.gpu_tasks == n);
    BOOST_TEST(r.stats.fallback_tasks == 0u);  // the CPU's share is its own, not the GPU's given back
    BOOST_TEST((r.stats.device == tandem::DeviceKind::Hybrid));
    // Neither side had to give up waiting for the other.
    BOOST_TEST(host->gpu_gave_up == 0);
    BOOST_TEST(host->cpu_gave_up == 0);
}

BOOST_AUTO_TEST_CASE(shutdown_with_gpu_batches_in_flight_completes_every_future,
                     *utf::precondition(HasGpus{1}) * utf::label("gpu")) {
    auto engine = std::make_unique<tandem::Engine>(gpu_config());
    tandem::Op<std::uint32_t, std::uint32_t> spin{"spin", Spin{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(Spin{})};
    std::vector<tandem::BatchFuture<std::uint32_t>> futures;
    const auto values = random_u32(std::size_t{1} << 20, 30);
    for (int i = 0; i < 20; ++i) futures.push_back(engine->submit(spin, batch_of(values, engine->pinned_memory())));
    engine.reset();
    for (auto& f : futures) {
        BOOST_REQUIRE(f.ready());
        if (f.error()) BOOST_TEST(f.error() == tandem::make_error_code(tandem::ExecError::ShutDown));
    }
}
