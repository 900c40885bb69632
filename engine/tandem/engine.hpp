#pragma once
/// \file
/// The engine: a scheduler actor, CPU-worker actors and (when built with CUDA and a device is
/// present) GPU-stream actors. `submit` hands it a batch and returns a future at once.

#include <tandem/config.hpp>
#include <tandem/detail/job.hpp>
#include <tandem/detail/job_memory.hpp>
#include <tandem/error.hpp>
#include <tandem/future.hpp>
#include <tandem/metrics.hpp>
#include <tandem/op.hpp>
#include <tandem/task.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <memory_resource>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace tandem {

/// A GPU the engine found.
struct DeviceInfo {
    int index = 0;
    std::string name;
    int multiprocessors = 0;
    std::size_t memory_bytes = 0;
    int compute_major = 0;
    int compute_minor = 0;
    /// False once the engine retired the device after a failure.
    bool healthy = true;
};

/// What the engine has learned about one op on one device (see `Engine::op_models`).
struct CostModelInfo {
    /// "cpu", or the device's index and name ("gpu 0: NVIDIA H200").
    std::string device;
    /// Devices: the line for payloads in page-locked memory (else pageable).
    bool pinned = false;
    /// The learned curve: (cost, nanoseconds) points, one per power-of-two size class that
    /// has samples, joined by straight lines. A size is a cost (`Task::est_cost` summed, 0
    /// counted as 1): the task count when every task costs 1. On a device, its busy time for
    /// the batch's share; on the CPU, worker time summed over the workers (divide by their
    /// number).
    std::vector<std::pair<double, double>> points;
    /// In short: the intercept of the curve's first segment (the fixed cost of a batch), and
    /// the slope of its last (the time of one more cost unit, a task of cost 1, in a large
    /// batch).
    double fixed_ns = 0;
    double per_task_ns = 0;
    /// Devices: how long after the plan hands a batch over its share starts on this device
    /// when nothing is queued there (its actor waking up), learned from every op's batches
    /// (the same in each op's lines); placement adds it to the curve. 0 on the CPU's line.
    double start_delay_ns = 0;
    /// Samples taken, samples rejected as outliers, and whether placement trusts the line.
    std::uint64_t samples = 0;
    std::uint64_t outliers = 0;
    bool calibrated = false;
};

/// One op's performance models.
struct OpModelInfo {
    std::string op;
    std::vector<CostModelInfo> costs;
    /// The learned GPU threshold: the smallest batch the devices would take a share of on an
    /// idle engine, for pageable and for page-locked payloads, as a cost (tasks when every
    /// task costs 1). 0: not calibrated yet; the size_t maximum: never (the CPU alone is faster
    /// at every size).
    std::size_t threshold_pageable = 0;
    std::size_t threshold_pinned = 0;
    /// How much longer the CPU workers take for a batch spread over all of them than its
    /// tasks' time divided among them, as placement counts it (1: not learned, or
    /// `ModelConfig::learn_cpu_stretch` off).
    double cpu_stretch = 1;
};

/// When one GPU chunk's stages ran, in milliseconds since its device's actor started
/// (CUDA event times; comparable within one device).
struct GpuChunkTrace {
    int device = 0;
    int stream = 0;
    std::size_t first_task = 0;
    std::size_t tasks = 0;
    float h2d_start = 0, h2d_end = 0, kernel_end = 0, d2h_end = 0;
    /// Host steady-clock times (ns since its epoch): when the actor issued the chunk and when
    /// it saw the chunk complete.
    std::int64_t host_issued_ns = 0, host_seen_ns = 0;
    /// Before that: when the plan handed the batch to its devices (its submission, for a plan
    /// made without a device), when this device's actor took the batch off its mailbox, and
    /// when it began the chunk (before its buffers and any pack into staging memory).
    std::int64_t host_handed_ns = 0, host_received_ns = 0, host_began_ns = 0;
};

