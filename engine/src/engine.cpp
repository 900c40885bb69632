#include <tandem/engine.hpp>

#include "cpu_worker.hpp"
#include "device_backend.hpp"
#include "block_cache.hpp"
#include "scheduler.hpp"

#include <algorithm>
#include <mutex>
#include <thread>

namespace tandem {

struct Engine::Impl {
    explicit Impl(EngineConfig c)
        : config{resolve(std::move(c))}, shared{std::make_shared<detail::EngineShared>()},
          output_cache{std::make_shared<detail::BlockCache<detail::HeapUpstream>>(config.output_cache_bytes,
                                                                                   detail::HeapUpstream{})} {
        const actors::ActorOptions options{64, actors::SpinPolicy{config.idle_spin}};
        scheduler = std::make_unique<detail::Scheduler>(config, stopping, workers);
        if (config.gpu.enabled) gpu = detail::make_gpu_backend(config.gpu, *scheduler, stopping);
        if (config.cpu_workers == 0) {
            // One worker per hardware thread, less one per GPU: each device actor polls its
            // streams on a core of its own.
            const std::size_t hw = std::max(1u, std::thread::hardware_concurrency());
            const std::size_t devices = gpu ? gpu->device_count() : 0;
            config.cpu_workers = hw > devices + 1 ? hw - devices : 1;
        }
        workers.reserve(config.cpu_workers);
        for (std::size_t i = 0; i < config.cpu_workers; ++i) {
            workers.push_back(std::make_unique<detail::CpuWorker>(stopping, scheduler->idle_mask(), i, options));
        }
        scheduler->set_backend(gpu.get());
        scheduler->start(options);
    }

    static EngineConfig resolve(EngineConfig c) {
        // Admission packs both counts into one word (EngineShared): 20 bits of batches, 44 of
        // tasks.
        c.max_batches_in_flight = std::clamp<std::size_t>(c.max_batches_in_flight, 1, (std::size_t{1} << 20) - 2);
        c.max_tasks_in_flight = std::clamp<std::uint64_t>(c.max_tasks_in_flight, 1, detail::EngineShared::task_mask / 2);
        if (c.gpu.streams_per_device == 0) c.gpu.streams_per_device = 1;
        return c;
    }

    /// Reserves room for one batch of `tasks`; an error when closed, too large, or full and
    /// `wait` is false. On success this thread's `entering` stays raised until `enqueue` has
    /// handed the job to the scheduler.
    std::error_code admit(std::uint64_t tasks, bool wait) {
        if (tasks > config.max_tasks_in_flight) return ExecError::TooLarge;
        auto& s = *shared;
        auto& shard = s.mine();
        for (;;) {
            // Announce first, then look at `closed`: shutdown sets `closed` and then waits for
            // every shard's `entering` to drain, so no batch slips in after shutdown has looked.
            shard.entering.fetch_add(1, std::memory_order_seq_cst);
            if (closed.load(std::memory_order_seq_cst)) {
                shard.entering.fetch_sub(1, std::memory_order_release);
                return ExecError::ShutDown;
            }
            const std::uint64_t before = s.inflight.fetch_add(detail::EngineShared::one_batch | tasks,
                                                              std::memory_order_relaxed);
            if (fits(before, tasks)) return {};
            s.inflight.fetch_sub(detail::EngineShared::one_batch | tasks, std::memory_order_relaxed);
            shard.entering.fetch_sub(1, std::memory_order_release);
            s.wake_room_waiters();
            if (!wait) return ExecError::QueueFull;
            wait_for_room(tasks);
        }
    }

    /// One more batch of `tasks` fits beside `inflight`. One batch always fits when nothing
    /// else is in flight, so a large batch cannot wait forever.
    bool fits(std::uint64_t inflight, std::uint64_t tasks) const noexcept {
        const std::uint64_t b = detail::EngineShared::batches_of(inflight);
        const std::uint64_t t = detail::EngineShared::tasks_of(inflight);
        return b < config.max_batches_in_flight && (t == 0 || t + tasks <= config.max_tasks_in_flight);
    }

    void wait_for_room(std::uint64_t tasks) {
        auto& s = *shared;
        s.room_waiters.fetch_add(1, std::memory_order_seq_cst);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        {
            std::unique_lock lock{s.room_mutex};
            s.room_cv.wait(lock, [&] {
                return closed.load(std::memory_order_relaxed) || fits(s.inflight.load(std::memory_order_relaxed), tasks);
            });
        }
        s.room_waiters.fetch_sub(1, std::memory_order_relaxed);
    }

