#pragma once
// Internal: the scheduler actor. It plans each batch (which devices, how many tasks each,
// chunk sizes) and sends chunk messages; it takes back ranges a device could not finish and
// reruns them on CPU workers; and it skips the work of cancelled batches off the user's thread.

#include "cpu_worker.hpp"
#include "device_backend.hpp"
#include "placement.hpp"

#include <tandem/actors/actor.hpp>
#include <tandem/engine.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

namespace tandem::detail {

struct SchedulerMessage {
    enum class Kind : std::uint8_t { Plan, Fallback, Skip };
    std::shared_ptr<JobCore> job;
    Kind kind = Kind::Plan;
    Range range{};
    ExecError reason = ExecError::Cancelled;  // for Skip
};

class Scheduler final : public actors::Behavior<SchedulerMessage>, public FallbackSink, public Offload {
public:
    Scheduler(const EngineConfig& config, EngineShared& engine, const std::atomic<bool>& engine_stopping,
              std::vector<std::unique_ptr<CpuWorker>>& workers);

    /// Bit i set: worker i has nothing queued (a hint; workers past 64 are never in it).
    std::atomic<std::uint64_t>& idle_mask() noexcept { return engine_.idle_mask; }

    /// Attaches the device backend (after both exist, and the workers; before the first
    /// message) and makes the placement policy.
    void set_backend(DeviceBackend* backend);
    /// The placement policy (valid after `set_backend`).
    Placement& placement() noexcept { return *placement_; }
    const Placement& placement() const noexcept { return *placement_; }

    /// Starts the actor (after the workers exist).
    void start(actors::ActorOptions options);
    void stop();
    /// Hands a new job over for planning; it is never lost (see `on_rejected`).
    void send(std::shared_ptr<JobCore> job);

    /// The fast path, on the submitting thread: the batch is planned here and its plan carried
    /// out here, straight to the devices and workers it names, one hop fewer than through this
    /// actor. Returns false for a batch that needs the scheduler (the test hooks that hold its
    /// path, a plan that ran out of memory, a GPU-only op no device can take). Thread-safe;
    /// call only while admission holds the engine open (devices and workers are then
    /// running). `caller_runs`: the submitting thread waits for the batch next
    /// (`Engine::run`), so a batch its wait would run is sent to no worker at all.
    bool dispatch_directly(const std::shared_ptr<JobCore>& job, bool caller_runs = false);

    void on_start() override;
    void on_message(SchedulerMessage& m) override;
    void on_rejected(SchedulerMessage& m, actors::Rejection why) noexcept override;
    void on_exception(SchedulerMessage& m, std::exception_ptr error) noexcept override;
    void fallback(std::shared_ptr<JobCore> job, Range range, std::error_code why) noexcept override;
    void skip_later(std::shared_ptr<JobCore> job, Range r, ExecError why) noexcept override;

private:
    void plan(const std::shared_ptr<JobCore>& job);
    void rerun_on_cpu(const std::shared_ptr<JobCore>& job, Range range);
    void send_to_worker(std::size_t w, WorkerMessage message);
    /// How many workers a planned batch's CPU share is sent to: one per chunk, at most every
    /// worker, at most the plan's `cpu_width`.
    std::size_t workers_for(const JobCore& job) const noexcept;
    void engage_workers(const std::shared_ptr<JobCore>& job, std::size_t count);
    /// `engage_workers` from a submitting thread (no producer tokens: each belongs to one
    /// thread). `cpu_only`: the batch waits for no device, so a parked first worker marks it a
    /// cold start (its waiter does not spin).
    void send_to_workers(const std::shared_ptr<JobCore>& job, std::size_t count, bool cpu_only);
    /// Sends each device the plan names its share (any thread; a rejected send gives it back).
    void send_to_devices(const std::shared_ptr<JobCore>& job) noexcept;
    /// Plans a job that was not planned on the submitting thread. False when it was skipped.
    bool decide(const std::shared_ptr<JobCore>& job);

    const EngineConfig& config_;
    EngineShared& engine_;
    std::unique_ptr<Placement> placement_;
    const std::atomic<bool>& stopping_;
    std::vector<std::unique_ptr<CpuWorker>>& workers_;
    std::vector<actors::Mailbox<WorkerMessage>::ProducerToken> tokens_;
    DeviceBackend* backend_ = nullptr;
    std::size_t next_worker_ = 0;
    std::unique_ptr<actors::Actor<SchedulerMessage>> actor_;
};

}  // namespace tandem::detail
