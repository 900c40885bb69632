#include <tandem/engine.hpp>

#include <tandem/detail/thread_share.hpp>

#include "block_cache.hpp"
#include "config_check.hpp"
#include "cpu_worker.hpp"
#include "device_backend.hpp"
#include "engine_shared.hpp"
#include "scheduler.hpp"

#include <algorithm>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace tandem {

struct Engine::Impl {
    explicit Impl(EngineConfig c)
        : config{checked(std::move(c))}, saved_models{detail::Placement::read(config.gpu.model.file)},
          shared{std::make_shared<detail::EngineShared>()},
          output_cache{std::make_shared<detail::BlockCache<detail::HeapUpstream>>(config.output_cache_bytes,
                                                                                   detail::HeapUpstream{})} {
        shared->on_continuation_error = config.on_continuation_error;
        shared->record_histograms = config.record_histograms;
        if (config.trace.enabled) {
            shared->trace = std::make_unique<detail::TraceRing>(config.trace.capacity, std::chrono::steady_clock::now());
        }
        const actors::ActorOptions options{64, actors::SpinPolicy{config.idle_spin}};
        scheduler = std::make_unique<detail::Scheduler>(config, *shared, stopping, workers);
        shared->offload = scheduler.get();
        const detail::BackendContext context{config.gpu, *scheduler, stopping, shared.get()};
        if (!config.gpu.simulated.empty()) {
            gpu = detail::make_simulated_backend(context);  // asked for: used even where a GPU is
        } else if (config.gpu.enabled) {
            gpu = detail::make_gpu_backend(context);
        }
        if (gpu) {  // before any job runs: chunks count into them
            shared->devices = std::make_unique<detail::EngineShared::DeviceCounters[]>(gpu->size());
            shared->device_count = gpu->size();
        }
        if (config.cpu_workers == 0) {
            // One worker per hardware thread, less one per device: each device actor polls its
            // streams on a core of its own.
            const std::size_t hw = std::max(1u, std::thread::hardware_concurrency());
            const std::size_t devices = gpu ? gpu->device_count() : 0;
            config.cpu_workers = std::min(hw > devices + 1 ? hw - devices : 1, detail::max_cpu_workers);
        }
        shared->workers = config.cpu_workers;
        workers.reserve(config.cpu_workers);
        for (std::size_t i = 0; i < config.cpu_workers; ++i) {
            workers.push_back(
                std::make_unique<detail::CpuWorker>(shared.get(), stopping, scheduler->idle_mask(), i,
                                                    config.worker_priority, options));
        }
        shared->simulate_cpu_cost = config.test_hooks.simulate_cpu_cost;
        shared->cpu_fixed_cost = config.test_hooks.cpu_fixed_cost;
        shared->cpu_per_task = config.test_hooks.cpu_per_task;
        scheduler->set_backend(gpu.get());
        scheduler->placement().restore(saved_models);
        saved_models.clear();
        scheduler->start(options);
    }

    ~Impl() {
        // Batches built in `pinned_memory()` hold a raw pointer to it and may outlive us: the
        // resource stays (its cached blocks are freed now), and so do its live blocks.
        if (gpu) gpu->orphan_memory();
    }

    static EngineConfig checked(EngineConfig c) {
        detail::validate(c);
        return c;
    }

    /// True on one of this engine's threads (an actor, or inside a completion it runs).
    bool on_own_thread() const noexcept { return detail::current_engine() == shared.get(); }

