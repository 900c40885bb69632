#pragma once
// Internal: how long a device had engine work executing. Its chunks' intervals are added as
// they complete, in any order and overlapping (several streams run at once); the busy time is
// their union, so overlap counts once. Plain C++: the CUDA device actor feeds it intervals from
// CUDA event times (gpu/src/device_actor.cu), the simulated device its modelled durations.
//
// Besides the total it keeps the busy time of each of the last 16 seconds, from which
// `utilization` gives the share of a recent window (the `tandem_gpu_utilization_ratio` gauge).
//
// One writer (the device's actor thread) calls `add`; any thread may read `total_ns` and
// `utilization` at any time (relaxed atomics: a reader may see one interval half credited).

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace tandem::detail {

class BusyTime {
public:
    static constexpr std::int64_t second = 1'000'000'000;
    /// Seconds of history kept for `utilization` (the window must be shorter).
    static constexpr std::size_t history = 16;
    /// Covered intervals kept open for overlap with later ones (more are merged, see `add`).
    static constexpr std::size_t max_open = 128;

    /// Adds the interval [start, end) (steady-clock nanoseconds) and credits the part of it not
    /// covered yet. `horizon`: no interval added later starts before it (typically the issue
    /// time of the earliest chunk still in flight), so the covered time before it is final and
    /// forgotten. Returns the nanoseconds newly covered.
    std::int64_t add(std::int64_t start, std::int64_t end, std::int64_t horizon) noexcept {
        std::int64_t added = 0;
        if (end > start) {
            // The parts of [start, end) between the open intervals (sorted, disjoint) are new.
            std::int64_t cursor = start;
            for (std::size_t i = 0; i < open_count_ && cursor < end; ++i) {
                const auto [a, b] = open_[i];
                if (b <= cursor) continue;
                if (a >= end) break;
                if (a > cursor) added += credit(cursor, a);
                cursor = std::max(cursor, b);
            }
            if (cursor < end) added += credit(cursor, end);
            insert(start, end);
        }
        // Forget what no later interval can overlap.
        std::size_t keep = 0;
        while (keep < open_count_ && open_[keep].second <= horizon) ++keep;
        if (keep != 0) {
            std::move(open_.begin() + static_cast<std::ptrdiff_t>(keep),
                      open_.begin() + static_cast<std::ptrdiff_t>(open_count_), open_.begin());
            open_count_ -= keep;
        }
        return added;
    }

    /// Busy nanoseconds since start.
    std::int64_t total_ns() const noexcept { return total_.load(std::memory_order_relaxed); }

    /// The share of the window (`window` nanoseconds, at most 15 s, ending at `now`) during
    /// which the device was busy, in [0, 1]. Whole seconds: the window is stretched back to the
    /// start of its first second. A chunk still running is not counted yet.
    double utilization(std::int64_t now, std::int64_t window) const noexcept {
        if (window <= 0) return 0;
        const std::int64_t last = floor_div(now, second);
        const std::int64_t first = floor_div(now - std::min(window, (span_limit - 1) * second), second);
        std::int64_t busy = 0;
        for (const Second& s : seconds_) {
            const std::int64_t index = s.index.load(std::memory_order_relaxed);
            if (index >= first && index <= last) busy += s.busy_ns.load(std::memory_order_relaxed);
        }
        const std::int64_t span = now - first * second;
        if (span <= 0) return 0;
        return std::clamp(static_cast<double>(busy) / static_cast<double>(span), 0.0, 1.0);
    }

private:
    static constexpr auto span_limit = static_cast<std::int64_t>(history);

    struct Second {
        std::atomic<std::int64_t> index{-1};  // which second (steady clock) it holds
        std::atomic<std::int64_t> busy_ns{0};
    };

    static std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
        return a / b - static_cast<std::int64_t>((a % b != 0) && ((a < 0) != (b < 0)));
    }

    /// Credits [from, to) to the total and to the seconds it spans (those still in history).
    std::int64_t credit(std::int64_t from, std::int64_t to) noexcept {
        const std::int64_t d = to - from;
        total_.store(total_.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);  // one writer
        const std::int64_t last = floor_div(to - 1, second);
        for (std::int64_t k = std::max(floor_div(from, second), last - span_limit + 1);
             k <= last; ++k) {
            const std::int64_t part = std::min(to, (k + 1) * second) - std::max(from, k * second);
            Second& s = seconds_[static_cast<std::size_t>((k % span_limit + span_limit) % span_limit)];
            const std::int64_t held = s.index.load(std::memory_order_relaxed);
            if (held > k) continue;  // the slot moved on to a later second already
            if (held < k) {
                s.busy_ns.store(0, std::memory_order_relaxed);
                s.index.store(k, std::memory_order_relaxed);
            }
            s.busy_ns.store(s.busy_ns.load(std::memory_order_relaxed) + part, std::memory_order_relaxed);
        }
        return d;
    }

    /// Adds [start, end) to the open intervals, merging it with those it touches. When they
    /// are all taken, the two closest are merged (the gap between them then counts as covered:
    /// only a device with more than `max_open` chunks completing around one long chunk gets
    /// there).
    void insert(std::int64_t start, std::int64_t end) noexcept {
        std::size_t first = 0;
        while (first < open_count_ && open_[first].second < start) ++first;
        std::size_t last = first;
        while (last < open_count_ && open_[last].first <= end) {
            start = std::min(start, open_[last].first);
            end = std::max(end, open_[last].second);
            ++last;
        }
        if (last > first) {  // replaces [first, last)
            open_[first] = {start, end};
            std::move(open_.begin() + static_cast<std::ptrdiff_t>(last),
                      open_.begin() + static_cast<std::ptrdiff_t>(open_count_),
                      open_.begin() + static_cast<std::ptrdiff_t>(first + 1));
            open_count_ -= last - first - 1;
            return;
        }
        if (open_count_ == max_open) {
            std::size_t closest = 0;
            for (std::size_t i = 1; i + 1 < open_count_; ++i) {
                if (open_[i + 1].first - open_[i].second < open_[closest + 1].first - open_[closest].second) closest = i;
            }
            open_[closest].second = open_[closest + 1].second;
            std::move(open_.begin() + static_cast<std::ptrdiff_t>(closest + 2),
                      open_.begin() + static_cast<std::ptrdiff_t>(open_count_),
                      open_.begin() + static_cast<std::ptrdiff_t>(closest + 1));
            --open_count_;
            if (first == closest + 1) return;  // it fell in the gap just closed
            if (first > closest + 1) --first;
        }
        std::move_backward(open_.begin() + static_cast<std::ptrdiff_t>(first),
                           open_.begin() + static_cast<std::ptrdiff_t>(open_count_),
                           open_.begin() + static_cast<std::ptrdiff_t>(open_count_ + 1));
        open_[first] = {start, end};
        ++open_count_;
    }

    // Writer's state.
    std::array<std::pair<std::int64_t, std::int64_t>, max_open> open_{};
    std::size_t open_count_ = 0;
    // Read by anyone.
    std::atomic<std::int64_t> total_{0};
    std::array<Second, history> seconds_{};
};

}  // namespace tandem::detail
