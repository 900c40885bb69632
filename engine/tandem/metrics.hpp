#pragma once
/// \file
/// What `Engine::metrics()` reports beyond the engine-wide counters: latency histograms and
/// per-device figures. `tandem::to_prometheus` (engine.hpp) renders them in the Prometheus text
/// format; README, "Metrics", lists the series.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tandem {

/// A snapshot of a latency histogram with fixed buckets from 10 µs to 10 s (1, 2.5, 5 per
/// decade), the same for every histogram so that they can be summed and compared.
struct Histogram {
    /// Finite upper bounds.
    static constexpr std::size_t bounds = 19;
    /// The upper bounds in seconds, ascending; a last bucket (+Inf) takes what is above them.
    static constexpr std::array<double, bounds> upper_bounds = {
        10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
        25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0,   2.5,   5.0,   10.0};
    /// The same bounds in nanoseconds (what recording compares against).
    static constexpr std::array<std::int64_t, bounds> upper_bounds_ns = {
        10'000,      25'000,      50'000,        100'000,       250'000,       500'000,       1'000'000,
        2'500'000,   5'000'000,   10'000'000,    25'000'000,    50'000'000,    100'000'000,   250'000'000,
        500'000'000, 1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};

    /// Observations per bucket, not cumulative: `buckets[i]` counts values in
    /// (`upper_bounds[i-1]`, `upper_bounds[i]`], the last one those above 10 s.
    std::array<std::uint64_t, bounds + 1> buckets{};
    /// The sum of the observed values, in seconds.
    double sum_seconds = 0;

    /// Observations in all.
    std::uint64_t count() const noexcept {
        std::uint64_t n = 0;
        for (std::uint64_t b : buckets) n += b;
        return n;
    }
    /// Observations at most `upper_bounds[i]` (the Prometheus `le` bucket; i == bounds: all).
    std::uint64_t cumulative(std::size_t i) const noexcept {
        std::uint64_t n = 0;
        for (std::size_t b = 0; b <= i && b < buckets.size(); ++b) n += buckets[b];
        return n;
    }
    /// Adds another histogram's observations to this one.
    Histogram& operator+=(const Histogram& o) noexcept {
        for (std::size_t b = 0; b < buckets.size(); ++b) buckets[b] += o.buckets[b];
        sum_seconds += o.sum_seconds;
        return *this;
    }
};

/// A GPU stage, as the label of `tandem_gpu_stage_duration_seconds`.
enum class GpuStage : std::uint8_t { H2D, Kernel, D2H };

/// One device, as `Engine::metrics()` sees it (a real GPU or a simulated one).
struct DeviceMetrics {
    /// The device's index (the CUDA ordinal; the `device` label).
    int index = 0;
    std::string name;
    /// False once the engine retired the device after a failure.
    bool healthy = true;
    /// Tasks and chunks the device ran, and the bytes its chunks copied each way.
    std::uint64_t tasks = 0;
    std::uint64_t chunks = 0;
    std::uint64_t bytes_h2d = 0;
    std::uint64_t bytes_d2h = 0;
    /// Seconds during which engine work executed on the device: the union of its chunks'
    /// intervals (CUDA event times; a simulated device's modelled durations), so chunks that
    /// overlap on several streams count once. A chunk is counted when it completes.
    double busy_seconds = 0;
    /// The share of the last 10 s during which engine work executed (0 .. 1).
    double utilization = 0;
    /// Bytes of the device's page-locked staging buffers and of its device buffers (both
    /// kept for reuse), and the configured limits (`GpuConfig::pinned_pool_bytes`,
    /// `device_pool_bytes`).
    std::size_t pinned_pool_used = 0;
    std::size_t pinned_pool_capacity = 0;
    std::size_t device_pool_used = 0;
    std::size_t device_pool_capacity = 0;
    /// Per chunk: the whole chunk (issue to completion seen), and its stages where they were
    /// timed (chunks of at least 256 KiB on a GPU; every chunk of a simulated device, whose
    /// model has no copies). Empty when `EngineConfig::record_histograms` is off.
    Histogram chunk_duration;
    std::array<Histogram, 3> stage_duration;  ///< by `GpuStage`
};

}  // namespace tandem
