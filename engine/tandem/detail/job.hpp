#pragma once
/// \file
/// A batch in flight (engine-internal, installed because the templates need it).
///
/// One `BatchJob` per submitted batch holds the payloads, the preallocated outputs and every
/// counter. Workers claim ranges of it through one atomic cursor (per chunk, never per task),
/// write outputs in place, and the worker whose range brings `remaining_` to zero completes it.

#include <tandem/error.hpp>
#include <tandem/op.hpp>
#include <tandem/result.hpp>
#include <tandem/task.hpp>
#include <tandem/detail/unique_function.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

namespace tandem::detail {

/// A half-open range of task positions `[begin, end)`.
struct Range {
    std::size_t begin = 0;
    std::size_t end = 0;
    std::size_t size() const noexcept { return end - begin; }
    bool empty() const noexcept { return begin >= end; }
};

/// Where a chunk ran.
enum class Where : std::uint8_t { Cpu, Gpu };

/// What a GPU stream actor needs to run a chunk: raw columns and the launcher.
struct GpuView {
    const void* in = nullptr;          ///< payload column
    std::size_t in_size = 0;           ///< bytes per payload
    void* out = nullptr;               ///< output column (raw storage)
    std::size_t out_size = 0;          ///< bytes per output
    const GpuLauncher* launcher = nullptr;  ///< null when the op has no GPU kernel
    std::pmr::memory_resource* payload_memory = nullptr;  ///< where the payloads live
    std::pmr::memory_resource* out_memory = nullptr;  ///< where the outputs live (null: the heap)
};

/// Stage times of one GPU chunk, measured with CUDA events.
struct GpuChunkTimes {
    std::chrono::nanoseconds total{0}, h2d{0}, kernel{0}, d2h{0};
    std::uint64_t bytes_h2d = 0, bytes_d2h = 0;
    /// Host clock at the chunk's first and last event (for the batch's GPU busy span).
    std::chrono::steady_clock::time_point start, end;
};

/// Measured speed of one op on each kind of device, learned from the batches that completed.
/// Written once per batch by the completing thread, read by the scheduler when it plans: both
/// rates are independent atomics (a torn pair costs one slightly-off split, nothing more).
struct SpeedModel {
    /// Tasks per second of one CPU worker (moving average; 0 until measured).
    std::atomic<double> cpu_rate{0};
    /// Tasks per second of one GPU, from issue to completion of its chunks (0 until measured).
    std::atomic<double> gpu_rate{0};

    static void blend(std::atomic<double>& rate, double sample) {
        const double old = rate.load(std::memory_order_relaxed);
        rate.store(old == 0 ? sample : 0.7 * old + 0.3 * sample, std::memory_order_relaxed);
    }

    /// Folds one completed batch into the averages. Tiny samples are skipped: their time is
    /// mostly fixed cost and would skew the rate.
    void record(const ExecStats& s, std::chrono::nanoseconds gpu_span) {
        if (s.cpu_tasks >= 1024 && s.cpu_time.count() > 0) {
            blend(cpu_rate, static_cast<double>(s.cpu_tasks) * 1e9 / static_cast<double>(s.cpu_time.count()));
        }
        if (s.gpu_tasks >= 65536 && gpu_span.count() > 0 && s.gpu_devices_used > 0) {
            blend(gpu_rate, static_cast<double>(s.gpu_tasks) * 1e9 / static_cast<double>(gpu_span.count()) /
                                s.gpu_devices_used);
        }
    }
};

/// Engine-wide counters a job reports into when it completes; shared by the engine and every
/// job, so a job completing on any thread never touches a destroyed engine.
///
/// Layout, for 1-task batches from many threads: admission is one atomic word (batches and
/// tasks in flight packed together, one add per submit and one subtract per completion); the
/// per-batch statistics are sharded, each thread adding to a cache line of its own, and summed
/// when read; the rare counters sit apart.
struct EngineShared {
    /// Batches in flight live in the top 20 bits of `inflight`, tasks in the low 44.
    static constexpr int batch_shift = 44;
    static constexpr std::uint64_t one_batch = std::uint64_t{1} << batch_shift;
    static constexpr std::uint64_t task_mask = one_batch - 1;
    static std::uint64_t batches_of(std::uint64_t v) noexcept { return v >> batch_shift; }
    static std::uint64_t tasks_of(std::uint64_t v) noexcept { return v & task_mask; }

    alignas(64) std::atomic<std::uint64_t> inflight{0};