/// Counters since start, per device figures, latency histograms and the learned models (a
/// snapshot; `to_prometheus` renders it).
struct EngineMetrics {
    std::uint64_t batches_submitted = 0;
    std::uint64_t batches_completed = 0;
    std::uint64_t batches_failed = 0;
    /// Batches admitted whose completion is not over yet (a batch leaves this count just
    /// after its future becomes ready and its continuation has run).
    std::uint64_t batches_in_flight = 0;
    std::uint64_t tasks_in_flight = 0;
    std::uint64_t tasks_completed = 0;
    std::uint64_t cpu_tasks = 0;
    std::uint64_t gpu_tasks = 0;
    /// Tasks that a GPU gave back and the CPU ran (the sum of `cpu_fallbacks`).
    std::uint64_t cpu_fallback_count = 0;
    /// The same by reason, indexed by `FallbackReason` value - 1 (see `fallbacks`).
    std::array<std::uint64_t, fallback_reason_count> cpu_fallbacks{};
    std::uint64_t task_failures = 0;
    std::uint64_t tasks_skipped = 0;
    /// Continuations (`then`, resumed coroutines) that threw on an engine thread.
    std::uint64_t continuation_failures = 0;
    /// Batches whose memory was kept for good because a device was given up on mid-chunk.
    std::uint64_t batches_abandoned = 0;
    std::size_t cpu_workers = 0;
    std::size_t gpu_devices = 0;

    /// Every device found at start (healthy or not).
    std::vector<DeviceMetrics> devices;
    /// `EngineConfig::record_histograms`: when false the histograms below stay empty (and
    /// `to_prometheus` leaves them out).
    bool histograms = true;
    /// Batches from submit to completion, by where their tasks ran (indexed by `DeviceKind`);
    /// a batch none of whose tasks ran (cancelled, shut down) is not counted.
    std::array<Histogram, 3> batch_duration{};
    /// Batches from submit to their first chunk starting.
    Histogram queue_wait{};
    /// Each op's learned models and GPU thresholds (`Engine::op_models()`).
    std::vector<OpModelInfo> ops;

    /// Tasks that fell back to the CPU for `reason`.
    std::uint64_t fallbacks(FallbackReason reason) const noexcept {
        const auto i = static_cast<std::size_t>(reason) - 1;
        return i < cpu_fallbacks.size() ? cpu_fallbacks[i] : 0;
    }
};

/// Waits for admission room without blocking (see `Engine::when_room`).
class RoomWaiter {
public:
    virtual ~RoomWaiter() = default;
    /// Room may have freed (`closed == false`), or the engine has closed (`true`). Must not
    /// throw; runs on whichever thread freed the room (often an engine thread).
    virtual void on_room(bool closed) noexcept = 0;
};

/// Formats metrics in the Prometheus text exposition format, version 0.0.4 (serve it as
/// `text/plain; version=0.0.4; charset=utf-8`): `tandem_` series following the Prometheus
/// naming conventions (base units, counters ending in `_total`, ratios in `_ratio`), per device
/// and per op series, and histograms with cumulative `le` buckets. README, "Metrics", lists them.
std::string to_prometheus(const EngineMetrics& metrics);

/// The execution engine. Thread-safe: submit from any number of threads.
///
/// Bad input never throws from `submit`: the returned future completes with the error
/// (`EmptyBatch`, `DuplicateTaskId`, `NoImplementation`, `TooLarge`, `ShutDown`).
/// Destroying the engine shuts it down: work not yet started completes with `ShutDown`,
/// chunks already running finish, and every future completes before the destructor returns.
///
/// Engine threads: continuations run on the engine's threads. From such a thread (a `then`
/// callback, a coroutine resumed there) `submit` never waits for admission: it is admitted
/// over the limit (up to the hard limit of 1,044,480 batches, then `QueueFull`), so a
/// continuation cannot deadlock the engine. `shutdown()` from an engine thread starts the
/// shutdown and returns at once (it finishes on a helper thread; a later `shutdown()` or the
/// destructor from a user's thread waits for it), and destroying the engine from one of its
/// own threads hands the whole shutdown to a detached helper thread: keep the process alive
/// until it is done (the futures it completes tell you).
class Engine {
public:
    /// Starts the actors; GPUs (or the simulated devices) are set up here. Throws
    /// `std::invalid_argument` naming the field for a configuration value out of its range.
    explicit Engine(EngineConfig config = {});
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;
    /// Shuts down (see `shutdown`).
    ~Engine();

