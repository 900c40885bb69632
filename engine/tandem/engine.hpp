#pragma once
/// \file
/// The engine: a scheduler actor, CPU-worker actors and (when built with CUDA and a device is
/// present) GPU-stream actors. `submit` hands it a batch and returns a future at once.

#include <tandem/detail/job.hpp>
#include <tandem/error.hpp>
#include <tandem/future.hpp>
#include <tandem/op.hpp>
#include <tandem/task.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <new>
#include <string>
#include <vector>

namespace tandem {

/// Failures the GPU backend can be told to simulate, so tests can prove no task is lost.
struct GpuFaultInjection {
    /// Every chunk's kernel launch fails (as a launch error).
    bool fail_launch = false;
    /// Every device-buffer allocation fails (as out of memory).
    bool fail_device_alloc = false;
    /// Every pinned staging allocation fails.
    bool fail_pinned_alloc = false;
    /// The device fails (sticky error) once it has completed this many chunks; -1: never.
    long fail_device_after_chunks = -1;
    /// Only this device index is affected; -1: all.
    int device = -1;
};

/// GPU settings (ignored in a build without CUDA).
struct GpuConfig {
    /// Use GPUs when the build has CUDA and a device is present.
    bool enabled = true;
    /// At most this many devices (0: every visible device).
    std::size_t max_devices = 0;
    /// Chunks in flight per device, each with its own buffers and stream (measured on an
    /// H100 with a balanced 256 MiB batch: 2 → 9.42 ms, 4 → 6.51, 8 → 6.42, 16 → 6.45).
    std::size_t streams_per_device = 8;
    /// Bytes of page-locked staging memory per device (reused across chunks).
    std::size_t pinned_pool_bytes = std::size_t{256} << 20;
    /// Bytes of device buffers per device (reused across chunks).
    std::size_t device_pool_bytes = std::size_t{1} << 30;
    /// Bytes of input per GPU chunk (0: automatic).
    std::size_t chunk_bytes = 0;
    /// Batches with fewer tasks than this stay on the CPU.
    std::size_t threshold_tasks = 4096;
    /// CPU workers also take chunks of batches that run on GPUs (hybrid execution). Off: such
    /// batches run on GPUs alone, the CPU taking only what a GPU gives back.
    bool cpu_helps = true;
    /// Bytes of freed page-locked memory kept for reuse by `Engine::pinned_memory()` and the
    /// outputs of batches built there.
    std::size_t pinned_cache_bytes = std::size_t{2} << 30;
    /// Record per-chunk GPU stage timestamps (see `Engine::gpu_trace`).
    bool trace = false;
    /// Failures to simulate.
    GpuFaultInjection faults{};
};

/// Engine settings. Every field has a working default.
struct EngineConfig {
    /// CPU-worker actors (threads); 0 means one per hardware thread, less one per GPU in use.
    std::size_t cpu_workers = 0;
    /// Admission limit (at most 2^20 - 2): batches submitted but not completed. `submit` waits for room,
    /// `try_submit` fails with `ExecError::QueueFull`.
    std::size_t max_batches_in_flight = 65536;
    /// Admission limit in tasks; a single batch larger than this fails with `TooLarge`.
    std::uint64_t max_tasks_in_flight = std::uint64_t{1} << 32;
    /// Bytes of freed output arrays kept for reuse: a large batch's outputs then land in memory
    /// that is already mapped (a fresh 256 MiB array costs 65,536 page faults). Outputs under
    /// 64 KiB come from the heap.
    std::size_t output_cache_bytes = std::size_t{1} << 30;
    /// Tasks per CPU chunk (0: automatic, from the batch size and the worker count).
    std::size_t cpu_chunk = 0;
    /// How long an idle actor spins before parking (its wake-up then costs a system call).
    std::chrono::nanoseconds idle_spin = std::chrono::microseconds{50};
    /// GPU settings.
    GpuConfig gpu{};
};

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
};