    /// The hot counters of one group of threads.
    struct alignas(64) Shard {
        std::atomic<std::uint64_t> entering{0};  // submitters between the closed check and the send
        std::atomic<std::uint64_t> batches_submitted{0};
        std::atomic<std::uint64_t> batches_completed{0};
        std::atomic<std::uint64_t> tasks_completed{0};
        std::atomic<std::uint64_t> cpu_tasks{0};
        std::atomic<std::uint64_t> gpu_tasks{0};
    };
    static constexpr std::size_t shard_count = 32;
    std::array<Shard, shard_count> shards;

    /// This thread's shard (threads are dealt shards in turn as they first ask).
    Shard& mine() noexcept {
        static std::atomic<unsigned> next{0};
        thread_local const unsigned index = next.fetch_add(1, std::memory_order_relaxed) % shard_count;
        return shards[index];
    }
    /// Sum of one counter over every shard.
    std::uint64_t sum(std::atomic<std::uint64_t> Shard::*counter,
                      std::memory_order order = std::memory_order_relaxed) const noexcept {
        std::uint64_t total = 0;
        for (const Shard& s : shards) total += (s.*counter).load(order);
        return total;
    }

    alignas(64) std::atomic<std::uint64_t> batches_failed{0};
    std::atomic<std::uint64_t> cpu_fallback_count{0};
    std::atomic<std::uint64_t> task_failures{0};
    std::atomic<std::uint64_t> tasks_skipped{0};
    /// Wakes submitters waiting for room, and shutdown waiting for the last batch.
    alignas(64) std::mutex room_mutex;
    std::condition_variable room_cv;
    std::atomic<std::uint32_t> room_waiters{0};

    void wake_room_waiters() {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (room_waiters.load(std::memory_order_relaxed) != 0) {
            std::lock_guard lock{room_mutex};
            room_cv.notify_all();
        }
    }
};

/// The type-independent part of a batch in flight.
class JobCore : public TaskErrorSink {
public:
    using Clock = std::chrono::steady_clock;

    JobCore(std::size_t size, std::uint64_t total_cost, const void* op_key, std::string op_name)
        : size_{size}, total_cost_{total_cost}, op_key_{op_key}, op_name_{std::move(op_name)},
          remaining_{size}, submitted_{Clock::now()} {}
    JobCore(const JobCore&) = delete;
    JobCore& operator=(const JobCore&) = delete;
    virtual ~JobCore() = default;

    std::size_t size() const noexcept { return size_; }
    std::uint64_t total_cost() const noexcept { return total_cost_; }
    const void* op_key() const noexcept { return op_key_; }
    const std::string& op_name() const noexcept { return op_name_; }
    virtual bool has_cpu() const noexcept = 0;

    /// Ties the job to the engine's counters (set once, before the job is dispatched).
    void attach(std::shared_ptr<EngineShared> engine) { engine_ = std::move(engine); }

    // ---- claiming and running ------------------------------------------------------------

    /// Claims up to `max` unclaimed tasks; an empty range once none are left.
    Range claim(std::size_t max) noexcept {
        const std::size_t begin = cursor_.fetch_add(max, std::memory_order_relaxed);
        if (begin >= size_) return {};
        return {begin, std::min(begin + max, size_)};
    }
    /// Tasks not yet claimed (racy estimate).
    std::size_t unclaimed() const noexcept {
        const std::size_t c = cursor_.load(std::memory_order_relaxed);
        return c >= size_ ? 0 : size_ - c;
    }
    /// Claims up to `max` tasks for a CPU worker, within the CPU's quota of this batch.
    Range claim_cpu(std::size_t max) noexcept {
        if (cpu_quota_ >= size_) return claim(max);
        const std::size_t before = cpu_claimed_.fetch_add(max, std::memory_order_relaxed);
        if (before >= cpu_quota_) return {};
        return claim(std::min(max, cpu_quota_ - before));
    }
    /// Caps the tasks CPU workers take from the shared cursor (the GPUs take the rest).
    void set_cpu_quota(std::size_t n) noexcept { cpu_quota_ = n; }
    /// Where to report the batch's measured speed when it completes.
    void set_speed_model(std::shared_ptr<SpeedModel> model) noexcept { model_ = std::move(model); }

    /// Claims every task not yet claimed (a device giving up its share).
    Range claim_rest() noexcept {
        const std::size_t begin = cursor_.exchange(size_, std::memory_order_relaxed);
        return begin < size_ ? Range{begin, size_} : Range{};
    }
    /// CPU chunk size the scheduler chose for this job.
    std::size_t cpu_chunk() const noexcept { return cpu_chunk_; }
    void set_cpu_chunk(std::size_t n) noexcept { cpu_chunk_ = n; }

