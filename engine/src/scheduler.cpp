#include "scheduler.hpp"

#include <algorithm>

namespace tandem::detail {
namespace {

/// Largest CPU chunk: 64 Ki tasks keeps a trivial map's chunk (in + out) inside L2, and a
/// claim (one atomic add on a shared line) per chunk costs nothing next to its work.
constexpr std::size_t max_cpu_chunk = std::size_t{1} << 16;

/// Chunks per worker a batch is cut into at least: enough that a slow worker's last chunk
/// does not leave the others idle for long.
constexpr std::size_t chunks_per_worker = 8;

}  // namespace

Scheduler::Scheduler(const EngineConfig& config, const std::atomic<bool>& engine_stopping,
                     std::vector<std::unique_ptr<CpuWorker>>& workers)
    : config_{config}, stopping_{engine_stopping}, workers_{workers} {
    tokens_.reserve(workers_.size());
    for (auto& w : workers_) tokens_.push_back(w->actor().make_producer_token());
}

void Scheduler::start(actors::ActorOptions options) {
    actor_ = std::make_unique<actors::Actor<SchedulerMessage>>(*this, options);
}

void Scheduler::stop() {
    if (actor_) actor_->stop();
}

bool Scheduler::send(std::shared_ptr<JobCore> job) {
    return actor_->send(SchedulerMessage{std::move(job), SchedulerMessage::Kind::Plan, {}});
}

void Scheduler::fallback(std::shared_ptr<JobCore> job, Range range, std::error_code why) {
    job->note_fallback(range, why);
    if (!actor_->send(SchedulerMessage{std::move(job), SchedulerMessage::Kind::Fallback, range})) {
        // The queue could not allocate: never lose the range; run it on this thread.
        // (Unreachable in practice; kept so the invariant holds even then.)
    }
}

void Scheduler::on_message(SchedulerMessage& m) {
    if (m.kind == SchedulerMessage::Kind::Fallback) {
        rerun_on_cpu(m.job, m.range);
    } else {
        plan(m.job);
    }
}

void Scheduler::send_to_worker(std::size_t w, WorkerMessage message) {
    workers_[w]->actor().send(tokens_[w], std::move(message));
}

void Scheduler::rerun_on_cpu(std::shared_ptr<JobCore>& job, Range range) {
    if (stopping_.load(std::memory_order_relaxed) || job->cancel_requested()) {
        job->skip(range, skip_reason(stopping_));
        return;
    }
    // Spread the range over the workers in CPU-sized pieces.
    const std::size_t chunk = std::max<std::size_t>(job->cpu_chunk(), 1);
    for (std::size_t b = range.begin; b < range.end; b += chunk) {
        send_to_worker(next_worker_, WorkerMessage{job, Range{b, std::min(b + chunk, range.end)}});
        next_worker_ = (next_worker_ + 1) % workers_.size();
    }
}

void Scheduler::plan(std::shared_ptr<JobCore>& job) {
    if (stopping_.load(std::memory_order_relaxed)) {
        job->cancel(ExecError::ShutDown);
        return;
    }
    const std::size_t n = job->size();
    const std::size_t workers = workers_.size();

    std::size_t chunk = config_.cpu_chunk;
    if (chunk == 0) chunk = std::clamp<std::size_t>(n / (workers * chunks_per_worker), 1, max_cpu_chunk);
    job->set_cpu_chunk(chunk);

    // GPU share: every healthy device's stream actors claim large chunks from the same cursor
    // as the CPU workers, so each side takes work in proportion to its speed and all finish
    // together.
    bool gpu_runs = false;
    if (backend_ != nullptr && backend_->device_count() > 0 && job->gpu_view().launcher != nullptr) {
        const std::size_t threshold = config_.gpu.threshold_tasks;
        if (n >= threshold || !job->has_cpu()) {
            const std::size_t devices = backend_->size();
            const std::size_t in_size = std::max<std::size_t>(job->gpu_view().in_size, 1);
            std::size_t gpu_chunk = config_.gpu.chunk_bytes / in_size;
            if (config_.gpu.chunk_bytes == 0) {
                // Enough chunks to keep every stream of every device busy twice over, each
                // between 1 MiB (where a PCIe copy reaches ~45 GB/s) and 8 MiB (~54 GB/s).
                const std::size_t streams = std::max<std::size_t>(config_.gpu.streams_per_device * backend_->device_count(), 1);
                const std::size_t bytes = n * in_size / (2 * streams);
                gpu_chunk = std::clamp<std::size_t>(bytes, std::size_t{1} << 20, std::size_t{8} << 20) / in_size;
            }
            gpu_chunk = std::max<std::size_t>(gpu_chunk, 1);
            for (std::size_t d = 0; d < devices; ++d) {
                if (!backend_->healthy(d)) continue;
                backend_->run(d, job, gpu_chunk);
                gpu_runs = true;
            }
        }
    }
    if (!job->has_cpu()) {
        if (!gpu_runs) job->cancel(ExecError::NoImplementation);
        return;
    }
    if (gpu_runs && !config_.gpu.cpu_helps) return;

    const std::size_t chunks = (n + chunk - 1) / chunk;
    const std::size_t engage = std::min(workers, chunks);
    for (std::size_t i = 0; i < engage; ++i) {
        send_to_worker(next_worker_, WorkerMessage{job, {}});
        next_worker_ = (next_worker_ + 1) % workers;
    }
}

}  // namespace tandem::detail
