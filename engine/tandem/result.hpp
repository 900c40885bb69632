#pragma once
/// \file
/// What a batch gives back: per-task results in task order, and how the batch ran.

#include <tandem/task.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iterator>
#include <memory>
#include <memory_resource>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace tandem {

/// Where a batch ran.
enum class DeviceKind : std::uint8_t {
    Cpu,     ///< every task ran on CPU workers
    Gpu,     ///< every task ran on GPUs
    Hybrid,  ///< some tasks ran on each
};

/// A readable name: "cpu", "gpu", "hybrid".
constexpr const char* to_string(DeviceKind kind) noexcept {
    switch (kind) {
        case DeviceKind::Cpu: return "cpu";
        case DeviceKind::Gpu: return "gpu";
        case DeviceKind::Hybrid: return "hybrid";
    }
    return "?";
}

/// Why a batch ran where it did.
enum class PlacementReason : std::uint8_t {
    /// No device could take it: no device, an op without a kernel, or every device retired.
    NoDevice,
    /// An op without CPU code: only the devices can run it.
    DevicesOnly,
    /// The fixed `GpuConfig::threshold_tasks` decided.
    Threshold,
    /// The performance models decided: the earliest predicted completion.
    Model,
    /// A device's model has too few samples for this op: the batch (or part of it) went there
    /// to measure it.
    Exploring,
};

/// A readable name: "no device", "devices only", "threshold", "model", "exploring".
constexpr const char* to_string(PlacementReason reason) noexcept {
    switch (reason) {
        case PlacementReason::NoDevice: return "no device";
        case PlacementReason::DevicesOnly: return "devices only";
        case PlacementReason::Threshold: return "threshold";
        case PlacementReason::Model: return "model";
        case PlacementReason::Exploring: return "exploring";
    }
    return "?";
}

/// How the scheduler placed a batch, and what it predicted.
struct PlacementInfo {
    PlacementReason reason = PlacementReason::NoDevice;
    /// Every model the decision used had `ModelConfig::min_samples` samples.
    bool calibrated = false;
    /// Predicted time to completion from the moment of the decision, counting the work queued
    /// ahead: on the CPU workers alone, on the devices alone, and for the plan chosen (0 where
    /// no prediction was made).
    std::chrono::nanoseconds predicted_cpu{0};
    std::chrono::nanoseconds predicted_devices{0};
    std::chrono::nanoseconds predicted{0};
    /// Tasks the plan gave the CPU workers (the devices got the rest; fallbacks not counted).
    /// For a batch whose tasks differ in cost the plan gives cost, not tasks: this is then the
    /// CPU's planned cost divided by the batch's average task cost.
    std::uint64_t planned_cpu_tasks = 0;
    /// The cost (`Task::est_cost` summed, 0 counted as 1) the plan gave the CPU workers; the
    /// devices got the rest.
    std::uint64_t planned_cpu_cost = 0;
};

/// How one rank of a cluster ran its part of a batch (`ExecStats::ranks`; see
/// <tandem/cluster.hpp>).
struct RankStats {
    /// The rank (its index in the cluster's communicator).
    int rank = 0;
    /// Tasks the rank ran for this batch (its share, plus any it reran for a failed rank), and
    /// of those, how many its CPU workers and its GPUs ran.
    std::uint64_t tasks = 0;
    std::uint64_t cpu_tasks = 0;
    std::uint64_t gpu_tasks = 0;
    /// Slices the leader gave the rank, and the pieces they travelled in.
    std::uint32_t slices = 0;
    std::uint32_t pieces = 0;
    /// The rank's own time on its slices, measured on the rank: from its first piece reaching
    /// its engine to its last one done (a rank slowed by `ClusterConfig::slowdown` included).
    std::chrono::nanoseconds time{0};
    /// On the leader: from sending the rank its slice to receiving its last result (the rank's
    /// time plus what the transfers added).
    std::chrono::nanoseconds round_trip{0};
    /// Payload bytes the leader sent the rank, and result bytes the rank sent back (0 for the
    /// leader itself).
    std::uint64_t bytes_sent = 0;
    std::uint64_t bytes_received = 0;
    /// The rank missed its deadline on this batch: its unfinished tasks ran elsewhere (they are
    /// counted there, not here).
    bool failed = false;
};

