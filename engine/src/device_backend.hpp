#pragma once
// Internal: the plain C++ seam between the engine and a device backend (gpu/ implements it for
// CUDA, sim_backend.cpp for simulated devices). No CUDA type crosses it.

#include "engine_shared.hpp"

#include <tandem/detail/job.hpp>
#include <tandem/engine.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <memory_resource>
#include <system_error>
#include <vector>

namespace tandem::detail {

/// Where a device backend sends work it could not finish: the scheduler, which reruns the
/// range on CPU workers and counts the fallback.
class FallbackSink {
public:
    virtual void fallback(std::shared_ptr<JobCore> job, Range range, std::error_code why) noexcept = 0;

protected:
    ~FallbackSink() = default;
};

/// What a backend is built with.
struct BackendContext {
    const GpuConfig& config;
    FallbackSink& sink;
    /// Turns true when shutdown begins.
    const std::atomic<bool>& stopping;
    /// The engine whose threads the backend's actors are (see `set_current_engine`).
    const EngineShared* engine = nullptr;
};

/// What a device reports of itself for the metrics (the engine counts its tasks, chunks and
/// bytes from the chunks it reports).
struct DeviceUsage {
    /// Time during which engine work executed on the device: the union of its chunks'
    /// intervals, so overlapping streams count once (see busy_time.hpp).
    std::chrono::nanoseconds busy{0};
    /// The busy share of the last 10 s, in [0, 1].
    double utilization = 0;
    /// Staging (page-locked) and device buffer bytes held for reuse, and their limits.
    std::size_t pinned_pool_used = 0, pinned_pool_capacity = 0;
    std::size_t device_pool_used = 0, device_pool_capacity = 0;
};

/// The window of `DeviceUsage::utilization`.
inline constexpr std::chrono::seconds utilization_window{10};

/// A set of devices with their actors.
class DeviceBackend {
public:
    virtual ~DeviceBackend() = default;

    /// Healthy devices now (a retired device no longer counts).
    virtual std::size_t device_count() const noexcept = 0;
    /// Every device found at start, with its health.
    virtual std::vector<DeviceInfo> devices() const = 0;
    /// Devices found at start (healthy or not); valid indices for `run` and `healthy`.
    virtual std::size_t size() const noexcept = 0;
    /// True if device `d` is healthy.
    virtual bool healthy(std::size_t d) const noexcept = 0;

    /// Hands `job` to device `d`: its actor claims chunks of about `chunk` tasks from the
    /// job's cursor until none are left. A chunk that fails goes to the fallback sink. The
    /// device's share is never lost: handed to a device that has stopped, it is skipped as
    /// `ShutDown`; one that cannot be queued goes to the fallback sink.
    virtual void run(std::size_t d, std::shared_ptr<JobCore> job, std::size_t chunk) noexcept = 0;

    /// Lets chunks in flight finish (failures still go to the sink), skips what the devices
    /// hold unclaimed as `ShutDown`, then stops the actors. A device still busy after
    /// `GpuConfig::shutdown_grace` is given up on: its chunks' ranges are skipped as
    /// `DeviceFailed` and their memory is kept for good. Returns within about the grace period.
    virtual void stop() = 0;

    /// Page-locked host memory (or, for simulated devices, memory that plays its part),
    /// caching freed blocks; shared so results can outlive the backend.
    virtual std::shared_ptr<std::pmr::memory_resource> pinned_memory() noexcept = 0;

    /// Per-chunk stage times recorded so far (when tracing is on).
    virtual std::vector<GpuChunkTrace> trace() const = 0;

    /// Device `d`'s busy time and pools, now (any thread).
    virtual DeviceUsage usage(std::size_t d) const noexcept = 0;

    /// The engine is going away: `pinned_memory()` frees its cached blocks and is kept alive
    /// until the process ends (users' batches may still hold raw pointers to it).
    virtual void orphan_memory() noexcept = 0;
};

/// What a device actor does with a job it cannot take: skipped as `ShutDown` once the actor
/// has stopped, otherwise handed back to the CPU through the sink.
inline void give_back_share(const std::shared_ptr<JobCore>& job, bool stopped, FallbackSink& sink,
                            std::error_code why) noexcept {
    const Range rest = job->claim_rest();
    if (rest.empty()) return;
    if (stopped) {
        job->skip(rest, ExecError::ShutDown);
    } else {
        sink.fallback(job, rest, why);
    }
}

/// Makes the CUDA backend (defined in gpu/), or null when the build has no CUDA, GPUs are
/// disabled, or no device is present.
std::unique_ptr<DeviceBackend> make_gpu_backend(const BackendContext& context);

/// Makes the simulated devices of `context.config.simulated` (sim_backend.cpp).
std::unique_ptr<DeviceBackend> make_simulated_backend(const BackendContext& context);

}  // namespace tandem::detail