/// Engine-wide counters since start (a snapshot).
struct EngineMetrics {
    std::uint64_t batches_submitted = 0;
    std::uint64_t batches_completed = 0;
    std::uint64_t batches_failed = 0;
    std::uint64_t batches_in_flight = 0;
    std::uint64_t tasks_in_flight = 0;
    std::uint64_t tasks_completed = 0;
    std::uint64_t cpu_tasks = 0;
    std::uint64_t gpu_tasks = 0;
    /// Tasks that a GPU gave back and the CPU ran.
    std::uint64_t cpu_fallback_count = 0;
    std::uint64_t task_failures = 0;
    std::uint64_t tasks_skipped = 0;
    std::size_t cpu_workers = 0;
    std::size_t gpu_devices = 0;
};

/// Formats metrics in the Prometheus text exposition format (`tandem_` prefix).
std::string to_prometheus(const EngineMetrics& metrics);

/// The execution engine. Thread-safe: submit from any number of threads.
///
/// Bad input never throws from `submit`: the returned future completes with the error
/// (`EmptyBatch`, `DuplicateTaskId`, `NoImplementation`, `TooLarge`, `ShutDown`).
/// Destroying the engine shuts it down: work not yet started completes with `ShutDown`,
/// chunks already running finish, and every future completes before the destructor returns.
class Engine {
public:
    /// Starts the actors; GPUs are discovered here.
    explicit Engine(EngineConfig config = {});
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;
    /// Shuts down (see `shutdown`).
    ~Engine();

    /// Submits a batch; waits only if the engine is at its admission limit.
    template <class T, class R>
    BatchFuture<R> submit(const Op<T, R>& op, Batch<T> batch) {
        return submit_impl(op, std::move(batch), Admission::Wait);
    }

    /// Submits a batch, or completes the future at once with `QueueFull` at the limit.
    template <class T, class R>
    BatchFuture<R> try_submit(const Op<T, R>& op, Batch<T> batch) {
        return submit_impl(op, std::move(batch), Admission::Try);
    }

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
    /// Counters since start.
    EngineMetrics metrics() const;
    /// Page-locked host memory for batches (`Batch<T>{engine.pinned_memory()}`), so GPU
    /// copies skip the staging step; plain heap memory when there is no GPU.
    std::pmr::memory_resource* pinned_memory() noexcept;
    /// Per-chunk GPU stage times recorded so far (empty unless `GpuConfig::trace`).
    std::vector<GpuChunkTrace> gpu_trace() const;
    /// The configuration in force (defaults resolved).
    const EngineConfig& config() const noexcept;

private:
    enum class Admission { Wait, Try };

    template <class T, class R>
    BatchFuture<R> submit_impl(const Op<T, R>& op, Batch<T> batch, Admission admission) {
        std::error_code invalid;
        if (batch.empty()) {
            invalid = ExecError::EmptyBatch;
        } else if (!op.has_cpu() && !(op.has_gpu() && gpu_count() > 0)) {
            invalid = ExecError::NoImplementation;
        } else if (!batch.ids().unique()) {
            invalid = ExecError::DuplicateTaskId;
        }
        // Outputs of a batch built in page-locked memory go to page-locked memory too, so the
        // GPU copies results straight into them.
        if (invalid) {
            auto job = std::make_shared<detail::BatchJob<T, R>>(op, Batch<T>{}, detail::OutputBuffer<R>{});
            job->fail(invalid);
            return BatchFuture<R>{std::move(job)};
        }
        detail::OutputBuffer<R> outputs;
        try {
            outputs = detail::OutputBuffer<R>{batch.size(), output_memory_for(batch.memory(), batch.size() * sizeof(R), op.has_gpu())};
        } catch (const std::bad_alloc&) {
            outputs = detail::OutputBuffer<R>{batch.size()};  // no page-locked memory left: the heap will do
        }
        auto job = std::make_shared<detail::BatchJob<T, R>>(op, std::move(batch), std::move(outputs));
        BatchFuture<R> future{job};
        enqueue(std::move(job), admission);
        return future;
    }

    /// Where a batch's outputs go: page-locked memory when the payloads are there and a GPU may
    /// run the op; the engine's block cache for large outputs; else null (the heap).
    std::shared_ptr<std::pmr::memory_resource> output_memory_for(std::pmr::memory_resource* payload_memory,
                                                                 std::size_t bytes, bool gpu_op) const;

    /// Admits and hands the job to the scheduler, or completes it with an error.
    void enqueue(std::shared_ptr<detail::JobCore> job, Admission admission);

    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