    /// Reserves room for one batch of `tasks`; an error when closed, too large, or full and
    /// `wait` is false. On success this thread's `entering` stays raised until `enqueue` has
    /// handed the job to the scheduler.
    std::error_code admit(std::uint64_t tasks, bool wait) {
        if (tasks > config.max_tasks_in_flight) return ExecError::TooLarge;
        // An engine thread never waits for room (it could be the thread that makes room).
        const bool engine_thread = detail::current_engine() != nullptr;
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
            if (fits(before, tasks) || (engine_thread && fits_hard(before))) return {};
            s.inflight.fetch_sub(detail::EngineShared::one_batch | tasks, std::memory_order_relaxed);
            shard.entering.fetch_sub(1, std::memory_order_release);
            // Backing off frees nothing that was there before this attempt: blocked submitters
            // are told (their fits() may have seen our transient add), asynchronous waiters
            // are not (each would retry, fail and wake the next: a storm while the engine is
            // full).
            s.room.notify();
            if (!wait || engine_thread) return ExecError::QueueFull;
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

    /// Within the packed word's hard limits (admission over the configured limit, from an
    /// engine thread): the 20-bit batch field keeps 4096 batches of headroom for submitters
    /// that overshoot for an instant, and the 44-bit task field one half of its range.
    static bool fits_hard(std::uint64_t inflight) noexcept {
        return detail::EngineShared::batches_of(inflight) < detail::EngineShared::max_batches &&
               detail::EngineShared::tasks_of(inflight) < (std::uint64_t{1} << 43);
    }

    void wait_for_room(std::uint64_t tasks) {
        auto& s = *shared;
        s.room.wait(
            [&] {
                return closed.load(std::memory_order_relaxed) ||
                       fits(s.inflight.load(std::memory_order_relaxed), tasks);
            },
            actors::SpinPolicy{std::chrono::nanoseconds{0}});
    }

    /// Shutdown from a user's thread: the whole of it, or waiting for the one already under
    /// way (on another user's thread, or on the helper an engine thread started).
    void shutdown() {
        std::unique_lock lock{state_mutex};
        if (state == State::Running) {
            state = State::Closing;
            lock.unlock();
            close();
            finish();
            lock.lock();
            state = State::Done;
            state_cv.notify_all();
            return;
        }
        state_cv.wait(lock, [&] { return state == State::Done; });
        if (finisher.joinable()) finisher.join();
    }

    /// Shutdown from one of the engine's own threads: it cannot join itself, nor wait for the
    /// batch whose continuation it is running. It closes admission and leaves the rest to a
    /// helper thread. Never blocks: `state_mutex` is only ever held for a few instructions
    /// (never across `finish()`), so this works even on a thread that a shutdown is joining.
    void shutdown_from_own_thread() {
        closed.store(true, std::memory_order_seq_cst);
        shared->wake_room_waiters();
        std::lock_guard lock{state_mutex};
        if (state != State::Running) return;
        state = State::Closing;
        try {
            finisher = std::thread{[this] {
                detail::restore_normal_priority();  // not the priority of the worker that asked
                close();
                finish();
                std::lock_guard done_lock{state_mutex};
                state = State::Done;
                state_cv.notify_all();
            }};
        } catch (...) {
            // No thread to be had: admission stays closed (submits fail with ShutDown), and a
            // later shutdown() or the destructor on a user's thread finishes the job.
            state = State::Running;
        }
    }

    /// Closes admission and tells every actor that shutdown began.
    void close() {
        closed.store(true, std::memory_order_seq_cst);
        shared->wake_room_waiters();
        shared->run_room_waiters(true);  // asynchronous waiters complete with ShutDown
        // Submitters that passed the `closed` check finish handing their job over.
        while (shared->sum(&detail::EngineShared::Shard::entering, std::memory_order_seq_cst) != 0) {
            std::this_thread::yield();
        }
        stopping.store(true, std::memory_order_seq_cst);
    }

    /// Stops the actors and waits until every batch has completed.
    void finish() {
        // Order: devices first (their failures still reach the live scheduler, which skips
        // them), then the scheduler (it skips what it has not planned), then the CPU workers
        // (they skip what they have not started). An actor that has stopped rejects what it is
        // sent later, and the rejection skips the work as ShutDown.
        if (gpu) gpu->stop();
        if (config.test_hooks.after_devices_stopped) config.test_hooks.after_devices_stopped();
        scheduler->stop();
        for (auto& w : workers) w->actor().stop();
        // Every job has now completed or is completing on some thread (a continuation still
        // running, a cancel skipping on the thread of a stopped scheduler's caller): a job
        // leaves `inflight` only when its completion is over.
        // Then for cancels still inside the scheduler's mailbox (their skip may have completed
        // the batch already): after this, nothing outside the engine touches its actors.
        auto& s = *shared;
        s.room.wait(
            [&] {
                return s.inflight.load(std::memory_order_acquire) == 0 &&
                       s.offloading.load(std::memory_order_seq_cst) == 0;
            },
            actors::SpinPolicy{std::chrono::nanoseconds{0}});
        if (!config.gpu.model.file.empty()) {
            try {
                scheduler->placement().save(config.gpu.model.file);
            } catch (...) {
                // Nobody to tell at shutdown: `Engine::save_models` reports the same failure.
            }
        }
    }

    EngineConfig config;
    std::vector<detail::Placement::Record> saved_models;  // read before any thread starts
    std::shared_ptr<detail::EngineShared> shared;
    std::shared_ptr<std::pmr::memory_resource> output_cache;
    std::atomic<bool> closed{false};
    std::atomic<bool>& stopping = shared->stopping;  // declared after `shared`
    std::vector<std::unique_ptr<detail::CpuWorker>> workers;
    std::unique_ptr<detail::Scheduler> scheduler;
    std::unique_ptr<detail::DeviceBackend> gpu;
    enum class State { Running, Closing, Done };
    std::mutex state_mutex;  // guards state and finisher; never held while waiting on the engine
    std::condition_variable state_cv;
    State state = State::Running;
    std::thread finisher;  // finishes a shutdown begun on an engine thread
};

Engine::Engine(EngineConfig config) : impl_{std::make_unique<Impl>(std::move(config))} {}

Engine::~Engine() {
    if (!impl_->on_own_thread()) {
        impl_->shutdown();
        return;
    }
    // Destroyed from one of its own threads (a continuation): that thread cannot be joined
    // from here. A detached helper shuts the engine down (joining this thread once it is back
    // in its actor's loop) and then frees it.
    Impl* impl = impl_.release();
    try {
        std::thread{[impl] {
            detail::restore_normal_priority();
            impl->shutdown();
            delete impl;
        }}.detach();
    } catch (...) {
        impl->shutdown_from_own_thread();  // no thread: close it at least, and leak it
        detail::keep_until_exit(std::shared_ptr<Impl>{impl, [](Impl*) {}});
    }
}

void Engine::shutdown() {
    if (impl_->on_own_thread()) {
        impl_->shutdown_from_own_thread();
    } else {
        impl_->shutdown();
    }
}

void Engine::enqueue(std::shared_ptr<detail::JobCore> job, Admission admission) {
    if (auto ec = impl_->admit(job->size(), admission != Admission::Try)) {
        job->fail(ec);
        return;
    }
    hand_over(std::move(job), admission == Admission::CallerRuns);
}

std::error_code Engine::admit_now(std::uint64_t tasks) { return impl_->admit(tasks, false); }

void Engine::unadmit(std::uint64_t tasks) noexcept {
    auto& s = *impl_->shared;
    s.inflight.fetch_sub(detail::EngineShared::one_batch | tasks, std::memory_order_release);
    s.mine().entering.fetch_sub(1, std::memory_order_release);
    s.wake_room_waiters();
}

void Engine::hand_over(std::shared_ptr<detail::JobCore> job, bool caller_runs) noexcept {
    auto& shard = impl_->shared->mine();
    shard.batches_submitted.fetch_add(1, std::memory_order_relaxed);
    // Through this thread's own count of the shared state (see thread_share.hpp); the
    // engine's own count if no memory is left for that.
    std::shared_ptr<detail::EngineShared> shared;
    try {
        shared = detail::thread_share(impl_->shared);
    } catch (...) {
        shared = impl_->shared;
    }
    job->attach(std::move(shared));
    // Planned here and sent straight to the workers and devices the plan names; through the
    // scheduler only when that cannot be done here (see `dispatch_directly`). Never lost
    // either way: a rejected message skips its work with the reason.
    if (!impl_->scheduler->dispatch_directly(job, caller_runs)) impl_->scheduler->send(std::move(job));
    shard.entering.fetch_sub(1, std::memory_order_release);
}

void Engine::when_room(std::uint64_t tasks, std::shared_ptr<RoomWaiter> waiter) {
    auto& s = *impl_->shared;
    s.add_room_waiter(std::move(waiter));
    // Room may have freed (or the engine closed) before the waiter was registered.
    const bool closed = impl_->closed.load(std::memory_order_seq_cst);
    if (closed || impl_->fits(s.inflight.load(std::memory_order_seq_cst), tasks)) s.run_room_waiters(closed);
}

bool Engine::has_room(std::uint64_t tasks) const noexcept {
    return impl_->fits(impl_->shared->inflight.load(std::memory_order_relaxed), tasks);
}

std::size_t Engine::cpu_workers() const noexcept { return impl_->workers.size(); }

std::size_t Engine::gpu_count() const noexcept { return impl_->gpu ? impl_->gpu->device_count() : 0; }

bool Engine::had_devices() const noexcept { return impl_->gpu && impl_->gpu->size() != 0; }

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
    for (std::size_t r = 0; r < m.cpu_fallbacks.size(); ++r) {
        m.cpu_fallbacks[r] = s.cpu_fallbacks[r].load(std::memory_order_relaxed);
        m.cpu_fallback_count += m.cpu_fallbacks[r];
    }
    m.task_failures = s.task_failures.load(std::memory_order_relaxed);
    m.tasks_skipped = s.tasks_skipped.load(std::memory_order_relaxed);
    m.continuation_failures = s.continuation_failures.load(std::memory_order_relaxed);
    m.batches_abandoned = s.batches_abandoned.load(std::memory_order_relaxed);
    m.cpu_workers = impl_->workers.size();
    m.gpu_devices = gpu_count();

