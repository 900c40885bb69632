#pragma once
// Internal: the actor that drives one GPU. It owns the device's streams (one pipeline slot per
// stream), claims chunks of the jobs it is given, runs pack → H2D → kernel → D2H → unpack on a
// slot's stream, and learns of completion by polling each slot's last event between messages:
// no cudaStreamSynchronize, no thread blocked on the GPU.
//
// One actor per device rather than per stream: a single thread issuing to several streams keeps
// every copy engine and the SMs busy (issuing costs microseconds, a chunk milliseconds), and
// polls all of them at once, where an actor per stream would spin a core per stream.

#ifndef __CUDACC__
#error "device_actor.cuh holds CUDA code: include it from .cu files only"
#endif

#include "busy_time.hpp"
#include "cuda_handles.cuh"
#include "device_backend.hpp"
#include "pinned_memory.cuh"

#include <tandem/actors/actor.hpp>
#include <tandem/engine.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace tandem::gpu {

using detail::JobCore;
using detail::Range;

/// A job handed to a device, with the chunk size the scheduler chose.
struct DeviceMessage {
    std::shared_ptr<JobCore> job;
    std::size_t chunk = 0;
};

/// State the backend and the device's actor share.
struct DeviceState {
    DeviceInfo info;
    /// The device's index in the backend (what the scheduler's plans name it by).
    std::size_t slot = 0;
    std::atomic<bool> healthy{true};
};

class DeviceActor final : public actors::Behavior<DeviceMessage> {
public:
    DeviceActor(DeviceState& state, const detail::BackendContext& context, PinnedMemory& pinned);
    ~DeviceActor() override;

    /// Starts the thread and waits until the device's streams exist; false if they could not
    /// be made (the device is then marked unhealthy).
    bool start(actors::ActorOptions options);
    void stop();
    void send(DeviceMessage m) noexcept;
    std::vector<GpuChunkTrace> trace() const;
    /// True once shutdown gave up on this device with chunks still in flight.
    bool abandoned() const noexcept { return abandoned_.load(std::memory_order_acquire); }
    /// Busy time and pools (any thread).
    detail::DeviceUsage usage() const noexcept;

    void on_start() override;
    void on_message(DeviceMessage& m) override;
    bool on_idle() override;
    void on_stop() override;
    void on_rejected(DeviceMessage& m, actors::Rejection why) noexcept override;
    void on_exception(DeviceMessage& m, std::exception_ptr error) noexcept override;

private:
    /// One pipeline slot: a stream, its buffers and the chunk in flight on it.
    struct Slot {
        Stream stream;
        std::array<Event, 4> events;  // before H2D, after H2D, after kernel, after D2H
        DeviceBuffer device_in, device_out;
        void* stage_in = nullptr;     // page-locked staging, when the batch is not page-locked
        void* stage_out = nullptr;
        std::size_t stage_in_bytes = 0, stage_out_bytes = 0;
        std::shared_ptr<JobCore> job;  // null when the slot is free
        Range range;
        bool unstage_out = false;
        bool pipelined = false;  // issued on the stage streams, every event recorded
        std::chrono::steady_clock::time_point issued;
        // When the actor began the chunk, before its buffers and the pack into staging
        // memory: the span placement learns from starts here, so a pageable batch's packing
        // (a host copy as long as the PCIe one) is counted in what the device costs.
        std::chrono::steady_clock::time_point began;
        // When the actor took the chunk's batch off its mailbox (traced engines only).
        std::chrono::steady_clock::time_point received;
        bool reports_wait = false;  // the first chunk of a share that arrived at an idle device
        unsigned index = 0;  // its place in slots_ (the stream's track in the trace)
    };

    struct Active {
        std::shared_ptr<JobCore> job;
        std::size_t chunk = 0;
        bool payload_pinned = false;
        // The device had nothing to do when this share arrived, and its first chunk is not
        // issued yet: that chunk reports how long the device took to start (the model's
        // start delay; a device that was busy reports nothing, its wait measures the queue).
        bool started_idle = false;
        // When the actor took it off its mailbox (traced engines only).
        std::chrono::steady_clock::time_point received{};
    };

    void fill();
    void issue(Slot& slot, Active& active, Range r);
    void poll();
    void complete(Slot& slot);
    void fail_chunk(Slot& slot, std::error_code why);
    void on_cuda_error(Slot* slot, Range r, const std::shared_ptr<JobCore>& job, cudaError_t status);
    void retire(std::error_code why);
    bool busy() const noexcept;
    bool fault_applies() const noexcept;
    void* ensure_stage(void*& buffer, std::size_t& capacity, std::size_t bytes, std::size_t want);
    void release_slots() noexcept;
    /// Publishes the bytes the slots' buffers hold.
    void note_pools() noexcept;
    /// Adds a completed chunk's interval to the busy time (see the members below).
    /// Adds the chunk's span to the busy time; returns when its H2D began on the host clock
    /// (its CUDA event mapped through the clock offset; the issue time when not timed).
    std::chrono::steady_clock::time_point account_busy(Slot& slot, std::chrono::steady_clock::time_point seen) noexcept;
    void drain(Slot* slot) noexcept;
    void abandon() noexcept;

    /// Chunks of at least this many bytes (in + out) go through the stage streams.
    static constexpr std::size_t pipeline_min_bytes = std::size_t{256} << 10;

    DeviceState& state_;
    const GpuConfig& config_;
    detail::FallbackSink& sink_;
    const std::atomic<bool>& stopping_;
    const detail::EngineShared* engine_;
    PinnedMemory& pinned_;
    std::optional<std::chrono::steady_clock::time_point> stop_seen_;  // when on_idle first saw shutdown
    std::atomic<bool> abandoned_{false};
    std::size_t slot_budget_device_ = 0;  // device bytes per slot (in + out)
    std::size_t slot_budget_stage_ = 0;   // staging bytes per slot (in + out)

    // Actor-thread state.
    std::vector<std::unique_ptr<Slot>> slots_;
    std::deque<Active> jobs_;
    std::optional<Stream> copy_in_, compute_, copy_out_;  // the stage streams
    std::optional<Event> origin_;  // traces are relative to this event
    long completed_chunks_ = 0;

    // Busy time. A large chunk's interval comes from its CUDA events (first copy in to last
    // copy out); a small one records no event (at 4 KiB each costs a tenth of the round trip)
    // and counts from issue to completion seen. Both go on the host's steady clock:
    // - event times become device-timeline times through the anchor, a completed event whose
    //   time is known. cudaEventElapsedTime is a float of milliseconds, exact to ~0.1 µs only
    //   within a second or so of its reference, so the anchor moves to a recent chunk's last
    //   event (at most every 100 ms);
    // - the device timeline is put on the host clock by an offset that every chunk bounds:
    //   its first event ran after it was issued, its last before it was seen complete. The
    //   offset is the tightest lower bound so far, kept within each chunk's upper bound (a
    //   drifting clock), and every interval is clamped to its chunk's [issued, seen].
    detail::BusyTime busy_;
    std::optional<Event> anchor_;
    double anchor_device_ns_ = 0;
    std::chrono::steady_clock::time_point anchor_set_{};
    double clock_offset_ns_ = 0;  // host steady clock - device timeline
    bool offset_known_ = false;
    std::atomic<std::size_t> pinned_pool_used_{0}, device_pool_used_{0};

    std::promise<bool> started_;
    mutable std::mutex trace_mutex_;
    std::vector<GpuChunkTrace> trace_;
    std::unique_ptr<actors::Actor<DeviceMessage>> actor_;
};

}  // namespace tandem::gpu
