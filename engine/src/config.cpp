// Validation of EngineConfig: a value that cannot work is refused at construction, naming the
// field and its range.
#include "config_check.hpp"

#include "engine_shared.hpp"

#include <stdexcept>
#include <string>

namespace tandem::detail {
namespace {

template <class T>
void check_range(const char* field, T value, T low, T high, const char* range) {
    if (!(value >= low && value <= high)) {  // (a NaN is out of range too)
        throw std::invalid_argument(std::string{"tandem::EngineConfig: "} + field + " = " + std::to_string(value) +
                                    " is out of range; allowed: " + range);
    }
}

/// Compares in the field's own unit (the bounds convert to it exactly), so a huge value
/// cannot overflow into range on the way.
template <class Rep, class Period>
void check_duration(const char* field, std::chrono::duration<Rep, Period> value, std::chrono::nanoseconds low,
                    std::chrono::nanoseconds high, const char* range) {
    using Field = std::chrono::duration<Rep, Period>;
    const Field lo = std::chrono::ceil<Field>(low), hi = std::chrono::floor<Field>(high);
    if (value < lo || value > hi) {
        throw std::invalid_argument(std::string{"tandem::EngineConfig: "} + field + " = " +
                                    std::to_string(value.count()) + " (in units of " + std::to_string(Period::num) +
                                    "/" + std::to_string(Period::den) + " s) is out of range; allowed: " + range);
    }
}

constexpr std::size_t tib = std::size_t{1} << 40;
using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

}  // namespace

void validate(const EngineConfig& c) {
    check_range<std::size_t>("cpu_workers", c.cpu_workers, 0, max_cpu_workers, "0 (automatic) .. 1024");
    check_range<std::size_t>("max_batches_in_flight", c.max_batches_in_flight, 1, EngineShared::max_batches,
                             "1 .. 1044480");
    check_range<std::uint64_t>("max_tasks_in_flight", c.max_tasks_in_flight, 1, EngineShared::task_mask / 2,
                               "1 .. 2^43");
    check_range<std::size_t>("cpu_chunk", c.cpu_chunk, 0, std::size_t{1} << 32, "0 (automatic) .. 2^32");
    check_duration("idle_spin", c.idle_spin, nanoseconds{0}, seconds{1}, "0 .. 1 s");
    check_duration("test_hooks.cpu_fixed_cost", c.test_hooks.cpu_fixed_cost, nanoseconds{0}, hours{1}, "0 .. 1 h");
    check_duration("test_hooks.cpu_per_task", c.test_hooks.cpu_per_task, nanoseconds{0}, seconds{1}, "0 .. 1 s");
    check_range<std::size_t>("trace.capacity", c.trace.capacity, 1, std::size_t{1} << 24, "1 .. 2^24");
    const GpuConfig& g = c.gpu;
    check_range<std::size_t>("gpu.max_devices", g.max_devices, 0, max_devices, "0 (all) .. 64");
    check_range<std::size_t>("gpu.first_device", g.first_device, 0, max_devices - 1, "0 .. 63");
    check_range<std::size_t>("gpu.streams_per_device", g.streams_per_device, 1, 64, "1 .. 64");
    check_range<std::size_t>("gpu.pinned_pool_bytes", g.pinned_pool_bytes, 4096, tib, "4 KiB .. 1 TiB");
    check_range<std::size_t>("gpu.device_pool_bytes", g.device_pool_bytes, 4096, tib, "4 KiB .. 1 TiB");
    check_range<std::size_t>("gpu.chunk_bytes", g.chunk_bytes, 0, tib, "0 (automatic) .. 1 TiB");
    check_range<std::uint32_t>("gpu.faults.kernel_repeats", g.faults.kernel_repeats, 1, 1000, "1 .. 1000");
    check_duration("gpu.shutdown_grace", g.shutdown_grace, milliseconds{1}, hours{1}, "1 ms .. 1 h");
    if (!(g.cpu_share <= 1)) {  // negative: from the models
        throw std::invalid_argument("tandem::EngineConfig: gpu.cpu_share = " + std::to_string(g.cpu_share) +
                                    " is out of range; allowed: 0 .. 1, or negative (from the models)");
    }
    check_range<std::size_t>("gpu.model.min_samples", g.model.min_samples, 1, 1000, "1 .. 1000");
    check_range<double>("gpu.model.forgetting", g.model.forgetting, 0.5, 0.999, "0.5 .. 0.999");
    check_range<double>("gpu.model.outlier_factor", g.model.outlier_factor, 1.5, 1000, "1.5 .. 1000");
    check_range<double>("gpu.model.min_hybrid_gain", g.model.min_hybrid_gain, 0, 1, "0 .. 1");
    check_duration("gpu.model.cpu_dispatch_cost", g.model.cpu_dispatch_cost, nanoseconds{0}, milliseconds{1}, "0 .. 1 ms");
    check_range<std::size_t>("gpu.model.outlier_streak", g.model.outlier_streak, 1, 16, "1 .. 16");
    check_range<std::size_t>("gpu.simulated (number of devices)", g.simulated.size(), 0, max_devices, "0 .. 64");
    for (const SimulatedDevice& d : g.simulated) {
        check_duration("gpu.simulated[].fixed_cost", d.fixed_cost, nanoseconds{0}, hours{1}, "0 .. 1 h");
        check_duration("gpu.simulated[].per_task", d.per_task, nanoseconds{0}, seconds{1}, "0 .. 1 s");
        check_duration("gpu.simulated[].start_delay", d.start_delay, nanoseconds{0}, hours{1}, "0 .. 1 h");
        check_range<long>("gpu.simulated[].fail_after_chunks", d.fail_after_chunks, -1, LONG_MAX, "-1 (never) or more");
        check_range<long>("gpu.simulated[].hang_after_chunks", d.hang_after_chunks, -1, LONG_MAX, "-1 (never) or more");
    }
}

}  // namespace tandem::detail
