// A real device fault (a kernel that traps leaves a sticky error): the device is retired and
// the batch still completes on the CPU. Its own executable: the fault breaks the process's
// CUDA context for good.
#define BOOST_TEST_MODULE gpu_fault
#include <boost/test/unit_test.hpp>

#include <tandem/gpu/map.cuh>
#include <tandem/tandem.hpp>

#include <cuda_runtime.h>

#include <cstdint>

namespace utf = boost::unit_test;

namespace {

struct HasGpu {
    boost::test_tools::assertion_result operator()(utf::test_unit_id) const {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
        boost::test_tools::assertion_result r(static_cast<bool>(n > 0));
        if (n == 0) r.message() << "needs a GPU, found none";
        return r;
    }
};

/// Traps on the device for one value; the host side (the CPU function) never traps.
struct TrapOn13 {
    __host__ __device__ std::uint32_t operator()(const std::uint32_t& x) const {
#ifdef __CUDA_ARCH__
        if (x == 13) __trap();
#endif
        return x * 2;
    }
};

}  // namespace

BOOST_AUTO_TEST_CASE(a_trapping_kernel_retires_the_device_and_the_batch_completes_on_the_cpu,
                     *utf::precondition(HasGpu{}) * utf::label("gpu")) {
    tandem::EngineConfig c;
    c.cpu_workers = 2;
    c.gpu.threshold_tasks = 1;
    c.gpu.cpu_helps = false;
    tandem::Engine engine{c};
    tandem::Op<std::uint32_t, std::uint32_t> op{"trap", TrapOn13{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(TrapOn13{})};
    tandem::Batch<std::uint32_t> batch;
    for (std::uint32_t i = 0; i < 100000; ++i) batch.push({i, i, 1});
    auto r = engine.submit(op, std::move(batch)).get();
    for (std::uint32_t i = 0; i < 100000; ++i) BOOST_REQUIRE_EQUAL(r.results[i].output, 2 * i);
    BOOST_TEST(r.stats.fallback_tasks > 0u);
    BOOST_TEST_MESSAGE("fallback reason: " << r.stats.fallback_reason);
    BOOST_TEST(engine.gpu_count() == 0u);
}