    /// Runs `r` on the calling CPU worker, in place, and accounts for it.
    void run_cpu(Range r) {
        if (!has_cpu()) {  // a GPU-only op whose GPU work failed has nowhere else to go
            skip(r, ExecError::DeviceFailed);
            return;
        }
        const auto start = Clock::now();
        note_start(start);
        do_run_cpu(r);
        const auto stop = Clock::now();
        cpu_ns_.fetch_add(static_cast<std::uint64_t>((stop - start).count()), std::memory_order_relaxed);
        cpu_tasks_.fetch_add(r.size(), std::memory_order_relaxed);
        cpu_chunks_.fetch_add(1, std::memory_order_relaxed);
        finish(r.size());
    }

    /// Marks `r` as never run (outputs default-constructed) because of `why`.
    void skip(Range r, ExecError why) noexcept {
        if (r.empty()) return;
        default_fill(r);
        int expected = 0;
        first_skip_.compare_exchange_strong(expected, static_cast<int>(why), std::memory_order_relaxed);
        skipped_tasks_.fetch_add(r.size(), std::memory_order_relaxed);
        finish(r.size());
    }

    /// True once `cancel` was called (workers skip what they claim from then on).
    bool cancel_requested() const noexcept { return cancel_.load(std::memory_order_relaxed) != 0; }

    /// Stops the batch: every task not yet claimed is skipped with `why` right here; chunks
    /// already running finish. Returns false if the batch had already completed.
    bool cancel(ExecError why) noexcept {
        if (ready()) return false;
        int expected = 0;
        cancel_.compare_exchange_strong(expected, static_cast<int>(why), std::memory_order_relaxed);
        const std::size_t begin = cursor_.exchange(size_, std::memory_order_relaxed);
        if (begin < size_) skip({begin, size_}, why);
        return true;
    }

    /// Completes a job that never ran (bad input, shut down) with `why`.
    void fail(std::error_code why) {
        failure_ = why;
        if (size_ == 0) {
            complete();
        } else {
            cancel(static_cast<ExecError>(why.value()));
        }
    }

    // ---- GPU side ------------------------------------------------------------------------

    /// Raw columns and the launcher for GPU stream actors.
    virtual GpuView gpu_view() noexcept = 0;

    /// Accounts for a chunk the GPU ran (outputs already written).
    void finish_gpu(Range r, const GpuChunkTimes& t, unsigned device) {
        note_start(t.start);
        gpu_tasks_.fetch_add(r.size(), std::memory_order_relaxed);
        gpu_chunks_.fetch_add(1, std::memory_order_relaxed);
        gpu_ns_.fetch_add(static_cast<std::uint64_t>(t.total.count()), std::memory_order_relaxed);
        h2d_ns_.fetch_add(static_cast<std::uint64_t>(t.h2d.count()), std::memory_order_relaxed);
        kernel_ns_.fetch_add(static_cast<std::uint64_t>(t.kernel.count()), std::memory_order_relaxed);
        d2h_ns_.fetch_add(static_cast<std::uint64_t>(t.d2h.count()), std::memory_order_relaxed);
        bytes_h2d_.fetch_add(t.bytes_h2d, std::memory_order_relaxed);
        bytes_d2h_.fetch_add(t.bytes_d2h, std::memory_order_relaxed);
        devices_used_.fetch_or(std::uint64_t{1} << (device % 64), std::memory_order_relaxed);
        atomic_min(gpu_first_ns_, t.start.time_since_epoch().count());
        atomic_max(gpu_last_ns_, t.end.time_since_epoch().count());
        finish(r.size());
    }

    /// Records that `r` left the GPU because of `why`; the caller reruns it on the CPU.
    void note_fallback(Range r, std::error_code why) {
        fallback_tasks_.fetch_add(r.size(), std::memory_order_relaxed);
        std::lock_guard lock{mutex_};
        if (fallback_reason_.empty()) fallback_reason_ = why.message();
    }

    // ---- completion ----------------------------------------------------------------------

    /// True once the batch has completed (results or error).
    bool ready() const noexcept { return ready_.load(std::memory_order_acquire); }

    /// Blocks until ready: spins `spin`, then sleeps on a condition variable.
    void wait(std::chrono::nanoseconds spin = std::chrono::microseconds{100}) {
        wait_until(Clock::time_point::max(), spin);
    }

