// A kernel that never returns: shutdown waits `GpuConfig::shutdown_grace` for it, then gives
// the device up, fails the batch with DeviceFailed and returns. Its own executable: the device
// given up on keeps its streams and memory for the rest of the process.
//
// The kernel spins on a flag in page-locked host memory mapped into the device, so the test
// itself releases it once the engine has shut down; a clock64() bound of a few seconds is a
// safety net so the process can always exit, whatever the engine does.
#define BOOST_TEST_MODULE gpu_hang
#include <boost/test/unit_test.hpp>

#include <tandem/gpu/map.cuh>
#include <tandem/tandem.hpp>

#include <cuda_runtime.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <thread>

namespace utf = boost::unit_test;

namespace {

struct HasGpu {
    boost::test_tools::assertion_result operator()(utf::test_unit_id) const {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess) {
            cudaGetLastError();
            n = 0;
        }
        boost::test_tools::assertion_result r(static_cast<bool>(n > 0));
        if (n == 0) r.message() << "needs a GPU, found none";
        return r;
    }
};

/// Shared between the test and the kernel, in mapped page-locked memory.
struct HangState {
    int started;   // the kernel has begun spinning
    int release;   // set by the test: the kernel may return
    int finished;  // 1: released by the test; 2: the safety net's bound ran out
};

/// Writes its outputs, then spins until `release` is set (or `limit` clock cycles pass).
__global__ void hang_until_released(HangState* s, const std::uint32_t* in, std::uint32_t* out, std::size_t n,
                                    long long limit) {
    volatile HangState* v = s;
    for (std::size_t i = 0; i < n; ++i) out[i] = in[i] + 1;
    v->started = 1;
    __threadfence_system();
    const long long start = clock64();
    int how = 1;
    while (v->release == 0) {
        if (clock64() - start > limit) {
            how = 2;
            break;
        }
        __nanosleep(10000);
    }
    v->finished = how;
    __threadfence_system();
}

int load(const int& flag) { return std::atomic_ref<int>{const_cast<int&>(flag)}.load(std::memory_order_acquire); }

/// Waits (host side) until `flag` is non-zero, at most `timeout`; true if it was set.
bool wait_for_flag(const int& flag, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (load(flag) == 0) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
    return true;
}

}  // namespace

BOOST_AUTO_TEST_CASE(shutdown_gives_up_on_a_kernel_that_never_returns_and_fails_its_batch,
                     *utf::precondition(HasGpu{}) * utf::label("gpu")) {
    void* raw = nullptr;
    BOOST_REQUIRE(cudaHostAlloc(&raw, sizeof(HangState), cudaHostAllocMapped) == cudaSuccess);
    std::memset(raw, 0, sizeof(HangState));
    auto* host = static_cast<HangState*>(raw);
    void* mapped = nullptr;
    BOOST_REQUIRE(cudaHostGetDevicePointer(&mapped, raw, 0) == cudaSuccess);
    auto* device = static_cast<HangState*>(mapped);

    int khz = 0;
    if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0) != cudaSuccess || khz <= 0) {
        cudaGetLastError();
        khz = 2'000'000;
    }
    const long long limit = 5LL * 1000 * khz;  // cycles in about 5 s: the safety net

    // Whatever happens below, the kernel is released and the device drained before the test
    // ends (and before the page-locked flags are freed).
    struct Release {
        HangState* host;
        ~Release() {
            std::atomic_ref<int>{host->release}.store(1, std::memory_order_release);
            int n = 0;
            cudaGetDeviceCount(&n);
            for (int d = 0; d < n; ++d) {
                cudaSetDevice(d);
                cudaDeviceSynchronize();
            }
            cudaGetLastError();
            cudaFreeHost(host);
        }
    } release{host};

    tandem::EngineConfig c;
    c.cpu_workers = 2;
    c.gpu.max_devices = 1;
    c.gpu.threshold_tasks = 1;
    c.gpu.cpu_helps = false;
    c.gpu.shutdown_grace = std::chrono::milliseconds{200};
    tandem::Engine engine{c};
    BOOST_REQUIRE(engine.gpu_count() == 1u);

    // A GPU-only op: nothing can run it but the device.
    tandem::Op<std::uint32_t, std::uint32_t> hang{
        "hang", tandem::gpu::launcher<std::uint32_t, std::uint32_t>(
                    [device, limit](cudaStream_t s, const std::uint32_t* in, std::uint32_t* out, std::size_t n) {
                        hang_until_released<<<1, 1, 0, s>>>(device, in, out, n, limit);
                        return cudaGetLastError();
                    })};
    tandem::Batch<std::uint32_t> batch;
    for (std::uint32_t i = 0; i < 1024; ++i) batch.push({i, i, 1});
    auto future = engine.submit(hang, std::move(batch));

    // The chunk is on the device (its kernel is spinning) before shutdown starts: a batch not
    // yet started would complete with ShutDown instead.
    BOOST_REQUIRE_MESSAGE(wait_for_flag(host->started, std::chrono::seconds{30}), "the kernel never started");

    auto shut = std::async(std::launch::async, [&engine] { engine.shutdown(); });
    // If a check below fails, the kernel is released first, so that `shut` (which waits for the
    // shutdown) and the engine's destructor can return.
    struct Unblock {
        HangState* host;
        ~Unblock() { std::atomic_ref<int>{host->release}.store(1, std::memory_order_release); }
    } unblock{host};
    // Failure guards, not timings: generous bounds that only a broken shutdown exceeds.
    BOOST_REQUIRE_MESSAGE(shut.wait_for(std::chrono::seconds{30}) == std::future_status::ready,
                          "shutdown did not return while a kernel was stuck");
    shut.get();
    BOOST_REQUIRE(future.wait_for(std::chrono::seconds{30}) == std::future_status::ready);

    // Shutdown returned without waiting for the kernel: it is still spinning.
    BOOST_TEST(load(host->finished) == 0);
    BOOST_TEST(future.error() == tandem::make_error_code(tandem::ExecError::DeviceFailed));
    try {
        future.get();
        BOOST_ERROR("the batch of a device given up on must fail");
    } catch (const tandem::Error& e) {
        BOOST_TEST(e.code() == tandem::make_error_code(tandem::ExecError::DeviceFailed));
    }
    const auto m = engine.metrics();
    BOOST_TEST(m.batches_abandoned == 1u);
    BOOST_TEST(m.batches_failed == 1u);
    BOOST_TEST(m.batches_in_flight == 0u);
    const auto gpus = engine.gpus();
    BOOST_REQUIRE(gpus.size() == 1u);
    BOOST_TEST(!gpus[0].healthy);

    // Let the kernel return, and wait for the device: it was released, not timed out.
    std::atomic_ref<int>{host->release}.store(1, std::memory_order_release);
    BOOST_TEST(cudaSetDevice(0) == cudaSuccess);
    BOOST_TEST(cudaDeviceSynchronize() == cudaSuccess);
    BOOST_TEST(load(host->finished) == 1);
}