    /// Submits a batch; waits only if the engine is at its admission limit (never on an
    /// engine thread, see the class comment).
    template <class T, class R>
    BatchFuture<R> submit(const Op<T, R>& op, Batch<T> batch) {
        return submit_impl(op, std::move(batch), Admission::Wait);
    }

    /// Submits a batch whose outputs are written into the caller's storage (`OutputSpan`,
    /// one slot per task) instead of storage of the engine's: with `Batch::borrow`, a batch
    /// that copies nothing of the caller's. The results then view that storage (and keep its
    /// owner). A span whose size is not the batch's completes with `InvalidArgument`.
    template <class T, class R>
    BatchFuture<R> submit(const Op<T, R>& op, Batch<T> batch, OutputSpan<R> outputs) {
        static_assert(std::is_trivially_copyable_v<R> && std::is_trivially_destructible_v<R>,
                      "outputs written into the caller's storage must be trivially copyable and destructible");
        if (auto invalid = validate(op, batch, outputs)) return failed<R>(op, invalid);
        auto job = make_job(op, std::move(batch), std::move(outputs));
        BatchFuture<R> future{job};
        enqueue(std::move(job), Admission::Wait);
        return future;
    }

    /// Submits a batch and waits for its result: `submit(op, batch).get()` (it throws as
    /// `get()` does), except that a batch the plan gives to one CPU worker (a single task by
    /// default; more where `cpu_chunk` or the learned model keeps it on one worker), with
    /// under 1 MiB of inputs, on an engine of two workers or more, is run by the calling
    /// thread itself and sent to no worker: no hand-off and no wake-up on a synchronous
    /// request's path. Any other batch is submitted as usual and the caller waits for it.
    template <class T, class R>
    BatchResult<R> run(const Op<T, R>& op, Batch<T> batch) {
        return submit_impl(op, std::move(batch), Admission::CallerRuns).get();
    }

    /// Submits a batch, or completes the future at once with `QueueFull` at the limit.
    template <class T, class R>
    BatchFuture<R> try_submit(const Op<T, R>& op, Batch<T> batch) {
        return submit_impl(op, std::move(batch), Admission::Try);
    }

    /// Submits a batch if the engine has room for it now. At the admission limit it returns
    /// no future and leaves `batch` untouched (wait with `when_room`, then try again); bad
    /// input or a shut-down engine gives a future completed with the error, as `submit` does.
    /// Never blocks. The building block of asynchronous admission (`tandem::async_submit`).
    template <class T, class R>
    std::optional<BatchFuture<R>> submit_if_room(const Op<T, R>& op, Batch<T>& batch) {
        return submit_if_room_impl(op, batch, static_cast<OutputSpan<R>*>(nullptr));
    }
    /// The same, the outputs written into the caller's storage (as `submit` with outputs);
    /// `outputs` is left untouched when no future is returned.
    template <class T, class R>
    std::optional<BatchFuture<R>> submit_if_room(const Op<T, R>& op, Batch<T>& batch, OutputSpan<R>& outputs) {
        static_assert(std::is_trivially_copyable_v<R> && std::is_trivially_destructible_v<R>,
                      "outputs written into the caller's storage must be trivially copyable and destructible");
        return submit_if_room_impl(op, batch, &outputs);
    }

    /// Tells `waiter` once (`on_room(false)`), on some thread -- often an engine thread: keep
    /// it short, e.g. a post -- when a batch of `tasks` tasks may fit (room is not reserved:
    /// try again), or (`on_room(true)`) that the engine has closed: the waiter must then not
    /// touch the engine again. Returns at once.
    void when_room(std::uint64_t tasks, std::shared_ptr<RoomWaiter> waiter);

    /// True if a batch of `tasks` tasks fits now (a hint: nothing is reserved).
    bool has_room(std::uint64_t tasks) const noexcept;

    /// Stops accepting batches, skips work not yet started (its batches complete with
    /// `ShutDown`), lets running chunks finish, and returns once every batch has completed.
    /// Idempotent.
    void shutdown();

