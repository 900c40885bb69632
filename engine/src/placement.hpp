#pragma once
// Internal (scheduling policy): where each batch runs and how it is split. Each op has a
// performance model per device (and for the CPU workers), learned from every batch that
// completes; a batch goes where its predicted completion is earliest, counting the work
// already queued on each device and on the workers, and a hybrid batch is cut so that every
// participant finishes together. The mechanism (scheduler.cpp, the device actors) carries
// the plan out; nothing here sends a message.

#include "cost_model.hpp"
#include "device_backend.hpp"

#include <tandem/detail/job.hpp>
#include <tandem/engine.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace tandem::detail {

/// Predicted work queued on each participant, in nanoseconds of its busy time (CPU: worker
/// time summed over workers). Added when a plan is made, taken off when its batch completes.
struct QueuedWork {
    explicit QueuedWork(std::size_t devices)
        : device_ns(new std::atomic<double>[devices]), start_ns(new std::atomic<double>[devices]),
          start_samples(new std::atomic<std::uint32_t>[devices]), devices(devices) {
        for (std::size_t d = 0; d < devices; ++d) {
            device_ns[d].store(0, std::memory_order_relaxed);
            start_ns[d].store(-1, std::memory_order_relaxed);  // no sample yet
            start_samples[d].store(0, std::memory_order_relaxed);
        }
    }
    alignas(64) std::atomic<double> cpu_ns{0};
    std::unique_ptr<std::atomic<double>[]> device_ns;
    /// Per device, whatever the op: how long after the plan hands a batch over its share starts
    /// on the device when nothing is queued there (the send to the device's actor, the actor
    /// waking from its park; a model file from a build that sent device plans through the
    /// scheduler actor includes that hop too, until new samples replace it). A device's curve
    /// measures its share from the share's start, so this is what a batch waits on top of it:
    /// 8.5-60 µs on H200 hosts, as long as a whole 256-task GPU batch. Learned from shares of
    /// at most 64 Ki tasks that reach an idle device (`GpuChunkTimes::waited`).
    std::unique_ptr<std::atomic<double>[]> start_ns;
    std::unique_ptr<std::atomic<std::uint32_t>[]> start_samples;
    const std::size_t devices;

    /// Device `d`'s start delay as placement adds it to the device's lane (0 before a sample).
    double start_of(std::size_t d) const noexcept {
        const double v = start_ns[d].load(std::memory_order_relaxed);
        return v > 0 ? v : 0;
    }
    /// Feeds device `d`'s start delay one sample: the least of the first four samples (one
    /// slow first start does not keep small batches off the device, which would starve it of
    /// the samples that correct it), then an average with forgetting (an eighth per sample), a
    /// sample above twice the average (or 1 µs above it, if more) counted as that (a
    /// descheduled thread's millisecond does not make the device look slow to start).
    void learn_start(std::size_t d, double ns) noexcept;
};

/// One op's models: the CPU workers' line and, per device, one line for pageable and one for
/// page-locked payloads. It is the observer of every batch of the op that the placement
/// planned: each completion takes the batch's queued work off and feeds the samples in.
class OpModel final : public JobObserver {
public:
    /// `workers`: the engine's CPU workers; `learn_stretch`: learn `cpu_stretch` (off when CPU
    /// chunks report modelled times, which their wall-clock span cannot be compared with).
    OpModel(std::string name, std::size_t devices, const ModelConfig& config, std::shared_ptr<QueuedWork> queued,
            std::size_t workers = 1, bool learn_stretch = false);

    const std::string& name() const noexcept { return name_; }
    std::size_t devices() const noexcept { return devices_; }
    PublishedCost& cpu() noexcept { return cpu_; }
    const PublishedCost& cpu() const noexcept { return cpu_; }
    PublishedCost& device(std::size_t d, bool pinned) noexcept { return gpu_[d * 2 + (pinned ? 1 : 0)]; }
    const PublishedCost& device(std::size_t d, bool pinned) const noexcept { return gpu_[d * 2 + (pinned ? 1 : 0)]; }

    /// Counts small batches while a device explores (every other one goes there).
    std::atomic<std::uint64_t> explore_tick{0};
    /// Count small samples once a curve is calibrated (one in eight, one in four is taken).
    std::atomic<std::uint64_t> cpu_sample_tick{0}, device_sample_tick{0};
    /// Small batches sent to a device to measure a size it never ran (bounded).
    std::atomic<std::uint32_t> redirects{0};
    /// Batches whose share on device d (pageable/pinned) all fell back to the CPU. A device that
    /// failed `min_samples` times without one sample is not offered this op's batches again.
    std::atomic<std::uint32_t>& failures(std::size_t d, bool pinned) noexcept { return failures_[d * 2 + (pinned ? 1 : 0)]; }
    bool unusable(std::size_t d, bool pinned, std::size_t min_samples) noexcept {
        return failures(d, pinned).load(std::memory_order_relaxed) >= min_samples &&
               device(d, pinned).samples.load(std::memory_order_relaxed) == 0;
    }