    m.histograms = s.record_histograms;
    if (m.histograms) {
        for (const auto& h : s.histograms) {
            for (std::size_t k = 0; k < m.batch_duration.size(); ++k) h.batch_duration[k].add_to(m.batch_duration[k]);
            h.queue_wait.add_to(m.queue_wait);
        }
    }
    if (const auto& gpu = impl_->gpu) {
        const std::vector<DeviceInfo> infos = gpu->devices();
        for (std::size_t d = 0; d < infos.size() && d < s.device_count; ++d) {
            const detail::EngineShared::DeviceCounters& c = s.devices[d];
            const detail::DeviceUsage u = gpu->usage(d);
            DeviceMetrics dm;
            dm.index = infos[d].index;
            dm.name = infos[d].name;
            dm.healthy = infos[d].healthy;
            dm.tasks = c.tasks.load(std::memory_order_relaxed);
            dm.chunks = c.chunks.load(std::memory_order_relaxed);
            dm.bytes_h2d = c.bytes_h2d.load(std::memory_order_relaxed);
            dm.bytes_d2h = c.bytes_d2h.load(std::memory_order_relaxed);
            dm.busy_seconds = std::chrono::duration<double>(u.busy).count();
            dm.utilization = u.utilization;
            dm.pinned_pool_used = u.pinned_pool_used;
            dm.pinned_pool_capacity = u.pinned_pool_capacity;
            dm.device_pool_used = u.device_pool_used;
            dm.device_pool_capacity = u.device_pool_capacity;
            if (m.histograms) {
                c.chunk_duration.add_to(dm.chunk_duration);
                for (std::size_t k = 0; k < dm.stage_duration.size(); ++k) c.stage_duration[k].add_to(dm.stage_duration[k]);
            }
            m.devices.push_back(std::move(dm));
        }
    }
    m.ops = op_models();
    return m;
}

