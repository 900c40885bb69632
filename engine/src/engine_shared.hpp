#pragma once
// Internal: what an engine shares with every job it runs. Jobs hold it by shared_ptr, so a job
// completing on any thread never touches a destroyed engine.

#include "histogram.hpp"
#include "trace.hpp"

#include <tandem/actors/parker.hpp>
#include <tandem/detail/job.hpp>
#include <tandem/engine.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tandem::detail {

/// Takes work off a user's thread: a cancelled batch's skipped range is handed to an engine
/// thread (the scheduler), which default-constructs its outputs and may complete the batch.
class Offload {
public:
    /// Skips `r` of `job` with `why` on an engine thread (or here, if the engine has stopped).
    virtual void skip_later(std::shared_ptr<JobCore> job, Range r, ExecError why) noexcept = 0;

protected:
    ~Offload() = default;
};

/// Engine-wide counters and hooks.
///
/// Layout, for 1-task batches from many threads: admission is one atomic word (batches and
/// tasks in flight packed together, one add per submit and one subtract per completion); the
/// per-batch statistics are sharded, each thread adding to a cache line of its own, and summed
/// when read; the rare counters sit apart.
struct EngineShared {
    /// Batches in flight live in the top 20 bits of `inflight`, tasks in the low 44.
    static constexpr int batch_shift = 44;
    static constexpr std::uint64_t one_batch = std::uint64_t{1} << batch_shift;
    static constexpr std::uint64_t task_mask = one_batch - 1;
    /// Most batches in flight: the 20-bit field, less room for submitters that overshoot it
    /// for an instant before they back off.
    static constexpr std::uint64_t max_batches = (std::uint64_t{1} << 20) - 4096;
    static std::uint64_t batches_of(std::uint64_t v) noexcept { return v >> batch_shift; }
    static std::uint64_t tasks_of(std::uint64_t v) noexcept { return v & task_mask; }

    alignas(64) std::atomic<std::uint64_t> inflight{0};

    /// The hot counters of one group of threads.
    struct alignas(64) Shard {
        std::atomic<std::uint64_t> entering{0};  // submitters between the closed check and the send
        std::atomic<std::uint64_t> batches_submitted{0};
        std::atomic<std::uint64_t> batches_completed{0};
        std::atomic<std::uint64_t> tasks_completed{0};
        std::atomic<std::uint64_t> cpu_tasks{0};
        std::atomic<std::uint64_t> gpu_tasks{0};
    };
    static constexpr std::size_t shard_count = 32;
    std::array<Shard, shard_count> shards;

    /// This thread's shard index (threads are dealt shards in turn as they first ask).
    static unsigned my_shard() noexcept {
        static std::atomic<unsigned> next{0};
        thread_local const unsigned index = next.fetch_add(1, std::memory_order_relaxed) % shard_count;
        return index;
    }
    /// This thread's shard.
    Shard& mine() noexcept { return shards[my_shard()]; }
    /// Sum of one counter over every shard.
    std::uint64_t sum(std::atomic<std::uint64_t> Shard::*counter,
                      std::memory_order order = std::memory_order_relaxed) const noexcept {
        std::uint64_t total = 0;
        for (const Shard& s : shards) total += (s.*counter).load(order);
        return total;
    }

    /// Bit i set: CPU worker i has nothing queued (a hint; workers past 64 are never in it).
    /// Here rather than in the scheduler so that a job's waiter may read it at any time.
    alignas(64) std::atomic<std::uint64_t> idle_mask{~std::uint64_t{0}};
    /// CPU workers of the engine (set once at construction).
    std::size_t workers = 0;