    void on_share_done(const JobCore& job, std::size_t lane) noexcept override;
    void on_complete(const JobCore& job, const ExecStats& stats) noexcept override;

    /// How much longer the CPU workers take for a batch spread over all of them than its
    /// worker time (the curve's) divided among them: the span from the batch's first chunk
    /// starting to its last ending, over worker time / workers. Workers are not all busy to the
    /// end (the last chunks end at different times), wake late, or lose their core to other
    /// threads (a device's actor staging a co-running share): on 16-core H200 hosts 15 workers
    /// were busy for 93-95% of a large batch's span, and this was learned at 1.05-1.11. 1 until
    /// learned; at least 1.
    double cpu_stretch() const noexcept {
        if (!learn_stretch_) return 1.0;  // off: not counted, even if a model file holds one
        const double s = stretch_.load(std::memory_order_relaxed);
        return s > 1 ? s : 1.0;
    }
    /// Feeds `cpu_stretch` one sample (span / (worker time / workers)), clamped to [1, most]:
    /// the first counts as at most 1.5, then an average with forgetting (an eighth per sample).
    /// `most` is 4, and below 1 + 0.9 · (workers − 1): a stretch that made every added worker
    /// cost more than it brings would narrow every batch to one worker, and no batch spread
    /// over every worker would come to correct it.
    void learn_stretch(double ratio) noexcept;
    /// Sets it from the model file (ignored unless in [1, most]).
    void restore_stretch(double stretch) noexcept;
    /// The most it can be for this engine's worker count.
    double most_stretch() const noexcept {
        return std::min(4.0, 1 + 0.9 * static_cast<double>(workers_ - 1));
    }
    /// Whether samples of it are taken at all.
    bool learns_stretch() const noexcept { return learn_stretch_; }
    /// What the model file stores of it (0: nothing learned).
    double stretch_state() const noexcept { return stretch_.load(std::memory_order_relaxed); }

    /// Feeds one sample in (tests and the model file use the same path as completions).
    void add_cpu(double tasks, double worker_ns) noexcept;
    void add_device(std::size_t d, bool pinned, double tasks, double ns) noexcept;

    /// The sums, for the model file (under the lock).
    std::vector<CostLine::State> states() const;
    bool restore(std::size_t line, const CostLine::State& s);  // line: 0 cpu, 1 + d*2 + pinned
    /// A snapshot of the lines for `Engine::op_models` (without thresholds).
    OpModelInfo info(const std::vector<DeviceInfo>& devices) const;

private:
    const std::string name_;
    const std::size_t devices_;
    const ModelConfig& config_;
    const std::shared_ptr<QueuedWork> queued_;
    const std::size_t workers_;
    const bool learn_stretch_;
    std::atomic<double> stretch_{0};  // 0: no sample yet
    mutable std::mutex mutex_;  // guards the lines' fitting state
    PublishedCost cpu_{true};
    std::unique_ptr<PublishedCost[]> gpu_;
    std::unique_ptr<std::atomic<std::uint32_t>[]> failures_;
};

/// The placement policy of one engine. Thread-safe: submitting threads (the direct path) and
/// the scheduler both place batches.
class Placement {
public:
    Placement(const EngineConfig& config, std::size_t workers, DeviceBackend* backend);

    /// True when a batch of this job could go to a device at all (a device is healthy and the
    /// op has a kernel); otherwise it runs on the CPU and needs no plan.
    bool devices_possible(JobCore& job) const noexcept;

    /// Plans `job` (not yet visible to any other thread) and writes the plan onto it: the
    /// record (`plan()`), the CPU's quota and chunk, each device's share and chunk, the
    /// observer, and the queued work it adds. May throw (allocation): nothing is then queued.
    void place(JobCore& job);

    /// The models, with each op's learned thresholds.
    std::vector<OpModelInfo> models() const;
    /// One line of a model file.
    struct Record {
        /// A cost line of an op; an op's CPU stretch (`value`; `line`: the worker count it was
        /// measured over); a device's start delay (`line`: the device, `value`: nanoseconds; no op).
        enum class Kind { Line, Stretch, Start } kind = Kind::Line;
        std::string op;
        std::size_t line = 0;  // 0: the CPU; 1 + 2·device + pinned
        CostLine::State state;
        double value = 0;
    };
    /// Reads a model file; throws `std::runtime_error` naming the file and line when it exists
    /// but is not a valid model file. A missing file reads as empty (the first run).
    static std::vector<Record> read(const std::string& path);
    /// Loads what `read` returned (lines of devices this machine lacks are ignored).
    void restore(const std::vector<Record>& records);
    void save(const std::string& path) const;

