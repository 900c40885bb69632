#include "scheduler.hpp"

#include <algorithm>
#include <new>

namespace tandem::detail {

Scheduler::Scheduler(const EngineConfig& config, EngineShared& engine, const std::atomic<bool>& engine_stopping,
                     std::vector<std::unique_ptr<CpuWorker>>& workers)
    : config_{config}, engine_{engine}, stopping_{engine_stopping}, workers_{workers} {}

void Scheduler::start(actors::ActorOptions options) {
    tokens_.reserve(workers_.size());
    for (auto& w : workers_) tokens_.push_back(w->actor().make_producer_token());
    if (config_.test_hooks.fail_worker_sends != 0) {
        for (auto& w : workers_) w->actor().inject_send_failures(config_.test_hooks.fail_worker_sends);
    }
    actor_ = std::make_unique<actors::Actor<SchedulerMessage>>(*this, options);
    if (config_.test_hooks.fail_scheduler_sends != 0) {
        actor_->inject_send_failures(config_.test_hooks.fail_scheduler_sends);
    }
}

void Scheduler::stop() {
    if (actor_) actor_->stop();
}

void Scheduler::on_start() { set_current_engine(&engine_); }

void Scheduler::send(std::shared_ptr<JobCore> job) {
    actor_->send(SchedulerMessage{std::move(job), SchedulerMessage::Kind::Plan, {}, {}});
}

void Scheduler::on_rejected(SchedulerMessage& m, actors::Rejection why) noexcept {
    if (!m.job) return;
    const ExecError error = rejection_error(why);
    switch (m.kind) {
        case SchedulerMessage::Kind::Plan: m.job->skip(m.job->claim_rest(), error); break;
        case SchedulerMessage::Kind::Fallback: m.job->skip(m.range, error); break;
        case SchedulerMessage::Kind::Skip: m.job->skip(m.range, m.reason); break;  // what it was sent to do
    }
}

void Scheduler::on_exception(SchedulerMessage& m, std::exception_ptr) noexcept {
    // Only an allocation can throw here (a model, a map node). Whatever of the job was not
    // handed out yet is skipped; what was handed out runs.
    if (!m.job) return;
    switch (m.kind) {
        case SchedulerMessage::Kind::Plan: m.job->skip(m.job->claim_rest(), ExecError::OutOfMemory); break;
        case SchedulerMessage::Kind::Fallback: m.job->skip(m.range, ExecError::OutOfMemory); break;
        case SchedulerMessage::Kind::Skip: break;  // skip() cannot throw
    }
}

void Scheduler::fallback(std::shared_ptr<JobCore> job, Range range, std::error_code why) noexcept {
    job->note_fallback(range, why);
    // Rejected (stopped, or no memory for the message): on_rejected skips the range.
    actor_->send(SchedulerMessage{std::move(job), SchedulerMessage::Kind::Fallback, range, {}});
}

void Scheduler::skip_later(std::shared_ptr<JobCore> job, Range r, ExecError why) noexcept {
    actor_->send(SchedulerMessage{std::move(job), SchedulerMessage::Kind::Skip, r, why});
}

void Scheduler::on_message(SchedulerMessage& m) {
    switch (m.kind) {
        case SchedulerMessage::Kind::Plan: plan(m.job); break;
        case SchedulerMessage::Kind::Fallback: rerun_on_cpu(m.job, m.range); break;
        case SchedulerMessage::Kind::Skip: m.job->skip(m.range, m.reason); break;
    }
}

void Scheduler::send_to_worker(std::size_t w, WorkerMessage message) {
    workers_[w]->note_sent();
    // A rejected message is skipped by the worker's on_rejected (with the reason), never lost.
    workers_[w]->actor().send(tokens_[w], std::move(message));
}

std::size_t Scheduler::workers_for(const JobCore& job) const noexcept {
    const std::size_t count = std::min(workers_.size(), job.cpu_chunks_planned());
    return job.cpu_width() != 0 ? std::min(count, job.cpu_width()) : count;
}

void Scheduler::engage_workers(const std::shared_ptr<JobCore>& job, std::size_t count) {
    // Idle workers first, lowest index first: the workers that just finished are still
    // spinning (a parked one costs a futex wake, ~15 µs on a 16-core host), and under light
    // load the same few stay hot. One load of the idle mask finds them (a hint: a bit may be
    // stale, which costs balance, never a message). Whatever is left goes round-robin.
    const std::size_t workers = workers_.size();
    std::size_t sent = 0;
    for (std::uint64_t idle = engine_.idle_mask.load(std::memory_order_acquire); idle != 0 && sent < count; idle &= idle - 1) {
        const auto w = static_cast<std::size_t>(__builtin_ctzll(idle));
        if (w >= workers) break;
        send_to_worker(w, WorkerMessage{job, {}, true});
        ++sent;
    }
    for (; sent < count; ++sent) {
        send_to_worker(next_worker_, WorkerMessage{job, {}, true});
        next_worker_ = (next_worker_ + 1) % workers;
    }
}

void Scheduler::rerun_on_cpu(const std::shared_ptr<JobCore>& job, Range range) {
    if (stopping_.load(std::memory_order_relaxed) || job->cancel_requested()) {
        job->skip(range, skip_reason(stopping_));
        return;
    }
    // Spread the range over the workers in CPU-sized pieces (of equal cost, where costs differ).
    for (std::size_t b = range.begin; b < range.end;) {
        const std::size_t e = job->cpu_piece_end(b, range.end);
        send_to_worker(next_worker_, WorkerMessage{job, Range{b, e}, false});
        next_worker_ = (next_worker_ + 1) % workers_.size();
        b = e;
    }
}

void Scheduler::set_backend(DeviceBackend* backend) {
    backend_ = backend;
    placement_ = std::make_unique<Placement>(config_, workers_.size(), backend);
}

bool Scheduler::dispatch_directly(const std::shared_ptr<JobCore>& job, bool caller_runs) {
    // The hooks that hold or fail the scheduler's own path keep every batch on it.
    if (config_.test_hooks.before_dispatch || config_.test_hooks.fail_scheduler_sends != 0) return false;
    const bool devices_possible = placement_->devices_possible(*job);
    // A GPU-only op no device can take: the scheduler fails it with the reason.
    if (!devices_possible && !job->has_cpu()) return false;
    if (devices_possible) {
        // Planned here, on the submitting thread (the job is not visible to any other thread
        // yet), and carried out here too: the devices are sent their shares directly, one hop
        // fewer than through this actor (a 4 KiB GPU round trip is ~15 us; each hop between
        // spinning threads costs some of it).
        try {
            placement_->place(*job);
        } catch (...) {
            job->plan() = PlanRecord{};  // out of memory: the scheduler tries again
            return false;
        }
        const PlanRecord& plan = job->plan();
        if (plan.devices == 0 && !job->has_cpu()) return false;  // every device retired: the scheduler fails it
        if (plan.devices != 0) {
            // As `plan`. Devices and workers are running: admission holds the engine open
            // until this returns (see `Engine::hand_over`).
            send_to_devices(job);
            if (plan.cpu_runs) send_to_workers(job, workers_for(*job), false);
            return true;
        }
    } else {
        job->plan().decided = true;
        placement_->plan_cpu_only(*job);
    }
    const std::size_t count = workers_for(*job);
    if (caller_runs && count <= 1 && job->waiter_may_run()) {
        // `Engine::run`: the caller waits for this batch next, and its wait runs every chunk
        // of a batch the plan gives one worker (`JobCore::help`). No worker is sent it, so
        // none is woken for nothing (a futex wake on the caller's path, and a worker that
        // takes the caller's core on a small machine).
        job->open_to_waiter(count);
        return true;
    }
    // Open to the waiter before any send: the job's fields are written before any other
    // thread sees it.
    job->open_to_waiter(count);
    send_to_workers(job, count, true);
    return true;
}

void Scheduler::send_to_devices(const std::shared_ptr<JobCore>& job) noexcept {
    // Every device named by the plan claims chunks from the same cursor as the CPU workers,
    // each within its share.
    for (std::uint64_t devices = job->plan().devices; devices != 0; devices &= devices - 1) {
        const auto d = static_cast<std::size_t>(__builtin_ctzll(devices));
        if (backend_ != nullptr && d < backend_->size()) backend_->run(d, job, job->device_share(d).chunk);
    }
}

void Scheduler::send_to_workers(const std::shared_ptr<JobCore>& job, std::size_t count, bool cpu_only) {
    // Idle workers first (as engage_workers), then round robin; no producer tokens here (each
    // belongs to one thread): moodycamel's implicit per-thread producer queues take the sends.
    // Each submitting thread starts from its own "home" worker, in the idle scan and in the
    // round robin: one submitter keeps finding the same hot worker, and many submitters spread
    // over the workers instead of all sending to the lowest idle one (and sharing one cursor).
    const std::size_t workers = workers_.size();
    static std::atomic<std::size_t> next_home{0};
    thread_local std::size_t home = next_home.fetch_add(1, std::memory_order_relaxed);
    thread_local std::size_t round_robin = home;
    const std::size_t tracked = std::min<std::size_t>(workers, 64);
    const std::size_t start = home % tracked;
    std::uint64_t idle = engine_.idle_mask.load(std::memory_order_acquire);
    if (tracked < 64) idle &= (std::uint64_t{1} << tracked) - 1;
    std::size_t sent = 0;
    // Bits from `start` up, then those below it.
    const std::uint64_t above = start == 0 ? idle : idle & ~((std::uint64_t{1} << start) - 1);
    for (std::uint64_t part : {above, idle & ~above}) {
        for (; part != 0 && sent < count; part &= part - 1) {
            const auto w = static_cast<std::size_t>(__builtin_ctzll(part));
            if (cpu_only && sent == 0 && workers_[w]->actor().parked()) job->set_cold_start();
            workers_[w]->note_sent();
            workers_[w]->actor().send(WorkerMessage{job, {}, true});
            ++sent;
        }
    }
    for (; sent < count; ++sent) {
        const std::size_t w = round_robin++ % workers;
        workers_[w]->note_sent();
        workers_[w]->actor().send(WorkerMessage{job, {}, true});
    }
}

bool Scheduler::decide(const std::shared_ptr<JobCore>& job) {
    if (placement_->devices_possible(*job)) {
        placement_->place(*job);  // throws only for memory: on_exception skips the batch
        return true;
    }
    PlanRecord& plan = job->plan();
    plan.decided = true;
    if (!job->has_cpu()) {
        // A GPU-only op: with devices that all retired, that is a device failure.
        const bool any_device = backend_ != nullptr && backend_->size() > 0;
        job->skip(job->claim_rest(), any_device ? ExecError::DeviceFailed : ExecError::NoImplementation);
        return false;
    }
    placement_->plan_cpu_only(*job);
    return true;
}

void Scheduler::plan(const std::shared_ptr<JobCore>& job) {
    // A fast path only: a device or worker that stops after this check rejects what it is
    // sent, and the rejection skips the work as ShutDown.
    if (stopping_.load(std::memory_order_relaxed)) {
        job->skip(job->claim_rest(), ExecError::ShutDown);
        return;
    }
    // Cancelled before its plan (the cancel's skip, sent from another thread, may come first):
    // there is nothing left to place, and a plan now would queue work nobody takes off.
    if (!job->plan().decided && job->fully_claimed()) return;
    if (!job->plan().decided && !decide(job)) return;
    const PlanRecord& plan = job->plan();
    if (!job->has_cpu() && plan.devices == 0) {
        // Every device retired between the plan and now.
        job->skip(job->claim_rest(), ExecError::DeviceFailed);
        return;
    }
    if (config_.test_hooks.before_dispatch) config_.test_hooks.before_dispatch();
    send_to_devices(job);
    if (plan.cpu_runs) {
        const std::size_t count = workers_for(*job);
        if (plan.devices == 0) job->open_to_waiter(count);  // before any worker sees it
        engage_workers(job, count);
    }
}

}  // namespace tandem::detail