    /// Whether busy workers leave this machine no core for one more thread (from the idle
    /// hint; workers past 64 count as busy).
    bool no_core_free() const noexcept {
        static const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
        const std::size_t tracked = std::min<std::size_t>(workers, 64);
        const std::uint64_t mask = tracked == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << tracked) - 1;
        const auto idle = static_cast<std::size_t>(__builtin_popcountll(idle_mask.load(std::memory_order_relaxed) & mask));
        return workers - idle + 1 > cores;
    }
    /// Set once shutdown stops the actors: workers, devices and a waiter that runs chunks skip
    /// what they claim from then on. Here, not in the engine: a job may outlive its engine.
    std::atomic<bool> stopping{false};
    /// `EngineTestHooks::simulate_cpu_cost` and its model (set once at construction).
    bool simulate_cpu_cost = false;
    std::chrono::nanoseconds cpu_fixed_cost{0}, cpu_per_task{0};

    /// The per-batch histograms of one group of threads (the same shard index as `shards`):
    /// a completing batch adds to its thread's own lines, never to another thread's.
    struct alignas(64) HistogramShard {
        std::array<AtomicHistogram, 3> batch_duration;  // by DeviceKind
        AtomicHistogram queue_wait;
    };
    std::array<HistogramShard, shard_count> histograms;
    /// `EngineConfig::record_histograms` (set once at construction).
    bool record_histograms = true;
    /// The execution trace, when `EngineConfig::trace.enabled` (set once at construction,
    /// before any job runs; null when off: one load and branch per chunk is all it costs).
    std::unique_ptr<TraceRing> trace;

    /// What the engine counts for one device (the backend's slot), from the chunks it reports.
    struct alignas(64) DeviceCounters {
        std::atomic<std::uint64_t> tasks{0}, chunks{0}, bytes_h2d{0}, bytes_d2h{0};
        AtomicHistogram chunk_duration;
        std::array<AtomicHistogram, 3> stage_duration;  // by GpuStage
    };
    /// One per device of the backend (set once at construction, before any job runs).
    std::unique_ptr<DeviceCounters[]> devices;
    std::size_t device_count = 0;

    alignas(64) std::atomic<std::uint64_t> batches_failed{0};
    /// Tasks a device gave back to the CPU, by `FallbackReason` (value - 1).
    std::array<std::atomic<std::uint64_t>, fallback_reason_count> cpu_fallbacks{};
    std::atomic<std::uint64_t> task_failures{0};
    std::atomic<std::uint64_t> tasks_skipped{0};
    std::atomic<std::uint64_t> continuation_failures{0};
    std::atomic<std::uint64_t> batches_abandoned{0};

    /// Where a throwing continuation is reported (set once at construction).
    std::function<void(std::exception_ptr)> on_continuation_error;
    /// The scheduler, for cancels (set once at construction). Valid while any job of this
    /// engine is unfinished or any cancel is inside `offloading`: shutdown waits for both.
    Offload* offload = nullptr;
    /// Cancels between their first look at `offload` and their last touch of the scheduler.
    std::atomic<std::uint32_t> offloading{0};

    /// Wakes submitters waiting for room, and shutdown waiting for the last batch.
    alignas(64) actors::Parker room;

    /// Wakes blocked submitters (through the parker) and asynchronous ones (their waiters,
    /// run here). The parker's fence orders the caller's `inflight` update before the look at
    /// `room_waiter_count`; `add_room_waiter` pairs with it (Dekker, as in the parker).
    void wake_room_waiters() noexcept {
        room.notify();
        if (room_waiter_count.load(std::memory_order_relaxed) != 0) run_room_waiters(false);
    }

    /// Registers a waiter for the next time room may have freed.
    void add_room_waiter(std::shared_ptr<RoomWaiter> waiter) {
        {
            // The count changes only under the mutex, with the list: it never says "none"
            // while a waiter is in the list.
            std::lock_guard lock{room_waiter_mutex};
            room_waiters.push_back(std::move(waiter));
            room_waiter_count.fetch_add(1, std::memory_order_relaxed);
        }
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }

    /// Tells (and forgets) every registered waiter, on this thread, outside the lock.
    void run_room_waiters(bool closed) noexcept {
        std::vector<std::shared_ptr<RoomWaiter>> due;
        {
            std::lock_guard lock{room_waiter_mutex};
            due.swap(room_waiters);
            room_waiter_count.store(0, std::memory_order_relaxed);
        }
        for (auto& w : due) w->on_room(closed);
    }

    std::mutex room_waiter_mutex;
    std::vector<std::shared_ptr<RoomWaiter>> room_waiters;  // guarded by room_waiter_mutex
    std::atomic<std::uint32_t> room_waiter_count{0};

    /// Counts a continuation that threw and hands the exception to the handler (whose own
    /// exceptions are swallowed: there is nobody left to tell).
    void report_continuation_error(std::exception_ptr e) noexcept {
        continuation_failures.fetch_add(1, std::memory_order_relaxed);
        if (!on_continuation_error) return;
        try {
            on_continuation_error(std::move(e));
        } catch (...) {
        }
    }
};

/// Which engine the calling thread works for (an actor's thread, or a thread inside a job's
/// completion); null on a user's thread.
const EngineShared* current_engine() noexcept;
/// Marks the calling thread as working for `engine` (an actor's `on_start`).
void set_current_engine(const EngineShared* engine) noexcept;
/// Marks the calling thread as CPU worker `index` (its track in the trace).
void set_current_worker(std::uint32_t index) noexcept;

/// Keeps `p` alive until the process ends (memory a device that was given up on may still
/// touch; resources that raw pointers in users' batches may still name).
void keep_until_exit(std::shared_ptr<void> p) noexcept;

}  // namespace tandem::detail
