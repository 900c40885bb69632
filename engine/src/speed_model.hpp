#pragma once
// Internal (scheduling policy): the measured speed of one op on each kind of device, learned
// from the batches that complete.

#include <tandem/detail/job.hpp>

#include <atomic>
#include <chrono>

namespace tandem::detail {

/// Written once per batch by the completing thread, read by the scheduler when it plans: both
/// rates are independent atomics (a torn pair costs one slightly-off split, nothing more).
struct SpeedModel final : JobObserver {
    /// Tasks per second of one CPU worker (moving average; 0 until measured).
    std::atomic<double> cpu_rate{0};
    /// Tasks per second of one device, from issue to completion of its chunks (0 until
    /// measured).
    std::atomic<double> gpu_rate{0};

    static void blend(std::atomic<double>& rate, double sample) noexcept {
        const double old = rate.load(std::memory_order_relaxed);
        rate.store(old == 0 ? sample : 0.7 * old + 0.3 * sample, std::memory_order_relaxed);
    }

    /// Folds one completed batch into the averages. Tiny samples are skipped: their time is
    /// mostly fixed cost and would skew the rate.
    void on_complete(const ExecStats& s, std::chrono::nanoseconds gpu_span) noexcept override {
        if (s.cpu_tasks >= 1024 && s.cpu_time.count() > 0) {
            blend(cpu_rate, static_cast<double>(s.cpu_tasks) * 1e9 / static_cast<double>(s.cpu_time.count()));
        }
        if (s.gpu_tasks >= 65536 && gpu_span.count() > 0 && s.gpu_devices_used > 0) {
            blend(gpu_rate, static_cast<double>(s.gpu_tasks) * 1e9 / static_cast<double>(gpu_span.count()) /
                                s.gpu_devices_used);
        }
    }
};

}  // namespace tandem::detail
