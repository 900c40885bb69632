#pragma once
// Internal: the plain C++ seam between the engine and a device backend (gpu/ implements it).
// No CUDA type crosses it.

#include <tandem/detail/job.hpp>
#include <tandem/engine.hpp>

#include <atomic>
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
    virtual void fallback(std::shared_ptr<JobCore> job, Range range, std::error_code why) = 0;

protected:
    ~FallbackSink() = default;
};

/// A set of devices with their stream actors.
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

    /// Hands `job` to device `d`: its stream actors claim chunks of about `chunk` tasks from
    /// the job's cursor until none are left. A chunk that fails goes to the fallback sink.
    virtual void run(std::size_t d, std::shared_ptr<JobCore> job, std::size_t chunk) = 0;

    /// Measured throughput of device `d` for an op (tasks per second), 0 if never measured.
    virtual double throughput(std::size_t d, const void* op_key) const noexcept = 0;

    /// Lets chunks in flight finish (failures still go to the sink), then stops the actors.
    /// Nothing is run after this returns; work handed over later is skipped as `ShutDown`.
    virtual void stop() = 0;

    /// Page-locked host memory, caching freed blocks; shared so results can outlive us.
    virtual std::shared_ptr<std::pmr::memory_resource> pinned_memory() noexcept = 0;

    /// Per-chunk stage times recorded so far (when tracing is on).
    virtual std::vector<GpuChunkTrace> trace() const = 0;
};

/// Makes the CUDA backend (defined in gpu/), or null when the build has no CUDA, GPUs are
/// disabled, or no device is present. `engine_stopping` turns true when shutdown begins.
std::unique_ptr<DeviceBackend> make_gpu_backend(const GpuConfig& config, FallbackSink& sink,
                                                const std::atomic<bool>& engine_stopping);

}  // namespace tandem::detail