    /// Blocks until ready or `deadline`; returns `ready()`.
    bool wait_until(Clock::time_point deadline, std::chrono::nanoseconds spin = std::chrono::microseconds{100}) {
        if (ready()) return true;
        const auto spin_end = Clock::now() + spin;
        for (unsigned i = 1; Clock::now() < std::min(spin_end, deadline); ++i) {
            for (unsigned k = 0; k < 32; ++k) {
                if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            }
        }
        waiters_.fetch_add(1, std::memory_order_seq_cst);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        {
            std::unique_lock lock{wait_mutex_};
            if (deadline == Clock::time_point::max()) {
                wait_cv_.wait(lock, [&] { return ready(); });
            } else {
                wait_cv_.wait_until(lock, deadline, [&] { return ready(); });
            }
        }
        waiters_.fetch_sub(1, std::memory_order_relaxed);
        return ready();
    }

    /// Registers the one continuation, run on the completing thread. Returns false, leaving
    /// `fn` with the caller, when the job has already completed: the caller runs it itself.
    bool set_continuation(UniqueFunction&& fn) {
        continuation_ = std::move(fn);
        std::uint8_t expected = 0;
        if (continuation_state_.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) return true;
        fn = std::move(continuation_);  // completed already: hand the function back
        return false;
    }

    /// The batch-level error (valid once ready): empty, or why the batch did not complete.
    std::error_code error() const noexcept { return failure_; }

protected:
    virtual void do_run_cpu(Range r) = 0;
    virtual void default_fill(Range r) noexcept = 0;
    /// Frees the payloads once no chunk can read them any more.
    virtual void release_inputs() noexcept {}
    /// Builds the result (called once, on the completing thread, before `ready()` is set).
    virtual void assemble(ExecStats stats, std::vector<TaskError> errors) = 0;

