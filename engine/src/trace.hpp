#pragma once
// Internal: the execution trace (`EngineConfig::trace`). Engine threads record one fixed-size
// event per batch and per chunk into a bounded ring; `Engine::write_trace` turns a snapshot of
// it into Trace Event Format JSON (trace.cpp).

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace tandem::detail {

enum class TraceKind : std::uint8_t { Batch, CpuChunk, GpuChunk };

/// One recorded event: all times host steady-clock nanoseconds (since its epoch).
struct TraceEvent {
    std::int64_t begin_ns = 0, end_ns = 0;
    /// The batch's trace id (1, 2, ...: `TraceRing::next_batch_id`).
    std::uint64_t batch = 0;
    /// The range a chunk ran, or a batch's size (`first_task` 0).
    std::uint64_t first_task = 0, tasks = 0;
    /// A GPU chunk with timed stages: H2D start, H2D end, kernel end, D2H end (inside
    /// [begin_ns, end_ns]).
    std::int64_t stage_ns[4] = {0, 0, 0, 0};
    /// CPU chunk: the worker's index, `first_waiter + k` for the k-th thread that ran chunks of
    /// the batch it waited for (`JobCore::wait`), `no_worker` for another thread; GPU chunk:
    /// the stream.
    std::uint32_t track = 0;
    /// GPU chunk: the device's slot in the backend.
    std::uint32_t device = 0;
    TraceKind kind = TraceKind::Batch;
    bool stages = false;
    /// Batch: completed with an error.
    bool failed = false;
    /// The op's name, cut to fit (copied: the job may be gone by the time it is exported).
    char op[29] = {};

    static constexpr std::uint32_t no_worker = 0xffffffffu;
    static constexpr std::uint32_t first_waiter = 0x40000000u;
    void set_op(std::string_view name) noexcept;
};

/// A bounded ring of events, written by any number of threads.
///
/// A writer takes a ticket (one relaxed fetch_add on a shared counter) and owns slot
/// `ticket % capacity` for the copy, under that slot's own flag: two writers meet on a slot
/// only when one has lapped the other by the whole capacity, and the exporter takes the flag
/// only to copy the slot out. The oldest events are overwritten; `recorded() - capacity` of
/// them are gone. No allocation after construction.
class TraceRing {
public:
    TraceRing(std::size_t capacity, std::chrono::steady_clock::time_point origin);

    /// Records one event: `fill(TraceEvent&)` writes every field of it, in place in its slot
    /// (no copy; it must not throw, nor record).
    template <class Fill>
    void record(Fill&& fill) noexcept {
        const std::uint64_t ticket = head_.fetch_add(1, std::memory_order_relaxed);
        Slot& s = slots_[ticket % capacity_];
        // Held for the fill; contended only by a writer a whole ring ahead, or the exporter.
        while (s.busy.exchange(true, std::memory_order_acquire)) std::this_thread::yield();
        // A writer lapped while it waited must not overwrite the newer event.
        if (s.ticket == ~std::uint64_t{0} || s.ticket < ticket) {
            s.ticket = ticket;
            fill(s.event);
        }
        s.busy.store(false, std::memory_order_release);
    }
    /// A fresh id for a batch (never 0).
    std::uint64_t next_batch_id() noexcept { return batch_ids_.fetch_add(1, std::memory_order_relaxed) + 1; }

    /// Every event kept, oldest first, with how many were recorded in all.
    std::vector<TraceEvent> snapshot(std::uint64_t& recorded) const;
    std::size_t capacity() const noexcept { return capacity_; }
    /// Host steady-clock nanoseconds of time 0 in the export (the engine's start).
    std::int64_t origin_ns() const noexcept { return origin_ns_; }

private:
    struct Slot {
        mutable std::atomic<bool> busy{false};
        std::uint64_t ticket = ~std::uint64_t{0};  // ~0: never written
        TraceEvent event;
    };
    const std::size_t capacity_;
    const std::int64_t origin_ns_;
    std::unique_ptr<Slot[]> slots_;
    alignas(64) std::atomic<std::uint64_t> head_{0};
    alignas(64) std::atomic<std::uint64_t> batch_ids_{0};
};

/// What the export names its tracks after.
struct TraceLayout {
    std::size_t cpu_workers = 0;
    /// Device names by slot ("H200", "sim0"...).
    std::vector<std::string> devices;
};

/// Writes `ring`'s events (or, when null, only the track names) as Trace Event Format JSON.
void write_trace_json(std::ostream& out, const TraceRing* ring, const TraceLayout& layout);

}  // namespace tandem::detail
