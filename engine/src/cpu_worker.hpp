#pragma once
// Internal: a CPU-worker actor. It runs ranges of a job in place, writing outputs straight
// into the result slots.

#include <tandem/actors/actor.hpp>
#include <tandem/detail/job.hpp>

#include <atomic>
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
    CpuWorker(const std::atomic<bool>& engine_stopping, actors::ActorOptions options)
        : stopping_{engine_stopping}, actor_{*this, options} {}

    void on_message(WorkerMessage& m) override {
        if (!m.range.empty()) {
            run_or_skip(*m.job, m.range, stopping_);
            return;
        }
        JobCore& job = *m.job;
        const std::size_t chunk = job.cpu_chunk();
        for (Range r = job.claim(chunk); !r.empty(); r = job.claim(chunk)) run_or_skip(job, r, stopping_);
    }

    actors::Actor<WorkerMessage>& actor() noexcept { return actor_; }

private:
    const std::atomic<bool>& stopping_;
    actors::Actor<WorkerMessage> actor_;  // last: its thread starts once the rest is built
};

}  // namespace tandem::detail
