// Simulated devices: host threads behind the same seam as the CUDA backend (StarPU's SimGrid
// mode is the precedent). Each device is an actor that claims chunks of the jobs it is given,
// as a GPU's actor does, computes them on the host with the op's CPU function (or the kernel's
// host emulation) so results are real, and reports each chunk's duration from its model
// (fixed cost + the chunk's cost × per-task cost; the cost is its task count when every task
// costs 1). Faults reproduce what a CUDA device can do: a failed
// launch or allocation (the chunk falls back to the CPU), a device that fails (it is retired),
// and a chunk that never completes (only a shutdown ends it, after the grace period).
//
// With no GPU in CI, this is what runs the scheduler ↔ device interplay under the sanitizers.

#include "block_cache.hpp"
#include "busy_time.hpp"
#include "device_backend.hpp"

#include <tandem/actors/actor.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tandem::detail {
namespace {

/// Why a simulated device gave a chunk back.
enum class SimError { LaunchFailed = 1, OutOfMemory, DeviceFailed, Retired, NoHostCode };

class SimCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "tandem.simulated"; }
    std::string message(int value) const override {
        switch (static_cast<SimError>(value)) {
            case SimError::LaunchFailed: return "simulated device: kernel launch failed";
            case SimError::OutOfMemory: return "simulated device: out of memory";
            case SimError::DeviceFailed: return "simulated device: device failed";
            case SimError::Retired: return "simulated device: device retired";
            case SimError::NoHostCode: return "simulated device: op has no host code to simulate its kernel";
        }
        return "simulated device: error " + std::to_string(value);
    }
    using std::error_category::equivalent;  // the other overload stays as it is
    /// The reason each failure counts under (`tandem_cpu_fallbacks_total{reason}`).
    bool equivalent(int value, const std::error_condition& condition) const noexcept override {
        if (condition.category() != fallback_category()) return std::error_category::equivalent(value, condition);
        FallbackReason r = FallbackReason::Other;
        switch (static_cast<SimError>(value)) {
            case SimError::LaunchFailed: r = FallbackReason::LaunchError; break;
            case SimError::OutOfMemory: r = FallbackReason::OutOfMemory; break;
            case SimError::DeviceFailed:
            case SimError::Retired: r = FallbackReason::DeviceFailed; break;
            case SimError::NoHostCode: r = FallbackReason::NoKernel; break;
        }
        return condition.value() == static_cast<int>(r);
    }
};

std::error_code sim_error(SimError e) noexcept {
    static const SimCategory category;
    return {static_cast<int>(e), category};
}

struct SimMessage {
    std::shared_ptr<JobCore> job;
    std::size_t chunk = 0;
};

class SimDevice final : public actors::Behavior<SimMessage> {
public:
    SimDevice(unsigned index, const SimulatedDevice& spec, const BackendContext& context)
        : index_{index}, spec_{spec}, context_{context} {}
    ~SimDevice() override { stop(); }

    void start(actors::ActorOptions options) { actor_ = std::make_unique<actors::Actor<SimMessage>>(*this, options); }
    void stop() {
        if (actor_) actor_->stop();
    }
    void send(SimMessage m) noexcept { actor_->send(std::move(m)); }

    bool healthy() const noexcept { return healthy_.load(std::memory_order_relaxed); }
    const SimulatedDevice& spec() const noexcept { return spec_; }

    /// Its modelled busy time (any thread). No pools: it reads payloads in place and stages
    /// nothing; the device pool shows the largest chunk's bytes, as a GPU's slot buffers would.
    DeviceUsage usage() const noexcept {
        DeviceUsage u;
        u.busy = std::chrono::nanoseconds{busy_.total_ns()};
        u.utilization = busy_.utilization(std::chrono::steady_clock::now().time_since_epoch().count(),
                                          std::chrono::nanoseconds{utilization_window}.count());
        u.pinned_pool_capacity = context_.config.pinned_pool_bytes;
        u.device_pool_used = largest_chunk_bytes_.load(std::memory_order_relaxed);
        u.device_pool_capacity = context_.config.device_pool_bytes;
        return u;
    }

    void on_start() override { set_current_engine(context_.engine); }

    void on_message(SimMessage& m) override {
        if (!healthy()) {  // retired between the scheduler's look and now
            give_back_share(m.job, false, context_.sink, sim_error(SimError::Retired));
            return;
        }
        const bool idle = jobs_.empty() && hung_.job == nullptr;
        jobs_.push_back(Held{m.job, std::max<std::size_t>(m.chunk, 1), idle});  // may throw: on_exception
    }

