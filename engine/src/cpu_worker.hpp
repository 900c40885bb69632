#pragma once
// Internal: a CPU-worker actor. It runs ranges of a job in place, writing outputs straight
// into the result slots.

#include <tandem/actors/actor.hpp>
#include <tandem/detail/job.hpp>

#include <atomic>
#include <cstdint>
#include <memory>

namespace tandem::detail {

/// A message to a CPU worker: a job, and either a fixed range (a GPU fallback) or, when
/// `range` is empty, "claim chunks from the job's cursor until none are left".
struct WorkerMessage {
    std::shared_ptr<JobCore> job;
    Range range{};
};

/// Why a worker skips instead of running: the engine stopping wins over a user cancel.
inline ExecError skip_reason(const std::atomic<bool>& engine_stopping) noexcept {
    return engine_stopping.load(std::memory_order_relaxed) ? ExecError::ShutDown : ExecError::Cancelled;
}

/// Runs or skips one range of a job.
inline void run_or_skip(JobCore& job, Range r, const std::atomic<bool>& engine_stopping) {
    if (engine_stopping.load(std::memory_order_relaxed) || job.cancel_requested()) {
        job.skip(r, skip_reason(engine_stopping));
    } else {
        job.run_cpu(r);
    }
}

class CpuWorker final : public actors::Behavior<WorkerMessage> {
public:
    /// `idle_mask`: the scheduler's hint of idle workers; this worker owns bit `index` (if < 64).
    CpuWorker(const std::atomic<bool>& engine_stopping, std::atomic<std::uint64_t>& idle_mask, std::size_t index,
              actors::ActorOptions options)
        : stopping_{engine_stopping}, idle_mask_{idle_mask},
          bit_{index < 64 ? std::uint64_t{1} << index : 0}, actor_{*this, options} {}

    void on_message(WorkerMessage& m) override {
        if (!m.range.empty()) {
            run_or_skip(*m.job, m.range, stopping_);
        } else {
            JobCore& job = *m.job;
            const std::size_t chunk = job.cpu_chunk();
            for (Range r = job.claim_cpu(chunk); !r.empty(); r = job.claim_cpu(chunk)) run_or_skip(job, r, stopping_);
        }
        m.job.reset();
        if (queued_.fetch_sub(1, std::memory_order_acq_rel) == 1 && bit_ != 0) {
            idle_mask_.fetch_or(bit_, std::memory_order_release);
        }
    }

    actors::Actor<WorkerMessage>& actor() noexcept { return actor_; }

    /// Called by the scheduler before it sends: clears the idle bit first, so the bit the
    /// worker sets when its queue drains always lands after this clear.
    void note_sent() noexcept {
        if (bit_ != 0) idle_mask_.fetch_and(~bit_, std::memory_order_relaxed);
        queued_.fetch_add(1, std::memory_order_acq_rel);
    }

private:
    const std::atomic<bool>& stopping_;
    std::atomic<std::uint64_t>& idle_mask_;
    const std::uint64_t bit_;
    alignas(64) std::atomic<std::uint32_t> queued_{0};
    actors::Actor<WorkerMessage> actor_;  // last: its thread starts once the rest is built
};

}  // namespace tandem::detail