    void task_failed(std::size_t index, std::exception_ptr error) noexcept override {
        failed_tasks_.fetch_add(1, std::memory_order_relaxed);
        try {
            TaskError e;
            e.index = index;
            e.code = ExecError::TaskFailed;
            e.exception = error;
            try {
                if (error) std::rethrow_exception(error);
            } catch (const std::exception& ex) {
                e.message = ex.what();
            } catch (...) {
                e.message = "unknown exception";
            }
            std::lock_guard lock{mutex_};
            errors_.push_back(std::move(e));
        } catch (...) {
            // Out of memory while recording: the task still counts as failed.
        }
    }

private:
    static void atomic_min(std::atomic<std::int64_t>& a, std::int64_t v) noexcept {
        std::int64_t cur = a.load(std::memory_order_relaxed);
        while (v < cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {}
    }
    static void atomic_max(std::atomic<std::int64_t>& a, std::int64_t v) noexcept {
        std::int64_t cur = a.load(std::memory_order_relaxed);
        while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {}
    }

    void note_start(Clock::time_point t) noexcept {
        atomic_min(first_start_ns_, t.time_since_epoch().count());
    }

    void finish(std::size_t n) {
        // acq_rel: every chunk's output writes happen-before the completing thread reads them.
        if (remaining_.fetch_sub(n, std::memory_order_acq_rel) == n) complete();
    }

    void complete();

    ExecStats make_stats(Clock::time_point now) const;

    const std::size_t size_;
    const std::uint64_t total_cost_;
    const void* const op_key_;
    const std::string op_name_;
    std::shared_ptr<EngineShared> engine_;

    // Claimed by workers of every kind; on its own cache line.
    alignas(64) std::atomic<std::size_t> cursor_{0};
    alignas(64) std::atomic<std::size_t> remaining_;
    std::size_t cpu_chunk_ = 1;
    std::size_t cpu_quota_ = std::numeric_limits<std::size_t>::max();
    std::atomic<std::size_t> cpu_claimed_{0};
    std::shared_ptr<SpeedModel> model_;
    std::atomic<int> cancel_{0};
    std::atomic<int> first_skip_{0};
    std::error_code failure_;

    // Statistics, added per chunk.
    const Clock::time_point submitted_;
    std::atomic<std::int64_t> first_start_ns_{std::numeric_limits<std::int64_t>::max()};
    std::atomic<std::uint64_t> cpu_tasks_{0}, gpu_tasks_{0}, fallback_tasks_{0}, failed_tasks_{0},
        skipped_tasks_{0};
    std::atomic<std::uint32_t> cpu_chunks_{0}, gpu_chunks_{0};
    std::atomic<std::uint64_t> cpu_ns_{0}, gpu_ns_{0}, h2d_ns_{0}, kernel_ns_{0}, d2h_ns_{0}, bytes_h2d_{0}, bytes_d2h_{0};
    std::atomic<std::uint64_t> devices_used_{0};
    std::atomic<std::int64_t> gpu_first_ns_{std::numeric_limits<std::int64_t>::max()};
    std::atomic<std::int64_t> gpu_last_ns_{std::numeric_limits<std::int64_t>::min()};

    // Error paths only.
    std::mutex mutex_;
    std::vector<TaskError> errors_;
    std::string fallback_reason_;

    // Completion.
    std::atomic<bool> ready_{false};
    std::atomic<std::uint32_t> waiters_{0};
    std::mutex wait_mutex_;
    std::condition_variable wait_cv_;
    std::atomic<std::uint8_t> continuation_state_{0};  // 0 none, 1 set, 2 completed
    UniqueFunction continuation_;
};

inline ExecStats JobCore::make_stats(Clock::time_point now) const {
    ExecStats s;
    s.tasks = size_;
    s.cpu_tasks = cpu_tasks_.load(std::memory_order_relaxed);
    s.gpu_tasks = gpu_tasks_.load(std::memory_order_relaxed);
    s.fallback_tasks = fallback_tasks_.load(std::memory_order_relaxed);
    s.failed_tasks = failed_tasks_.load(std::memory_order_relaxed);
    s.skipped_tasks = skipped_tasks_.load(std::memory_order_relaxed);
    s.cpu_chunks = cpu_chunks_.load(std::memory_order_relaxed);
    s.gpu_chunks = gpu_chunks_.load(std::memory_order_relaxed);
    s.gpu_devices_used = static_cast<std::uint32_t>(__builtin_popcountll(devices_used_.load(std::memory_order_relaxed)));
    s.device = s.gpu_tasks == 0 ? DeviceKind::Cpu : (s.cpu_tasks == 0 ? DeviceKind::Gpu : DeviceKind::Hybrid);
    s.fallback_reason = fallback_reason_;
    const std::int64_t first = first_start_ns_.load(std::memory_order_relaxed);
    if (first != std::numeric_limits<std::int64_t>::max()) {
        s.queue_wait = std::max(std::chrono::nanoseconds{0},
                                Clock::time_point{Clock::duration{first}} - submitted_);
    }
    s.cpu_time = std::chrono::nanoseconds{cpu_ns_.load(std::memory_order_relaxed)};
    s.gpu_time = std::chrono::nanoseconds{gpu_ns_.load(std::memory_order_relaxed)};
    s.h2d_time = std::chrono::nanoseconds{h2d_ns_.load(std::memory_order_relaxed)};
    s.kernel_time = std::chrono::nanoseconds{kernel_ns_.load(std::memory_order_relaxed)};
    s.d2h_time = std::chrono::nanoseconds{d2h_ns_.load(std::memory_order_relaxed)};
    s.bytes_h2d = bytes_h2d_.load(std::memory_order_relaxed);
    s.bytes_d2h = bytes_d2h_.load(std::memory_order_relaxed);
    const std::int64_t g0 = gpu_first_ns_.load(std::memory_order_relaxed);
    const std::int64_t g1 = gpu_last_ns_.load(std::memory_order_relaxed);
    if (s.gpu_chunks != 0 && g1 > g0) {
        const auto staged = s.gpu_time;
        s.overlap_ratio = static_cast<double>(staged.count()) / static_cast<double>(g1 - g0);
    }
    s.wall_time = now - submitted_;
    return s;
}

inline void JobCore::complete() {
    const auto now = Clock::now();
    if (!failure_) {
        const int skip = first_skip_.load(std::memory_order_relaxed);
        if (skip != 0) failure_ = static_cast<ExecError>(skip);
    }
    ExecStats stats = make_stats(now);
    if (model_) {
        const std::int64_t g0 = gpu_first_ns_.load(std::memory_order_relaxed);
        const std::int64_t g1 = gpu_last_ns_.load(std::memory_order_relaxed);
        model_->record(stats, std::chrono::nanoseconds{g1 > g0 ? g1 - g0 : 0});
    }
    std::vector<TaskError> errors;
    {
        std::lock_guard lock{mutex_};
        errors.swap(errors_);
    }
    const bool failed = static_cast<bool>(failure_);
    const std::uint64_t cpu = stats.cpu_tasks, gpu = stats.gpu_tasks, fallback = stats.fallback_tasks,
                        bad = stats.failed_tasks, skipped = stats.skipped_tasks;
    try {
        assemble(std::move(stats), std::move(errors));
    } catch (...) {
        failure_ = ExecError::TooLarge;  // out of memory building the result
    }

    // Engine counters first: once `ready_` is set the owner may drop the job and the engine.
    if (engine_) {
        auto& e = *engine_;
        auto add = [](std::atomic<std::uint64_t>& counter, std::uint64_t n) {
            if (n != 0) counter.fetch_add(n, std::memory_order_relaxed);
        };
        auto& shard = e.mine();
        add(shard.batches_completed, 1);
        add(shard.tasks_completed, size_);
        add(shard.cpu_tasks, cpu);
        add(shard.gpu_tasks, gpu);
        add(e.batches_failed, failed ? 1 : 0);
        add(e.cpu_fallback_count, fallback);
        add(e.task_failures, bad);
        add(e.tasks_skipped, skipped);
        e.inflight.fetch_sub(EngineShared::one_batch | size_, std::memory_order_release);
        e.wake_room_waiters();
    }

    ready_.store(true, std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst) != 0) {
        std::lock_guard lock{wait_mutex_};
        wait_cv_.notify_all();
    }
    if (continuation_state_.exchange(2, std::memory_order_acq_rel) == 1) {
        UniqueFunction fn = std::move(continuation_);
        fn();
    }
    // Every caller of complete() holds a reference to the job (a worker's message, a device
    // actor's slot, the future that cancels), so the job is still alive here even if the
    // continuation dropped the owner's. The inputs are freed now, on this engine thread, and
    // not in the owner's get(): freeing a large batch unmaps its pages, ~9 ms for 256 MiB on
    // a 16-core host.
    release_inputs();
}

/// The typed result half: outputs, ids and the finished `BatchResult<R>`.
template <class R>
class ResultCore : public JobCore {
public:
    ResultCore(std::size_t size, std::uint64_t total_cost, const void* op_key, std::string op_name, IdColumn ids,
               OutputBuffer<R> outputs)
        : JobCore{size, total_cost, op_key, std::move(op_name)}, ids_{std::move(ids)}, outputs_{std::move(outputs)} {}