    void on_exception(SimMessage& m, std::exception_ptr) noexcept override {
        if (m.job) give_back_share(m.job, false, context_.sink, sim_error(SimError::OutOfMemory));
    }

    void on_rejected(SimMessage& m, actors::Rejection why) noexcept override {
        if (m.job) give_back_share(m.job, why == actors::Rejection::Stopped, context_.sink, sim_error(SimError::OutOfMemory));
    }

    bool on_idle() override {
        const bool stopping = context_.stopping.load(std::memory_order_relaxed);
        if (hung_.job) {
            if (stopping) {
                const auto now = std::chrono::steady_clock::now();
                if (!stop_seen_) stop_seen_ = now;
                if (now - *stop_seen_ >= context_.config.shutdown_grace) {
                    abandon();
                    return false;
                }
            }
            std::this_thread::sleep_for(std::chrono::microseconds{50});  // a stuck device: no hurry
            return true;
        }
        if (stopping || !healthy()) return false;  // on_stop skips what is held
        while (!jobs_.empty()) {
            Held& h = jobs_.front();
            const Range r = h.job->cancel_requested() ? Range{} : h.job->claim_device(index_, h.chunk);
            if (r.empty()) {
                jobs_.pop_front();
                continue;
            }
            const std::shared_ptr<JobCore> job = h.job;  // run_chunk may retire, clearing jobs_
            run_chunk(job, r, std::exchange(h.reports_wait, false));
            // Round robin between the jobs held, as the CUDA device actor does.
            if (jobs_.size() > 1) std::rotate(jobs_.begin(), jobs_.begin() + 1, jobs_.end());
            break;
        }
        return !jobs_.empty() || hung_.job != nullptr;
    }

    void on_stop() override {
        // Nothing is in flight (a hung chunk was abandoned first). What is left unclaimed of the
        // jobs still held is not run.
        for (auto& h : jobs_) h.job->skip(h.job->claim_rest(), ExecError::ShutDown);
        jobs_.clear();
    }

private:
    struct Held {
        std::shared_ptr<JobCore> job;
        std::size_t chunk = 1;
        bool reports_wait = false;  // arrived at an idle device; its first chunk not run yet
    };
    struct InFlight {
        std::shared_ptr<JobCore> job;
        Range range;
    };

    void run_chunk(const std::shared_ptr<JobCore>& job, Range r, bool reports_wait) {
        if (spec_.on_chunk) {
            try {
                spec_.on_chunk(r.begin, r.size());
            } catch (...) {
                context_.sink.fallback(job, r, sim_error(SimError::LaunchFailed));
                return;
            }
        }
        if (spec_.fail_alloc) {
            context_.sink.fallback(job, r, sim_error(SimError::OutOfMemory));
            return;
        }
        if (spec_.fail_launch) {
            context_.sink.fallback(job, r, sim_error(SimError::LaunchFailed));
            return;
        }
        if (spec_.hang_after_chunks >= 0 && completed_ >= spec_.hang_after_chunks) {
            hung_ = InFlight{job, r};  // a kernel that never returns
            return;
        }
        const auto start = std::chrono::steady_clock::now();
        if (!job->run_on_host(r)) {
            context_.sink.fallback(job, r, sim_error(SimError::NoHostCode));
            return;
        }
        // The model counts the chunk's cost: its tasks' est_cost summed (0 counted as 1), which
        // is its task count when every task costs 1.
        const double work = job->cost(r) * static_cast<double>(spec_.per_task.count());
        auto duration = spec_.fixed_cost + std::chrono::nanoseconds{static_cast<std::int64_t>(std::min(work, 9e18))};
        if (spec_.slowdown) {
            const double factor = spec_.slowdown();
            if (factor > 0 && factor < 1e6) {
                duration = std::chrono::nanoseconds{static_cast<std::int64_t>(static_cast<double>(duration.count()) * factor)};
            }
        }
        if (spec_.real_time) std::this_thread::sleep_until(start + duration);
        const GpuView view = job->gpu_view();
        GpuChunkTimes t;
        t.total = t.kernel = duration;
        t.stages_timed = true;  // the model has no copies: H2D and D2H take no time
        t.bytes_h2d = r.size() * view.in_size;
        t.bytes_d2h = r.size() * view.out_size;
        t.start = start;
        t.end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(duration);
        // The device's own timeline is its model's: chunks run back to back on it.
        t.contended = jobs_.size() > 1;
        t.timeline_start = timeline_;
        if (reports_wait) t.waited = spec_.start_delay;  // the modelled wait of an idle device
        timeline_ += duration;
        t.timeline_end = timeline_;
        // Busy time: the device runs its chunks one after another, each for its modelled
        // duration, starting when it is issued or when the one before ends, whichever is later
        // (a model slower than the host runs ahead of the clock). Nothing overlaps.
        const std::int64_t from = std::max<std::int64_t>(start.time_since_epoch().count(), busy_until_);
        busy_until_ = from + duration.count();
        busy_.add(from, busy_until_, busy_until_);
        const std::size_t bytes = static_cast<std::size_t>(t.bytes_h2d + t.bytes_d2h);
        if (bytes > largest_chunk_bytes_.load(std::memory_order_relaxed)) {
            largest_chunk_bytes_.store(bytes, std::memory_order_relaxed);
        }
        job->finish_gpu(r, t, index_);
        ++completed_;
        if (spec_.fail_after_chunks >= 0 && completed_ >= spec_.fail_after_chunks) retire(sim_error(SimError::DeviceFailed));
    }