std::pmr::memory_resource* Engine::pinned_memory() noexcept {
    return impl_->gpu ? impl_->gpu->pinned_memory().get() : heap_memory();
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

std::shared_ptr<std::pmr::memory_resource> Engine::output_memory(std::size_t bytes, bool gpu_op) const {
    if (gpu_op && bytes >= (std::size_t{64} << 10) && impl_->gpu && impl_->gpu->device_count() != 0) {
        return impl_->gpu->pinned_memory();
    }
    return output_memory_for(nullptr, bytes, false);
}

std::vector<GpuChunkTrace> Engine::gpu_trace() const {
    return impl_->gpu ? impl_->gpu->trace() : std::vector<GpuChunkTrace>{};
}

void Engine::write_trace(std::ostream& out) const {
    detail::TraceLayout layout;
    layout.cpu_workers = impl_->workers.size();
    if (impl_->gpu) {
        for (const DeviceInfo& d : impl_->gpu->devices()) layout.devices.push_back(d.name);
    }
    detail::write_trace_json(out, impl_->shared->trace.get(), layout);
}

std::string Engine::trace_json() const {
    std::ostringstream out;
    write_trace(out);
    return std::move(out).str();
}

void Engine::save_trace(const std::string& path) const {
    std::ofstream out{path, std::ios::binary | std::ios::trunc};
    if (out) write_trace(out);
    out.flush();
    if (!out) throw std::runtime_error("tandem::Engine::save_trace: cannot write " + path);
}

const EngineConfig& Engine::config() const noexcept { return impl_->config; }

std::vector<OpModelInfo> Engine::op_models() const { return impl_->scheduler->placement().models(); }

void Engine::save_models(const std::string& path) const { impl_->scheduler->placement().save(path); }

}  // namespace tandem
