#include "scheduler.hpp"

#include <algorithm>
#include <new>

namespace tandem::detail {
namespace {

/// Largest CPU chunk: 64 Ki tasks keeps a trivial map's chunk (in + out) inside L2, and a
/// claim (one atomic add on a shared line) per chunk costs nothing next to its work.
constexpr std::size_t max_cpu_chunk = std::size_t{1} << 16;

/// Chunks per worker a batch is cut into at least: enough that a slow worker's last chunk
/// does not leave the others idle for long.
constexpr std::size_t chunks_per_worker = 8;

/// ceil(a / b) without the overflow of (a + b - 1) / b; b > 0.
constexpr std::size_t div_up(std::size_t a, std::size_t b) noexcept { return a / b + (a % b != 0); }

}  // namespace

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
    // Spread the range over the workers in CPU-sized pieces.
    const std::size_t chunk = job->cpu_chunk();
    for (std::size_t b = range.begin; b < range.end;) {
        const std::size_t e = b + std::min(chunk, range.end - b);
        send_to_worker(next_worker_, WorkerMessage{job, Range{b, e}, false});
        next_worker_ = (next_worker_ + 1) % workers_.size();
        b = e;
    }
}

std::shared_ptr<SpeedModel> Scheduler::model_for(const std::string& op_name) {
    auto& model = models_[op_name];
    if (!model) model = std::make_shared<SpeedModel>();
    return model;
}

std::size_t Scheduler::cpu_chunk_for(std::size_t n) const noexcept {
    if (config_.cpu_chunk != 0) return config_.cpu_chunk;
    return std::clamp<std::size_t>(n / (workers_.size() * chunks_per_worker), 1, max_cpu_chunk);
}

bool Scheduler::dispatch_directly(const std::shared_ptr<JobCore>& job) {
    // The hooks that hold or fail the scheduler's own path keep every batch on it.
    if (config_.test_hooks.before_dispatch || config_.test_hooks.fail_scheduler_sends != 0) return false;
    if (!job->has_cpu()) return false;
    const std::size_t n = job->size();
    if (backend_ != nullptr && backend_->device_count() > 0 && n >= config_.gpu.threshold_tasks &&
        job->gpu_view().launcher != nullptr) {
        return false;  // a device may take it: plan it
    }
    const std::size_t chunk = cpu_chunk_for(n);
    job->set_cpu_chunk(chunk);  // the job is not visible to any other thread yet
    const std::size_t count = std::min(workers_.size(), div_up(n, chunk));
    // Idle workers first (as engage_workers), then round robin; no producer tokens here (each
    // belongs to one thread): moodycamel's implicit per-thread producer queues take the sends.
    const std::size_t workers = workers_.size();
    std::size_t sent = 0;
    for (std::uint64_t idle = engine_.idle_mask.load(std::memory_order_acquire); idle != 0 && sent < count; idle &= idle - 1) {
        const auto w = static_cast<std::size_t>(__builtin_ctzll(idle));
        if (w >= workers) break;
        workers_[w]->note_sent();
        workers_[w]->actor().send(WorkerMessage{job, {}, true});
        ++sent;
    }
    for (; sent < count; ++sent) {
        const std::size_t w = direct_next_worker_.fetch_add(1, std::memory_order_relaxed) % workers;
        workers_[w]->note_sent();
        workers_[w]->actor().send(WorkerMessage{job, {}, true});
    }
    return true;
}