    /// The device failed: everything it holds goes back to the CPU.
    void retire(std::error_code why) noexcept {
        healthy_.store(false, std::memory_order_relaxed);
        for (auto& h : jobs_) give_back_share(h.job, false, context_.sink, why);
        jobs_.clear();
    }

    /// Shutdown gave up on the hung chunk: its batch fails with DeviceFailed, and its memory
    /// stays allocated for good (a real device could still copy into it).
    void abandon() noexcept {
        healthy_.store(false, std::memory_order_relaxed);
        InFlight h = std::move(hung_);
        hung_ = {};
        h.job->abandon_memory();
        h.job->skip(h.range, ExecError::DeviceFailed);
    }

    const unsigned index_;
    const SimulatedDevice& spec_;
    const BackendContext context_;
    std::atomic<bool> healthy_{true};
    BusyTime busy_;  // written by the actor, read by metrics()
    std::atomic<std::size_t> largest_chunk_bytes_{0};
    // Actor-thread state.
    std::deque<Held> jobs_;
    InFlight hung_;
    long completed_ = 0;
    std::chrono::nanoseconds timeline_{0};
    std::int64_t busy_until_ = 0;  // steady-clock ns at which the last modelled chunk ends
    std::optional<std::chrono::steady_clock::time_point> stop_seen_;
    std::unique_ptr<actors::Actor<SimMessage>> actor_;
};

class SimBackend final : public DeviceBackend {
public:
    explicit SimBackend(const BackendContext& context)
        : pinned_{std::make_shared<BlockCache<HeapUpstream>>(context.config.pinned_cache_bytes, HeapUpstream{})} {
        const actors::ActorOptions options{64, actors::SpinPolicy{std::chrono::microseconds{50}}};
        const auto& specs = context.config.simulated;
        for (std::size_t i = 0; i < specs.size(); ++i) {
            devices_.push_back(std::make_unique<SimDevice>(static_cast<unsigned>(i), specs[i], context));
        }
        for (auto& d : devices_) d->start(options);
    }
    ~SimBackend() override { stop(); }

    std::size_t device_count() const noexcept override {
        std::size_t n = 0;
        for (const auto& d : devices_) n += d->healthy();
        return n;
    }
    std::vector<DeviceInfo> devices() const override {
        std::vector<DeviceInfo> out;
        for (std::size_t i = 0; i < devices_.size(); ++i) {
            DeviceInfo info;
            info.index = static_cast<int>(i);
            info.name = devices_[i]->spec().name;
            info.healthy = devices_[i]->healthy();
            out.push_back(std::move(info));
        }
        return out;
    }
    std::size_t size() const noexcept override { return devices_.size(); }
    bool healthy(std::size_t d) const noexcept override { return d < devices_.size() && devices_[d]->healthy(); }
    void run(std::size_t d, std::shared_ptr<JobCore> job, std::size_t chunk) noexcept override {
        devices_[d]->send(SimMessage{std::move(job), chunk});
    }
    void stop() override {
        for (auto& d : devices_) d->stop();
    }
    std::shared_ptr<std::pmr::memory_resource> pinned_memory() noexcept override { return pinned_; }
    std::vector<GpuChunkTrace> trace() const override { return {}; }
    DeviceUsage usage(std::size_t d) const noexcept override { return d < devices_.size() ? devices_[d]->usage() : DeviceUsage{}; }
    void orphan_memory() noexcept override {
        pinned_->trim();
        keep_until_exit(pinned_);
    }

private:
    std::shared_ptr<BlockCache<HeapUpstream>> pinned_;  // plays the part of page-locked memory
    std::vector<std::unique_ptr<SimDevice>> devices_;
};

}  // namespace

std::unique_ptr<DeviceBackend> make_simulated_backend(const BackendContext& context) {
    return std::make_unique<SimBackend>(context);
}

}  // namespace tandem::detail