    /// The CPU chunk for a batch of `n` tasks on the CPU alone (tasks; for a batch whose costs
    /// differ, the job turns it into the cost of that many average tasks).
    std::size_t cpu_chunk_for(std::size_t n) const noexcept;
    /// Plans `job` on the CPU alone: the whole batch is the CPU's share, cut by `cpu_chunk_for`.
    /// (The scheduler's too, for a batch no device can take.)
    void plan_cpu_only(JobCore& job) noexcept;

    /// The model of an op, created on first use.
    std::shared_ptr<OpModel> model_for(const std::string& op_name);
    /// The same, remembering per thread the op it placed last.
    std::shared_ptr<OpModel> cached_model_for(const JobCore& job);

private:
    /// Fills the plan for a batch that the models decide.
    /// `cpu_alone`: the CPU alone is one of the choices; `hybrid`: the CPU may take a share
    /// next to the devices.
    void place_by_model(JobCore& job, OpModel& model, bool pinned, const std::vector<std::size_t>& devices,
                        PlacementReason reason, bool cpu_alone, bool hybrid);
    /// While some participant's model is not calibrated: each uncalibrated one gets a probe
    /// (an eighth of the batch, shared), the calibrated ones the rest by their models; with
    /// none calibrated, equal shares.
    void place_exploring(JobCore& job, OpModel& model, bool pinned, const std::vector<std::size_t>& devices, bool cpu);
    /// The fixed threshold's plan without calibrated models: every participant claims freely
    /// (or the CPU takes `GpuConfig::cpu_share`).
    void place_freely(JobCore& job, OpModel& model, bool pinned, const std::vector<std::size_t>& devices, bool cpu,
                      PlacementReason reason);
    /// Writes the shares (lane 0: the CPU, then `devices` in order) onto the job and queues
    /// their predicted work.
    void apply_shares(JobCore& job, OpModel& model, bool pinned, const std::vector<std::size_t>& devices,
                      const std::vector<std::size_t>& shares);
    /// `cpu_work`: the batch's work on the CPU when the caller worked it out already (a
    /// CpuWork, placement.cpp's own type).
    void place_on_cpu(JobCore& job, OpModel* model, PlacementReason reason, const void* cpu_work = nullptr);
    /// Marks the plan as a sample of the CPU's stretch when it can be one (`OpModel::on_complete`).
    void note_stretch_probe(JobCore& job, const OpModel& model) const noexcept;
    /// Limits a batch the models put on the CPU alone to the workers it pays to engage, and
    /// cuts its chunks for them (`cpu_work`: the batch's CpuWork).
    void narrow_cpu(JobCore& job, const void* cpu_work) const noexcept;
    /// Records the CPU's share (in share units) in the job's plan: the share itself, and the
    /// tasks and cost it stands for in `PlacementInfo`.
    static void set_cpu_plan(JobCore& job, std::uint64_t share) noexcept;
    /// Takes a CPU-only plan's queued work back (before the job is placed otherwise).
    void undo_cpu_plan(JobCore& job) noexcept;
    /// A device's chunk for its share of `share` tasks of `in_size` bytes each.
    std::size_t gpu_chunk_for(std::size_t share, std::size_t in_size) const noexcept;
    /// The smallest batch the devices would take a share of on an idle engine.
    std::size_t threshold(const OpModel& model, bool pinned) const;

    const EngineConfig& config_;
    const std::size_t workers_;
    DeviceBackend* const backend_;
    const std::shared_ptr<QueuedWork> queued_;
    std::pmr::memory_resource* const pinned_memory_;  // the backend's page-locked memory
    const std::uint64_t id_;  // unique per engine, for the per-thread model cache
    mutable std::shared_mutex models_mutex_;
    std::unordered_map<std::string, std::shared_ptr<OpModel>> models_;
};

/// One participant as the split sees it: the work queued on it (ns) and its learned curve;
/// for the CPU workers (a curve of worker time), what engaging one more worker costs a batch
/// (`ModelConfig::cpu_dispatch_cost`).
struct LaneCost {
    double queued = 0;
    CostCurve curve;
    double dispatch_ns = 0;
    /// The CPU workers: how much longer a share spread over every worker takes than its
    /// worker time divided among them (`OpModel::cpu_stretch`; 1 for a device).
    double stretch = 1;
};

/// Cuts `n` cost units between the CPU workers (`cpu`, shared by `workers`; null: they take no
/// part) and `devices` so that every lane that takes part finishes together by its curve: the
/// least finish time by which the lanes together get through `n` (bisection), each lane's
/// share what its curve, inverted, finishes by then. A curve is not a line: with kinks (a
/// device whose copies speed up, then saturate), linearizing each lane at its share and
/// water-filling the lines missed the optimum by 15-20%. `shares` gets each lane's cost (the
/// CPU first when `cpu`; `task_cost`: the batch's average cost of a task); returns the finish
/// of the slowest lane. Exposed for tests.
double fill_curves(const LaneCost* cpu, const std::vector<LaneCost>& devices, std::size_t workers, double n,
                   double task_cost, std::vector<double>& shares);

}  // namespace tandem::detail