void Scheduler::plan(const std::shared_ptr<JobCore>& job) {
    // A fast path only: a device or worker that stops after this check rejects what it is
    // sent, and the rejection skips the work as ShutDown.
    if (stopping_.load(std::memory_order_relaxed)) {
        job->skip(job->claim_rest(), ExecError::ShutDown);
        return;
    }
    const std::size_t n = job->size();
    const std::size_t workers = workers_.size();

    std::size_t chunk = cpu_chunk_for(n);
    job->set_cpu_chunk(chunk);

    // Which devices take part. Every healthy device's actor claims large chunks from the same
    // cursor as the CPU workers, so each side takes work in proportion to its speed.
    std::vector<std::size_t> devices;
    std::size_t gpu_chunk = 0;
    const GpuView view = job->gpu_view();
    const bool any_device = backend_ != nullptr && backend_->size() > 0;
    if (any_device && backend_->device_count() > 0 && view.launcher != nullptr &&
        (n >= config_.gpu.threshold_tasks || !job->has_cpu())) {
        const std::size_t in_size = std::max<std::size_t>(view.in_size, 1);
        if (config_.gpu.chunk_bytes != 0) {
            gpu_chunk = config_.gpu.chunk_bytes / in_size;
        } else {
            // About 32 chunks per device, each between 1 MiB (where a PCIe copy reaches
            // ~45 GB/s) and 8 MiB (~54 GB/s): the pipeline's fill and drain (the first chunk's
            // copy in, the last one's copy out) cost a few percent, and copies run near their
            // best rate (measured, H100 and H200: a balanced 256 MiB batch in 8 MiB chunks
            // beat 4 MiB chunks by ~5%). n * in_size cannot overflow: n < 2^44, in_size is a
            // type's size.
            const std::size_t per_device = 32 * std::max<std::size_t>(backend_->device_count(), 1);
            const std::size_t bytes = n / per_device * in_size;
            gpu_chunk = std::clamp<std::size_t>(bytes, std::size_t{1} << 20, std::size_t{8} << 20) / in_size;
        }
        gpu_chunk = std::max<std::size_t>(gpu_chunk, 1);
        for (std::size_t d = 0; d < backend_->size(); ++d) {
            if (backend_->healthy(d)) devices.push_back(d);
        }
    }
    if (!job->has_cpu() && devices.empty()) {
        // A GPU-only op: with devices that all retired, that is a device failure.
        job->skip(job->claim_rest(), any_device ? ExecError::DeviceFailed : ExecError::NoImplementation);
        return;
    }

    std::size_t cpu_tasks = n;
    bool cpu_runs = job->has_cpu() && (devices.empty() || config_.gpu.cpu_helps);
    if (!devices.empty() && cpu_runs) {
        // Hybrid: the CPU takes the share that makes both sides finish together, from the
        // op's measured speeds; its chunks are small enough that its last one ends in time.
        // The model is attached before any device sees the job: the completing thread reads it.
        auto model = model_for(job->op_name());
        job->set_observer(model);
        const double c = model->cpu_rate.load(std::memory_order_relaxed) * static_cast<double>(workers);
        const double g = model->gpu_rate.load(std::memory_order_relaxed) * static_cast<double>(devices.size());
        if (c > 0 && g > 0) {
            const auto quota = static_cast<std::size_t>(static_cast<double>(n) * c / (c + g));
            job->set_cpu_quota(quota);
            cpu_tasks = quota;
            cpu_runs = quota != 0;
            // Sixteen chunks per worker: the CPU's last chunk then ends within a few percent of
            // its share's time, and the devices do not wait for it.
            if (config_.cpu_chunk == 0) chunk = std::clamp<std::size_t>(quota / (workers * 16), 1, max_cpu_chunk);
        } else if (config_.cpu_chunk == 0) {
            // Not measured yet: both sides claim freely and the split follows their speeds;
            // small CPU chunks keep the CPU's tail short while the model calibrates.
            chunk = std::clamp<std::size_t>(n / (workers * 64), 1, max_cpu_chunk);
        }
        job->set_cpu_chunk(chunk);
    }

    if (config_.test_hooks.before_dispatch) config_.test_hooks.before_dispatch();
    for (std::size_t d : devices) backend_->run(d, job, gpu_chunk);
    if (cpu_runs) engage_workers(job, std::min(workers, div_up(cpu_tasks, job->cpu_chunk())));
}

}  // namespace tandem::detail