    void shutdown() {
        std::lock_guard once{shutdown_mutex};
        if (done) return;
        closed.store(true, std::memory_order_seq_cst);
        shared->wake_room_waiters();
        // Submitters that passed the `closed` check finish handing their job over.
        while (shared->sum(&detail::EngineShared::Shard::entering, std::memory_order_seq_cst) != 0) {
            std::this_thread::yield();
        }
        stopping.store(true, std::memory_order_seq_cst);
        // Order matters: GPU actors first (their failures still reach the live scheduler),
        // then the scheduler (it skips what it has not planned), then the CPU workers (they
        // skip what they have not started).
        if (gpu) gpu->stop();
        scheduler->stop();
        for (auto& w : workers) w->actor().stop();
        // Every job was in one of those mailboxes or running, so all have completed; wait for
        // any completion still finishing on a user thread (a cancel racing with shutdown).
        auto& s = *shared;
        std::unique_lock lock{s.room_mutex};
        s.room_waiters.fetch_add(1, std::memory_order_seq_cst);
        s.room_cv.wait(lock, [&] { return s.inflight.load(std::memory_order_acquire) == 0; });
        s.room_waiters.fetch_sub(1, std::memory_order_relaxed);
        done = true;
    }

    EngineConfig config;
    std::shared_ptr<detail::EngineShared> shared;
    std::shared_ptr<std::pmr::memory_resource> output_cache;
    std::atomic<bool> closed{false};
    std::atomic<bool> stopping{false};
    std::vector<std::unique_ptr<detail::CpuWorker>> workers;
    std::unique_ptr<detail::Scheduler> scheduler;
    std::unique_ptr<detail::DeviceBackend> gpu;
    std::mutex shutdown_mutex;
    bool done = false;
};

Engine::Engine(EngineConfig config) : impl_{std::make_unique<Impl>(std::move(config))} {}

Engine::~Engine() { shutdown(); }

void Engine::shutdown() { impl_->shutdown(); }

void Engine::enqueue(std::shared_ptr<detail::JobCore> job, Admission admission) {
    const std::uint64_t tasks = job->size();
    if (auto ec = impl_->admit(tasks, admission == Admission::Wait)) {
        job->fail(ec);
        return;
    }
    auto& shard = impl_->shared->mine();
    shard.batches_submitted.fetch_add(1, std::memory_order_relaxed);
    job->attach(impl_->shared);
    impl_->scheduler->send(std::move(job));
    shard.entering.fetch_sub(1, std::memory_order_release);
}

std::size_t Engine::cpu_workers() const noexcept { return impl_->workers.size(); }

std::size_t Engine::gpu_count() const noexcept { return impl_->gpu ? impl_->gpu->device_count() : 0; }

std::vector<DeviceInfo> Engine::gpus() const {
    return impl_->gpu ? impl_->gpu->devices() : std::vector<DeviceInfo>{};
}

EngineMetrics Engine::metrics() const {
    const auto& s = *impl_->shared;
    EngineMetrics m;
    using Shard = detail::EngineShared::Shard;
    m.batches_submitted = s.sum(&Shard::batches_submitted);
    m.batches_completed = s.sum(&Shard::batches_completed);
    m.batches_failed = s.batches_failed.load(std::memory_order_relaxed);
    const std::uint64_t inflight = s.inflight.load(std::memory_order_relaxed);
    m.batches_in_flight = detail::EngineShared::batches_of(inflight);
    m.tasks_in_flight = detail::EngineShared::tasks_of(inflight);
    m.tasks_completed = s.sum(&Shard::tasks_completed);
    m.cpu_tasks = s.sum(&Shard::cpu_tasks);
    m.gpu_tasks = s.sum(&Shard::gpu_tasks);
    m.cpu_fallback_count = s.cpu_fallback_count.load(std::memory_order_relaxed);
    m.task_failures = s.task_failures.load(std::memory_order_relaxed);
    m.tasks_skipped = s.tasks_skipped.load(std::memory_order_relaxed);
    m.cpu_workers = impl_->workers.size();
    m.gpu_devices = gpu_count();
    return m;
}

std::pmr::memory_resource* Engine::pinned_memory() noexcept {
    return impl_->gpu ? impl_->gpu->pinned_memory().get() : std::pmr::new_delete_resource();
}

std::shared_ptr<std::pmr::memory_resource> Engine::output_memory_for(std::pmr::memory_resource* payload_memory,
                                                                     std::size_t bytes, bool gpu_op) const {
    if (gpu_op && impl_->gpu && impl_->gpu->device_count() != 0) {
        auto pinned = impl_->gpu->pinned_memory();
        if (payload_memory == pinned.get()) return pinned;
    }
    // Small outputs stay with malloc (its per-thread caches beat a shared lock).
    if (bytes < (std::size_t{64} << 10) || impl_->config.output_cache_bytes == 0) return nullptr;
    return impl_->output_cache;
}

std::vector<GpuChunkTrace> Engine::gpu_trace() const {
    return impl_->gpu ? impl_->gpu->trace() : std::vector<GpuChunkTrace>{};
}

const EngineConfig& Engine::config() const noexcept { return impl_->config; }

}  // namespace tandem
