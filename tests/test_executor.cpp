// The seed's contract: Executor, CpuMapExecutor, UnavailableGpu, HybridScheduler.
#define BOOST_TEST_MODULE executor
#include <boost/test/unit_test.hpp>

#include <tandem/tandem.hpp>

#include <cstdint>

namespace {

tandem::Batch<std::uint32_t> batch_of(std::size_t n) {
    tandem::Batch<std::uint32_t> b;
    for (std::size_t i = 0; i < n; ++i) b.push({i, static_cast<std::uint32_t>(i), 1});
    return b;
}

/// A GPU executor that is available but fails, to prove the scheduler's fallback choice.
struct CountingGpu {
    int* submits;
    template <class T, class R>
    tandem::Outcome<R> execute(const tandem::Batch<T>&) const { return std::error_code{tandem::ExecError::DeviceFailed}; }
    template <class T, class R>
    tandem::BatchFuture<R> submit(const tandem::Batch<T>&) const {
        ++*submits;
        return tandem::make_failed_future<R>(tandem::ExecError::DeviceFailed);
    }
    bool is_available() const noexcept { return true; }
    tandem::DeviceKind device_kind() const noexcept { return tandem::DeviceKind::Gpu; }
};

}  // namespace

BOOST_AUTO_TEST_CASE(the_seed_quick_start_passes_as_written) {
    auto cpu = tandem::CpuMapExecutor([](const std::uint32_t& x) { return x + 1; });
    tandem::HybridScheduler scheduler(cpu, tandem::UnavailableGpu{}, tandem::HybridStrategy{});
    tandem::Batch<std::uint32_t> batch{{
        tandem::Task<std::uint32_t>{1, 41, 1},
        tandem::Task<std::uint32_t>{2, 99, 1},
    }};
    auto [results, stats] = scheduler.schedule(batch).get();
    BOOST_TEST(results[0].output == 42u);
    BOOST_TEST(results[1].output == 100u);
    BOOST_TEST((stats.device == tandem::DeviceKind::Cpu));
}

BOOST_AUTO_TEST_CASE(unavailable_gpu_always_reports_backend_unavailable) {
    tandem::UnavailableGpu gpu;
    BOOST_TEST(!gpu.is_available());
    BOOST_TEST((gpu.device_kind() == tandem::DeviceKind::Gpu));
    auto outcome = gpu.execute<std::uint32_t, std::uint32_t>(batch_of(3));
    BOOST_TEST(!outcome.has_value());
    BOOST_TEST(outcome.error() == tandem::make_error_code(tandem::ExecError::BackendUnavailable));
    auto f = gpu.submit<std::uint32_t, std::uint32_t>(batch_of(3));
    BOOST_TEST(f.ready());
    BOOST_CHECK_THROW(f.get(), tandem::Error);
}

BOOST_AUTO_TEST_CASE(cpu_map_executor_maps_every_task_and_reports_cpu) {
    tandem::CpuMapExecutor cpu{[](const std::uint32_t& x) { return std::uint64_t{x} * 3; }, 2};
    static_assert(tandem::Executor<decltype(cpu), std::uint32_t, std::uint64_t>);
    static_assert(tandem::Executor<tandem::UnavailableGpu, std::uint32_t, std::uint64_t>);
    BOOST_TEST(cpu.is_available());
    auto outcome = cpu.execute(batch_of(10000));
    BOOST_REQUIRE(outcome.has_value());
    auto& r = outcome.value();
    for (std::size_t i = 0; i < 10000; ++i) BOOST_REQUIRE_EQUAL(r.results[i].output, 3 * i);
    BOOST_TEST(r.stats.cpu_tasks == 10000u);
}

BOOST_AUTO_TEST_CASE(cpu_map_executor_returns_errors_as_values) {
    tandem::CpuMapExecutor cpu{[](const std::uint32_t& x) { return x; }, 1};
    auto outcome = cpu.execute(tandem::Batch<std::uint32_t>{});
    BOOST_TEST(!outcome);
    BOOST_TEST(outcome.error() == tandem::make_error_code(tandem::ExecError::EmptyBatch));
    BOOST_CHECK_THROW(outcome.value(), tandem::Error);
}

BOOST_AUTO_TEST_CASE(hybrid_scheduler_keeps_batches_below_the_threshold_on_the_cpu) {
    int gpu_submits = 0;
    tandem::CpuMapExecutor cpu{[](const std::uint32_t& x) { return x + 1; }, 2};
    tandem::HybridScheduler scheduler{cpu, CountingGpu{&gpu_submits}, tandem::HybridStrategy{.gpu_threshold = 100}};
    auto small = scheduler.schedule(batch_of(99)).get();
    BOOST_TEST((small.stats.device == tandem::DeviceKind::Cpu));
    BOOST_TEST(gpu_submits == 0);
    BOOST_TEST(scheduler.uses_gpu(batch_of(100)));
    BOOST_CHECK_THROW(scheduler.schedule(batch_of(100)).get(), tandem::Error);
    BOOST_TEST(gpu_submits == 1);
}

BOOST_AUTO_TEST_CASE(hybrid_scheduler_falls_back_to_the_cpu_when_the_gpu_is_unavailable) {
    tandem::CpuMapExecutor cpu{[](const std::uint32_t& x) { return x * 2; }, 2};
    tandem::HybridScheduler scheduler{cpu, tandem::UnavailableGpu{}, tandem::HybridStrategy{.gpu_threshold = 1}};
    auto r = scheduler.schedule(batch_of(5000)).get();
    BOOST_TEST((r.stats.device == tandem::DeviceKind::Cpu));
    BOOST_TEST(r.results[4999].output == 9998u);
}

BOOST_AUTO_TEST_CASE(hybrid_scheduler_runs_the_cpu_executor_on_max_cpu_parallelism_workers) {
    tandem::CpuMapExecutor cpu{[](const int& x) { return 2 * x; }, 2};
    BOOST_TEST(cpu.max_parallelism() == 2u);
    tandem::HybridScheduler scheduler{cpu, tandem::UnavailableGpu{},
                                      tandem::HybridStrategy{.gpu_threshold = 1024, .max_cpu_parallelism = 3}};
    BOOST_TEST(scheduler.cpu().max_parallelism() == 3u);
    BOOST_TEST(cpu.max_parallelism() == 2u);  // the caller's copy is unchanged
    tandem::Batch<int> batch;
    for (int i = 0; i < 100; ++i) batch.push({static_cast<std::uint64_t>(i), i, 1});
    auto r = scheduler.schedule(batch).get();
    BOOST_TEST(r.results[99].output == 198);
}

BOOST_AUTO_TEST_CASE(error_codes_have_readable_messages_in_the_tandem_category) {
    std::error_code ec = tandem::ExecError::DuplicateTaskId;
    BOOST_TEST(ec.category().name() == std::string{"tandem"});
    BOOST_TEST(ec.message() == "duplicate task id in batch");
    BOOST_TEST(std::error_code{tandem::ExecError::BackendUnavailable}.message() == "backend unavailable");
}
