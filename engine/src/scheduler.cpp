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
    : config_{config}, stopping_{engine_stopping}, workers_{workers} {}

void Scheduler::start(actors::ActorOptions options) {
    tokens_.reserve(workers_.size());
    for (auto& w : workers_) tokens_.push_back(w->actor().make_producer_token());
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
    workers_[w]->note_sent();
    workers_[w]->actor().send(tokens_[w], std::move(message));
}

void Scheduler::engage_workers(const std::shared_ptr<JobCore>& job, std::size_t count) {
    // Idle workers first, lowest index first: the workers that just finished are still
    // spinning (a parked one costs a futex wake, ~15 µs on a 16-core host), and under light
    // load the same few stay hot. One load of the idle mask finds them (a hint: a bit may be
    // stale, which costs balance, never a message). Whatever is left goes round-robin.
    const std::size_t workers = workers_.size();
    std::size_t sent = 0;
    for (std::uint64_t idle = idle_mask_.load(std::memory_order_acquire); idle != 0 && sent < count; idle &= idle - 1) {
        const auto w = static_cast<std::size_t>(__builtin_ctzll(idle));
        if (w >= workers) break;
        send_to_worker(w, WorkerMessage{job, {}});
        ++sent;
    }
    for (; sent < count; ++sent) {
        send_to_worker(next_worker_, WorkerMessage{job, {}});
        next_worker_ = (next_worker_ + 1) % workers;
    }
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

std::shared_ptr<SpeedModel> Scheduler::model_for(const std::string& op_name) {
    auto& model = models_[op_name];
    if (!model) model = std::make_shared<SpeedModel>();
    return model;
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
    std::size_t gpu_devices = 0;
    std::size_t cpu_tasks = n;
    if (backend_ != nullptr && backend_->device_count() > 0 && job->gpu_view().launcher != nullptr) {
        const std::size_t threshold = config_.gpu.threshold_tasks;
        if (n >= threshold || !job->has_cpu()) {
            const std::size_t devices = backend_->size();
            const std::size_t in_size = std::max<std::size_t>(job->gpu_view().in_size, 1);
            std::size_t gpu_chunk = config_.gpu.chunk_bytes / in_size;
            if (config_.gpu.chunk_bytes == 0) {
                // About 32 chunks per device, each between 1 MiB (where a PCIe copy reaches
                // ~45 GB/s) and 8 MiB (~54 GB/s): the pipeline's fill and drain (the first
                // chunk's copy in, the last one's copy out) cost a few percent, and copies run
                // near their best rate (measured, H100 and H200: a balanced 256 MiB batch in
                // 8 MiB chunks beat 4 MiB chunks by ~5%).
                const std::size_t per_device = 32 * std::max<std::size_t>(backend_->device_count(), 1);
                const std::size_t bytes = n * in_size / per_device;
                gpu_chunk = std::clamp<std::size_t>(bytes, std::size_t{1} << 20, std::size_t{8} << 20) / in_size;
            }
            gpu_chunk = std::max<std::size_t>(gpu_chunk, 1);
            for (std::size_t d = 0; d < devices; ++d) {
                if (!backend_->healthy(d)) continue;
                backend_->run(d, job, gpu_chunk);
                gpu_runs = true;
                ++gpu_devices;
            }
        }
    }
    if (!job->has_cpu()) {
        if (!gpu_runs) job->cancel(ExecError::NoImplementation);
        return;
    }
    if (gpu_runs && !config_.gpu.cpu_helps) return;
    if (gpu_runs) {
        // Hybrid: the CPU takes the share that makes both sides finish together, from the
        // op's measured speeds; its chunks are small enough that its last one ends in time.
        auto model = model_for(job->op_name());
        job->set_speed_model(model);
        const double c = model->cpu_rate.load(std::memory_order_relaxed) * static_cast<double>(workers);
        const double g = model->gpu_rate.load(std::memory_order_relaxed) * static_cast<double>(gpu_devices);
        if (c > 0 && g > 0) {
            const auto quota = static_cast<std::size_t>(static_cast<double>(n) * c / (c + g));
            job->set_cpu_quota(quota);
            if (quota == 0) return;
            cpu_tasks = quota;
            // Sixteen chunks per worker: the CPU's last chunk then ends within a few percent of
            // its share's time, and the GPUs do not wait for it.
            if (config_.cpu_chunk == 0) chunk = std::clamp<std::size_t>(quota / (workers * 16), 1, max_cpu_chunk);
        } else if (config_.cpu_chunk == 0) {
            // Not measured yet: both sides claim freely and the split follows their speeds;
            // small CPU chunks keep the CPU's tail short while the model calibrates.
            chunk = std::clamp<std::size_t>(n / (workers * 64), 1, max_cpu_chunk);
        }
        job->set_cpu_chunk(chunk);
    }

    const std::size_t chunks = (cpu_tasks + chunk - 1) / chunk;
    engage_workers(job, std::min(workers, chunks));
}

}  // namespace tandem::detail