/// How a batch ran. Times are sums over chunks unless named otherwise.
struct ExecStats {
    /// Where the tasks ran.
    DeviceKind device = DeviceKind::Cpu;
    /// Tasks in the batch.
    std::uint64_t tasks = 0;
    /// Tasks run by CPU workers (fallbacks included).
    std::uint64_t cpu_tasks = 0;
    /// Tasks run on GPUs.
    std::uint64_t gpu_tasks = 0;
    /// The cost (`Task::est_cost` summed, 0 counted as 1) of the tasks run by CPU workers
    /// (fallbacks included) and on GPUs. Exact, except for a batch whose costs could sum
    /// beyond 2^52: the engine then counts its costs with their low bits dropped.
    std::uint64_t cpu_cost = 0;
    std::uint64_t gpu_cost = 0;
    /// Tasks first given to a GPU that then ran on the CPU.
    std::uint64_t fallback_tasks = 0;
    /// Tasks whose function threw (their results carry the error).
    std::uint64_t failed_tasks = 0;
    /// Tasks never run because the batch was cancelled or the engine shut down.
    std::uint64_t skipped_tasks = 0;
    /// Chunks run on CPU workers and on GPU streams.
    std::uint32_t cpu_chunks = 0;
    std::uint32_t gpu_chunks = 0;
    /// Devices that ran at least one chunk of the batch.
    std::uint32_t gpu_devices_used = 0;
    /// Why work fell back to the CPU (empty when nothing did).
    std::string fallback_reason;
    /// From submit to the first chunk starting.
    std::chrono::nanoseconds queue_wait{0};
    /// CPU workers' time in the op, summed over chunks.
    std::chrono::nanoseconds cpu_time{0};
    /// GPU time of every chunk, first copy to last, summed (measured with CUDA events).
    std::chrono::nanoseconds gpu_time{0};
    /// The same split by stage, summed over the chunks of at least 256 KiB (smaller chunks
    /// skip the two inner events: at 4 KiB they would add a tenth to the round trip).
    std::chrono::nanoseconds h2d_time{0};
    std::chrono::nanoseconds kernel_time{0};
    std::chrono::nanoseconds d2h_time{0};
    /// Bytes copied host→device and device→host.
    std::uint64_t bytes_h2d = 0;
    std::uint64_t bytes_d2h = 0;
    /// `gpu_time` divided by the GPUs' busy span; above 1 when chunks overlapped on
    /// several streams (0 when no GPU ran).
    double overlap_ratio = 0.0;
    /// From submit to completion.
    std::chrono::nanoseconds wall_time{0};
    /// From submit to the end of the last chunk run on the CPU (by the workers, a caller that
    /// helps, or a rerun of a GPU's failed chunk), and of the last chunk a GPU ran (0 where
    /// that side ran none): which side the batch waited for, against `placement.predicted`.
    std::chrono::nanoseconds cpu_done{0};
    std::chrono::nanoseconds gpu_done{0};
    /// From the first chunk run on the CPU starting to the last ending (0 when none ran): with
    /// `cpu_time`, how well the batch kept its workers busy.
    std::chrono::nanoseconds cpu_span{0};
    /// Why the batch ran where it did.
    PlacementInfo placement{};
    /// A cluster batch (`Cluster::submit`): one entry per rank that took part, in rank order.
    /// Empty for a batch of one engine (an empty vector allocates nothing).
    std::vector<RankStats> ranks{};
};

/// Why one task failed.
struct TaskError {
    /// Position of the task in its batch.
    std::size_t index = 0;
    /// The task's id.
    std::uint64_t id = 0;
    /// `ExecError::TaskFailed` for a throwing function.
    std::error_code code;
    /// What the function threw (null if it was not an exception).
    std::exception_ptr exception;
    /// The exception's `what()`, or a description.
    std::string message;
};

/// One task's result, viewed in place inside `Results` (no copy of the output).
template <class R>
struct TaskResult {
    /// The task's id.
    std::uint64_t id;
    /// The task's output (a default-constructed R when the task failed).
    R& output;
    /// Null when the task succeeded; else why it failed.
    const TaskError* error = nullptr;
    /// True when the task succeeded.
    bool ok() const noexcept { return error == nullptr; }
};

/// Storage of the caller's for a batch's outputs (`Engine::submit` with outputs): `slots`,
/// one per task, which the engine writes in place of storage of its own. `owner` keeps them
/// alive for as long as the batch's results refer to them; `memory` names where they live
/// (`Engine::pinned_memory()` when they are page-locked memory from it, so a GPU copies
/// results straight into them; null for any other memory). The slots must not overlap the
/// batch's payloads: a task that fails on a GPU is run again on the CPU from its payload.
template <class R>
struct OutputSpan {
    std::span<R> slots;
    std::shared_ptr<void> owner;
    std::pmr::memory_resource* memory = nullptr;
};