    /// Number of CPU-worker actors.
    std::size_t cpu_workers() const noexcept;
    /// Number of healthy GPUs in use (0 without CUDA or without a device).
    std::size_t gpu_count() const noexcept;
    /// The GPUs found at start, with their health.
    std::vector<DeviceInfo> gpus() const;
    /// Counters since start, per device figures, histograms and the learned models. Costs a
    /// few microseconds per device and per op (it sums the counters' shards and copies the
    /// models): meant for a scrape every few seconds, not for every batch.
    EngineMetrics metrics() const;
    /// Page-locked host memory for batches (`Batch<T>{engine.pinned_memory()}`), so GPU
    /// copies skip the staging step; plain heap memory when there is no GPU. It outlives the
    /// engine: a batch built there may be destroyed (or even grown) after the engine is gone.
    std::pmr::memory_resource* pinned_memory() noexcept;
    /// Memory for `bytes` of a batch's columns as the engine picks it for its own outputs:
    /// page-locked (`pinned_memory()`) when a GPU may copy them (`gpu_op`, a GPU present,
    /// 64 KiB or more), else its cache of large blocks, else null (the heap, for small ones).
    /// For storage handed to `submit` with outputs (`OutputSpan`), to `Batch::borrow` or to a
    /// `BatchPromise`, so that large columns do not fault in fresh pages every batch.
    std::shared_ptr<std::pmr::memory_resource> output_memory(std::size_t bytes, bool gpu_op = true) const;
    /// Per-chunk GPU stage times recorded so far (empty unless `GpuConfig::trace`). See
    /// `write_trace` for the whole engine on one clock.
    std::vector<GpuChunkTrace> gpu_trace() const;
    /// Writes the events recorded so far (`EngineConfig::trace`) as Trace Event Format JSON
    /// (`{"traceEvents": [...]}`, times in microseconds since the engine started): each batch
    /// from submit to completion, each CPU chunk on its worker's track, each GPU chunk and its
    /// H2D / kernel / D2H stages on its stream's track, flow arrows from a batch's submission
    /// to its chunks. Open it in https://ui.perfetto.dev or chrome://tracing (README,
    /// "Tracing"). With tracing off, only the process and thread names. Any thread, any time;
    /// costs about a microsecond per event kept.
    void write_trace(std::ostream& out) const;
    /// `write_trace` into a string.
    std::string trace_json() const;
    /// `write_trace` into the file `path`; throws `std::runtime_error` naming it when it cannot.
    void save_trace(const std::string& path) const;
    /// The configuration in force (defaults resolved).
    const EngineConfig& config() const noexcept;
    /// The performance models learned so far, one per op that has a kernel and ran while a
    /// device was present (see README, "Where a batch runs").
    std::vector<OpModelInfo> op_models() const;
    /// Writes the models to `path` (the format `ModelConfig::file` loads); throws
    /// `std::runtime_error` naming the file when it cannot.
    void save_models(const std::string& path) const;

private:
    /// `CallerRuns`: waits for room as `Wait`, and the caller waits for the batch next.
    enum class Admission { Wait, Try, CallerRuns };

    template <class T, class R>
    BatchFuture<R> submit_impl(const Op<T, R>& op, Batch<T> batch, Admission admission) {
        if (auto invalid = validate(op, batch)) return failed<R>(op, invalid);
        auto job = make_job(op, std::move(batch));
        BatchFuture<R> future{job};
        enqueue(std::move(job), admission);
        return future;
    }

    template <class T, class R>
    std::optional<BatchFuture<R>> submit_if_room_impl(const Op<T, R>& op, Batch<T>& batch, OutputSpan<R>* outputs) {
        if (auto invalid = outputs ? validate(op, batch, *outputs) : validate(op, batch)) return failed<R>(op, invalid);
        const std::uint64_t tasks = batch.size();
        if (auto ec = admit_now(tasks)) {
            if (ec == ExecError::QueueFull) return std::nullopt;
            return failed<R>(op, ec);
        }
        std::shared_ptr<detail::BatchJob<T, R>> job;
        try {
            job = outputs ? make_job(op, std::move(batch), std::move(*outputs)) : make_job(op, std::move(batch));
        } catch (...) {
            unadmit(tasks);
            throw;
        }
        BatchFuture<R> future{job};
        hand_over(std::move(job));
        return future;
    }

