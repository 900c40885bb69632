#pragma once
// Internal: a CPU-worker actor. It runs ranges of a job in place, writing outputs straight
// into the result slots.

#include "engine_shared.hpp"

#include <tandem/actors/actor.hpp>
#include <tandem/detail/job.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace tandem::detail {

/// A message to a CPU worker: a job, and either a fixed range (a device's fallback) or
/// `claim`: "claim chunks from the job's cursor, within the CPU's quota, until none are left".
struct WorkerMessage {
    std::shared_ptr<JobCore> job;
    Range range{};
    bool claim = false;
};

/// Why a worker skips instead of running: the engine stopping wins over a user cancel.
inline ExecError skip_reason(const std::atomic<bool>& engine_stopping) noexcept {
    return engine_stopping.load(std::memory_order_relaxed) ? ExecError::ShutDown : ExecError::Cancelled;
}

/// Runs or skips one range of a job: claimed from its share (`own_share`), or handed over (a
/// device's fallback).
inline void run_or_skip(JobCore& job, Range r, const std::atomic<bool>& engine_stopping, bool own_share) {
    if (engine_stopping.load(std::memory_order_relaxed) || job.cancel_requested()) {
        job.skip(r, skip_reason(engine_stopping));
    } else {
        job.run_cpu(r, own_share);
    }
}

/// The error a message that never reached its actor leaves its work with.
inline ExecError rejection_error(actors::Rejection why) noexcept {
    return why == actors::Rejection::Stopped ? ExecError::ShutDown : ExecError::OutOfMemory;
}

/// Skips what a worker message would have run: its range, or the CPU's share of the cursor.
inline void skip_message(WorkerMessage& m, ExecError why) noexcept {
    if (!m.job) return;
    if (!m.claim) {
        m.job->skip(m.range, why);
        return;
    }
    const std::size_t chunk = m.job->cpu_chunk();
    for (Range r = m.job->claim_cpu(chunk); !r.empty(); r = m.job->claim_cpu(chunk)) m.job->skip(r, why);
}

/// Applies `priority` to the calling thread (Linux; elsewhere nothing). Best effort: a
/// refusal by the kernel leaves the thread as it was.
void apply_worker_priority(WorkerPriority priority) noexcept;
/// Puts the calling thread back to the default policy and nice 0 (a helper thread started from
/// a low-priority worker inherits its priority). Best effort.
void restore_normal_priority() noexcept;

/// A CPU worker. Fair between batches: the batches it serves ("claim" messages) are kept in a
/// ring and it runs one chunk of each in turn, checking its mailbox between chunks, so a small
/// batch that arrives while a huge one runs waits for a few chunks, not for the whole batch.
class CpuWorker final : public actors::Behavior<WorkerMessage> {
public:
    /// `idle_mask`: the scheduler's hint of idle workers; this worker owns bit `index` (if < 64).
    CpuWorker(const EngineShared* engine, const std::atomic<bool>& engine_stopping,
              std::atomic<std::uint64_t>& idle_mask, std::size_t index, WorkerPriority priority,
              actors::ActorOptions options)
        : engine_{engine}, stopping_{engine_stopping}, idle_mask_{idle_mask},
          bit_{index < 64 ? std::uint64_t{1} << index : 0}, index_{static_cast<std::uint32_t>(index)},
          priority_{priority}, tails_{engine}, actor_{*this, options} {}

    void on_start() override {
        set_current_engine(engine_);
        set_current_worker(index_);
        apply_worker_priority(priority_);
        serving_.reserve(16);
    }

    void on_message(WorkerMessage& m) override {
        if (!m.claim) {
            run_keeping_tails(*m.job, m.range, false);
            m.job.reset();
            done_one();
            return;
        }
        const int priority = m.job->priority();
        serving_.push_back(std::move(m.job));  // may throw (no memory): on_exception skips it
        if (priority != serving_.front()->priority()) mixed_priorities_ = true;
    }