namespace detail {

/// The caller's storage (`OutputSpan`) posing as a memory resource, so that an `OutputBuffer`
/// takes it as its own: the one allocation it serves is that storage, and nothing is freed.
class OutputWindow final : public std::pmr::memory_resource {
public:
    OutputWindow(void* data, std::size_t bytes, std::shared_ptr<void> owner, std::pmr::memory_resource* lives_in) noexcept
        : data_{data}, bytes_{bytes}, owner_{std::move(owner)}, lives_in_{lives_in} {}
    /// Where the storage really lives (null: not known).
    std::pmr::memory_resource* lives_in() const noexcept { return lives_in_; }

private:
    void* do_allocate(std::size_t bytes, std::size_t) override {
        if (bytes > bytes_ || taken_) throw std::bad_alloc{};
        taken_ = true;
        return data_;
    }
    void do_deallocate(void*, std::size_t, std::size_t) noexcept override {}
    bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }

    void* const data_;
    const std::size_t bytes_;
    const std::shared_ptr<void> owner_;
    std::pmr::memory_resource* const lives_in_;
    bool taken_ = false;
};

/// The memory an output buffer's storage lives in, seen through an `OutputWindow`.
inline std::pmr::memory_resource* storage_memory(std::pmr::memory_resource* m) noexcept {
    if (auto* w = dynamic_cast<OutputWindow*>(m)) return w->lives_in();
    return m;
}

/// Raw, uninitialised storage for `n` outputs; each slot is constructed exactly once by the
/// engine (by the op, or default-constructed when the task failed or was skipped) before the
/// batch completes, and all are destroyed with the buffer.
template <class R>
class OutputBuffer {
public:
    OutputBuffer() = default;
    /// Storage for `n` outputs from `memory` (the heap when null). The buffer keeps `memory`
    /// alive, so results may outlive the engine whose page-locked memory holds them.
    explicit OutputBuffer(std::size_t n, std::shared_ptr<std::pmr::memory_resource> memory = nullptr)
        : memory_{std::move(memory)}, size_{n} {
        if (n == 0) return;
        data_ = static_cast<R*>(memory_ ? memory_->allocate(n * sizeof(R), alignof(R))
                                        : ::operator new(n * sizeof(R), std::align_val_t{alignof(R)}));
    }
    OutputBuffer(OutputBuffer&& other) noexcept
        : memory_{std::move(other.memory_)}, data_{std::exchange(other.data_, nullptr)},
          size_{std::exchange(other.size_, 0)}, constructed_{std::exchange(other.constructed_, false)} {}
    OutputBuffer& operator=(OutputBuffer&& other) noexcept {
        if (this != &other) {
            release();
            memory_ = std::move(other.memory_);
            data_ = std::exchange(other.data_, nullptr);
            size_ = std::exchange(other.size_, 0);
            constructed_ = std::exchange(other.constructed_, false);
        }
        return *this;
    }
    ~OutputBuffer() { release(); }

    R* data() noexcept { return data_; }
    const R* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    /// Called once every slot holds an object: from then on the destructor destroys them.
    void mark_constructed() noexcept { constructed_ = true; }
    /// The resource the storage came from (null: the heap).
    std::pmr::memory_resource* memory() const noexcept { return memory_.get(); }

private:
    void release() noexcept {
        if (!data_) return;
        if (constructed_) std::destroy_n(data_, size_);
        if (memory_) {
            memory_->deallocate(data_, size_ * sizeof(R), alignof(R));
        } else {
            ::operator delete(data_, std::align_val_t{alignof(R)});
        }
        data_ = nullptr;
    }

    std::shared_ptr<std::pmr::memory_resource> memory_;
    R* data_ = nullptr;
    std::size_t size_ = 0;
    bool constructed_ = false;
};

}  // namespace detail

/// The results of a batch, in task order. `results[i]` views task i's id, output and error.
template <class R>
class Results {
public:
    using value_type = TaskResult<R>;

    Results() = default;
    /// Made by the engine when a batch completes.
    Results(IdColumn ids, detail::OutputBuffer<R> outputs, std::vector<TaskError> errors)
        : ids_{std::move(ids)}, outputs_{std::move(outputs)}, errors_{std::move(errors)} {
        std::sort(errors_.begin(), errors_.end(),
                  [](const TaskError& a, const TaskError& b) { return a.index < b.index; });
    }