    /// Moves the result out (once, after `ready()`).
    BatchResult<R> take_result() { return std::move(*result_); }

protected:
    R* out() noexcept { return outputs_.data(); }
    std::pmr::memory_resource* out_memory() const noexcept { return outputs_.memory(); }

    void default_fill(Range r) noexcept override {
        std::uninitialized_value_construct_n(outputs_.data() + r.begin, r.size());
    }

    void assemble(ExecStats stats, std::vector<TaskError> errors) override {
        outputs_.mark_constructed();
        for (TaskError& e : errors) e.id = ids_[e.index];
        result_.emplace(BatchResult<R>{Results<R>{std::move(ids_), std::move(outputs_), std::move(errors)},
                                       std::move(stats)});
    }

private:
    IdColumn ids_;
    OutputBuffer<R> outputs_;
    std::optional<BatchResult<R>> result_;
};

/// A submitted batch: payloads, op, and the result half.
template <class T, class R>
class BatchJob final : public ResultCore<R> {
public:
    /// `outputs`: storage for `batch.size()` results.
    BatchJob(const Op<T, R>& op, Batch<T>&& batch, OutputBuffer<R> outputs)
        : ResultCore<R>{batch.size(), batch.total_cost(), op.key(), op.name(), batch.take_ids(), std::move(outputs)},
          op_{op}, batch_{std::move(batch)} {}

    bool has_cpu() const noexcept override { return op_.has_cpu(); }

    GpuView gpu_view() noexcept override {
        GpuView v;
        v.in = batch_.payloads().data();
        v.in_size = sizeof(T);
        v.out = this->out();
        v.out_size = sizeof(R);
        v.launcher = op_.has_gpu() ? op_.gpu().launcher().get() : nullptr;
        v.payload_memory = batch_.memory();
        v.out_memory = this->out_memory();
        return v;
    }

private:
    void do_run_cpu(Range r) override {
        op_.cpu().impl().run(batch_.payloads().data() + r.begin, this->out() + r.begin, r.size(), r.begin, *this);
    }

    void release_inputs() noexcept override { batch_.release_payloads(); }

    Op<T, R> op_;
    Batch<T> batch_;
};

}  // namespace tandem::detail
