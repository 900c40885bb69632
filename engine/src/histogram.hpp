#pragma once
// Internal: the recording side of `tandem::Histogram`: fixed buckets of relaxed atomic
// counters. Recording is one add to a bucket and one to the sum, no lock and no allocation;
// readers (a scrape) sum the buckets whenever they like.

#include <tandem/metrics.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace tandem::detail {

struct AtomicHistogram {
    /// Not cumulative: bucket i counts values in (bound[i-1], bound[i]]; the last, above 10 s.
    std::array<std::atomic<std::uint64_t>, Histogram::bounds + 1> buckets{};
    std::atomic<std::uint64_t> sum_ns{0};

    /// The bucket of a value: the number of bounds below it (19 compares, no branch).
    static std::size_t bucket_of(std::int64_t ns) noexcept {
        std::size_t i = 0;
        for (const std::int64_t bound : Histogram::upper_bounds_ns) i += static_cast<std::size_t>(ns > bound);
        return i;
    }

    void record(std::chrono::nanoseconds d) noexcept {
        const std::int64_t ns = std::max<std::int64_t>(d.count(), 0);
        buckets[bucket_of(ns)].fetch_add(1, std::memory_order_relaxed);
        sum_ns.fetch_add(static_cast<std::uint64_t>(ns), std::memory_order_relaxed);
    }

    /// Adds what was recorded so far to `out` (a snapshot: a record running meanwhile may show
    /// in a bucket and not yet in the sum).
    void add_to(Histogram& out) const noexcept {
        for (std::size_t b = 0; b < buckets.size(); ++b) out.buckets[b] += buckets[b].load(std::memory_order_relaxed);
        out.sum_seconds += static_cast<double>(sum_ns.load(std::memory_order_relaxed)) * 1e-9;
    }
};

}  // namespace tandem::detail