    /// One chunk of the next batch in the ring; true while any batch has work left. The
    /// completions' tails kept meanwhile (large frees) are done with nothing left to run, or
    /// once every batch in the ring has had two more chunks (the small batches that were
    /// queued behind the completion have been served by then; steady load cannot defer them).
    bool on_idle() override {
        if (tails_counted_ && (serving_.empty() || tail_chunks_ >= 2 * serving_.size() + 2)) run_tails();
        if (serving_.empty()) return false;
        if (next_ >= serving_.size()) next_ = 0;
        if (mixed_priorities_) next_ = next_of_top_priority();
        JobCore& job = *serving_[next_];
        const Range r = job.claim_cpu(job.cpu_chunk());
        if (r.empty()) {  // this batch has nothing left for the CPU: it leaves the ring
            serving_[next_] = std::move(serving_.back());
            serving_.pop_back();
            if (serving_.size() <= 1) mixed_priorities_ = false;
            done_one();
        } else {
            run_keeping_tails(job, r, true);
            if (tails_counted_) ++tail_chunks_;
            ++next_;
        }
        return !serving_.empty() || tails_counted_;
    }

    void on_stop() override {
        if (tails_counted_) run_tails();
    }

    void on_exception(WorkerMessage& m, std::exception_ptr) noexcept override {
        skip_message(m, ExecError::OutOfMemory);
        m.job.reset();
        done_one();
    }

    void on_rejected(WorkerMessage& m, actors::Rejection why) noexcept override {
        skip_message(m, rejection_error(why));
        m.job.reset();
        done_one();
    }

    actors::Actor<WorkerMessage>& actor() noexcept { return actor_; }

    /// Called by the scheduler before it sends: clears the idle bit first, so the bit the
    /// worker sets when its queue drains lands after this clear. (A hint: a submitter that
    /// finds the bit already clear does not write it, and a worker that drains just then may
    /// leave it set while a message waits; the next submitter that picks it clears it.)
    void note_sent() noexcept {
        // Only a set bit is cleared: under load the bit is already clear, and the shared word
        // is then read, not written, by every submitter.
        if (bit_ != 0 && (idle_mask_.load(std::memory_order_relaxed) & bit_) != 0) {
            idle_mask_.fetch_and(~bit_, std::memory_order_relaxed);
        }
        queued_.fetch_add(1, std::memory_order_acq_rel);
    }

private:
    /// From `next_` on (wrapping), the first batch of the highest priority in the ring.
    std::size_t next_of_top_priority() const noexcept {
        int top = serving_[0]->priority();
        for (const auto& j : serving_) top = std::max(top, j->priority());
        const std::size_t n = serving_.size();
        for (std::size_t k = 0; k < n; ++k) {
            const std::size_t i = (next_ + k) % n;
            if (serving_[i]->priority() == top) return i;
        }
        return next_;
    }

    /// Runs a range with this worker's `CompletionTails` installed: only here (not in a
    /// rejection or an exception path) may a completion leave its tail with the worker.
    void run_keeping_tails(JobCore& job, Range r, bool own_share) {
        CompletionTails::install(&tails_);
        struct Uninstall {
            CpuWorker& worker;
            ~Uninstall() {
                CompletionTails::install(nullptr);
                worker.count_tails();  // even if something threw after a tail was kept
            }
        } uninstall{*this};
        run_or_skip(job, r, stopping_, own_share);
    }

    /// Tails kept count as one queued item, so the worker does not look idle (and is not sent
    /// small batches first) while it still has a large free to do.
    void count_tails() noexcept {
        if (!tails_counted_ && !tails_.empty()) {
            queued_.fetch_add(1, std::memory_order_acq_rel);  // a job is still held: the bit is clear
            tails_counted_ = true;
        }
    }

    void run_tails() noexcept {
        tails_.run();
        tails_counted_ = false;
        tail_chunks_ = 0;
        done_one();
    }

    void done_one() noexcept {
        if (queued_.fetch_sub(1, std::memory_order_acq_rel) == 1 && bit_ != 0) {
            idle_mask_.fetch_or(bit_, std::memory_order_release);
        }
    }

    const EngineShared* engine_;
    const std::atomic<bool>& stopping_;
    std::atomic<std::uint64_t>& idle_mask_;
    const std::uint64_t bit_;
    const std::uint32_t index_;
    const WorkerPriority priority_;
    // Actor-thread state: the batches being served, and whose turn it is.
    std::vector<std::shared_ptr<JobCore>> serving_;
    std::size_t next_ = 0;
    bool mixed_priorities_ = false;  // the ring holds batches of more than one priority
    CompletionTails tails_;
    bool tails_counted_ = false;
    std::size_t tail_chunks_ = 0;  // chunks run since tails were first kept
    alignas(64) std::atomic<std::uint32_t> queued_{0};
    actors::Actor<WorkerMessage> actor_;  // last: its thread starts once the rest is built
};

}  // namespace tandem::detail