    template <class T, class R>
    std::error_code validate(const Op<T, R>& op, const Batch<T>& batch, const OutputSpan<R>& outputs) const {
        if (auto invalid = validate(op, batch)) return invalid;
        if (outputs.slots.size() != batch.size()) return ExecError::InvalidArgument;
        return {};
    }

    /// The job for a valid batch whose outputs go into the caller's storage.
    template <class T, class R>
    std::shared_ptr<detail::BatchJob<T, R>> make_job(const Op<T, R>& op, Batch<T>&& batch, OutputSpan<R>&& outputs) const {
        const std::size_t n = batch.size();
        auto window = std::make_shared<detail::OutputWindow>(outputs.slots.data(), n * sizeof(R), std::move(outputs.owner),
                                                             outputs.memory);
        return std::allocate_shared<detail::BatchJob<T, R>>(detail::JobAllocator<detail::BatchJob<T, R>>{}, op,
                                                             std::move(batch), detail::OutputBuffer<R>{n, std::move(window)});
    }

    /// Why `batch` cannot run `op` here, or nothing.
    template <class T, class R>
    std::error_code validate(const Op<T, R>& op, const Batch<T>& batch) const {
        if (batch.empty()) return ExecError::EmptyBatch;
        if (!op.has_cpu() && !(op.has_gpu() && gpu_count() > 0)) {
            // A GPU-only op: on an engine whose devices have all failed, that is a device
            // failure; with no device at all, the op has no code this engine can run.
            return op.has_gpu() && had_devices() ? ExecError::DeviceFailed : ExecError::NoImplementation;
        }
        if (!batch.ids().unique()) return ExecError::DuplicateTaskId;
        return {};
    }

    /// A future already completed with `error`.
    template <class R, class T>
    static BatchFuture<R> failed(const Op<T, R>& op, std::error_code error) {
        auto job = std::make_shared<detail::BatchJob<T, R>>(op, Batch<T>{}, detail::OutputBuffer<R>{});
        job->fail(error);
        return BatchFuture<R>{std::move(job)};
    }

    /// The job for a valid batch, its outputs allocated.
    template <class T, class R>
    std::shared_ptr<detail::BatchJob<T, R>> make_job(const Op<T, R>& op, Batch<T>&& batch) const {
        // Outputs of a batch built in page-locked memory go to page-locked memory too, so the
        // GPU copies results straight into them.
        detail::OutputBuffer<R> outputs;
        try {
            outputs = detail::OutputBuffer<R>{batch.size(),
                                              output_memory_for(batch.memory(), batch.size() * sizeof(R), op.has_gpu())};
        } catch (const std::bad_alloc&) {
            outputs = detail::OutputBuffer<R>{batch.size()};  // no page-locked memory left: the heap will do
        }
        return std::allocate_shared<detail::BatchJob<T, R>>(detail::JobAllocator<detail::BatchJob<T, R>>{}, op,
                                                             std::move(batch), std::move(outputs));
    }

    /// Where a batch's outputs go: page-locked memory when the payloads are there and a GPU may
    /// run the op; the engine's block cache for large outputs; else null (the heap).
    std::shared_ptr<std::pmr::memory_resource> output_memory_for(std::pmr::memory_resource* payload_memory,
                                                                 std::size_t bytes, bool gpu_op) const;

    /// True if the engine started with devices (healthy now or not).
    bool had_devices() const noexcept;

    /// Admits and hands the job to the scheduler, or completes it with an error.
    void enqueue(std::shared_ptr<detail::JobCore> job, Admission admission);
    /// Reserves room for a batch of `tasks` without waiting (QueueFull at the limit).
    std::error_code admit_now(std::uint64_t tasks);
    /// Gives back what `admit_now` reserved (the job could not be built).
    void unadmit(std::uint64_t tasks) noexcept;
    /// Hands an admitted job to the scheduler. `caller_runs`: the caller waits for it next
    /// (`run`).
    void hand_over(std::shared_ptr<detail::JobCore> job, bool caller_runs = false) noexcept;

    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