    /// Number of results (the batch's size).
    std::size_t size() const noexcept { return outputs_.size(); }
    /// True for an empty result set.
    bool empty() const noexcept { return size() == 0; }

    /// Task i's result.
    TaskResult<R> operator[](std::size_t i) noexcept { return {ids_[i], outputs_.data()[i], error_at(i)}; }
    /// Task i's result, read-only.
    TaskResult<const R> operator[](std::size_t i) const noexcept {
        return {ids_[i], outputs_.data()[i], error_at(i)};
    }

    /// Every output, contiguous, in task order.
    std::span<R> outputs() noexcept { return {outputs_.data(), outputs_.size()}; }
    std::span<const R> outputs() const noexcept { return {outputs_.data(), outputs_.size()}; }
    /// The failed tasks, by position.
    std::span<const TaskError> errors() const noexcept { return errors_; }
    /// The task ids, in task order.
    const IdColumn& ids() const noexcept { return ids_; }
    /// True when every task succeeded.
    bool all_ok() const noexcept { return errors_.empty(); }

    /// Iterates `TaskResult` views in task order, with every range-for form:
    /// `for (auto& t : results)`, `const auto&`, `auto&&` and `auto` (a copy of the view).
    /// The outputs live in one contiguous column, so there is no stored `TaskResult` to point
    /// at: the iterator builds the current task's view inside itself and hands out a reference
    /// to it. That reference is valid until the iterator moves on or is destroyed — a loop's
    /// body, not beyond: copy the view (`auto`) or keep the index to hold on to a result. The
    /// view is const (its id and error are the task's), but its `output` is a reference into
    /// the results, so `t.output = x` through a non-const `Results` writes the result itself.
    /// Since two equal iterators hand out different objects, this is an input iterator, like
    /// `std::istream_iterator`; `outputs()` (contiguous), `ids()` and `operator[]` serve the
    /// algorithms that need more.
    template <bool Const>
    class basic_iterator {
    public:
        using Owner = std::conditional_t<Const, const Results, Results>;
        using value_type = TaskResult<std::conditional_t<Const, const R, R>>;
        using reference = const value_type&;
        using pointer = const value_type*;
        using difference_type = std::ptrdiff_t;
        using iterator_category = std::input_iterator_tag;
        using iterator_concept = std::input_iterator_tag;

        basic_iterator() = default;
        basic_iterator(Owner* owner, std::size_t i) noexcept : owner_{owner}, i_{i} { load(); }
        basic_iterator(const basic_iterator& other) noexcept : owner_{other.owner_}, i_{other.i_} { load(); }
        basic_iterator& operator=(const basic_iterator& other) noexcept {
            owner_ = other.owner_;
            i_ = other.i_;
            load();
            return *this;
        }
        ~basic_iterator() = default;

        reference operator*() const noexcept { return *current_; }
        pointer operator->() const noexcept { return &*current_; }
        basic_iterator& operator++() noexcept {
            ++i_;
            load();
            return *this;
        }
        basic_iterator operator++(int) noexcept {
            basic_iterator copy = *this;
            ++*this;
            return copy;
        }
        bool operator==(const basic_iterator& other) const noexcept { return i_ == other.i_; }

    private:
        // TaskResult holds a reference, so it cannot be assigned: each position constructs
        // a new view in place (none at the end, where there is no task to view).
        void load() noexcept {
            if (owner_ != nullptr && i_ < owner_->size()) {
                current_.emplace((*owner_)[i_]);
            } else {
                current_.reset();
            }
        }

        Owner* owner_ = nullptr;
        std::size_t i_ = 0;
        std::optional<value_type> current_;
    };
    using iterator = basic_iterator<false>;
    using const_iterator = basic_iterator<true>;
    iterator begin() noexcept { return {this, 0}; }
    iterator end() noexcept { return {this, size()}; }
    const_iterator begin() const noexcept { return {this, 0}; }
    const_iterator end() const noexcept { return {this, size()}; }

private:
    const TaskError* error_at(std::size_t i) const noexcept {
        if (errors_.empty()) return nullptr;
        auto it = std::lower_bound(errors_.begin(), errors_.end(), i,
                                   [](const TaskError& e, std::size_t index) { return e.index < index; });
        return it != errors_.end() && it->index == i ? &*it : nullptr;
    }

    IdColumn ids_;
    detail::OutputBuffer<R> outputs_;
    std::vector<TaskError> errors_;
};

/// A completed batch: its results and how it ran.
template <class R>
struct BatchResult {
    Results<R> results;
    ExecStats stats;
};

}  // namespace tandem
