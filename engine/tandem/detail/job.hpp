#pragma once
/// \file
/// A batch in flight (engine-internal; installed only because the templates need it).
///
/// One `BatchJob` per submitted batch holds the payloads, the preallocated outputs and every
/// counter. Workers claim ranges of it through one atomic cursor (per chunk, never per task),
/// write outputs in place, and the thread whose range brings `remaining_` to zero completes it.
/// The type-independent half (`JobCore`) is defined in engine/src/job.cpp; the engine's shared
/// counters and the scheduler's models stay in engine/src and are not installed.

#include <tandem/actors/parker.hpp>
#include <tandem/config.hpp>
#include <tandem/error.hpp>
#include <tandem/op.hpp>
#include <tandem/result.hpp>
#include <tandem/task.hpp>
#include <tandem/detail/unique_function.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
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
#include <type_traits>
#include <vector>

namespace tandem::detail {

static_assert(sizeof(std::size_t) == sizeof(std::uint64_t), "quotas in cost units need a 64-bit size_t");

/// A half-open range of task positions `[begin, end)`.
struct Range {
    std::size_t begin = 0;
    std::size_t end = 0;
    std::size_t size() const noexcept { return end - begin; }
    bool empty() const noexcept { return begin >= end; }
};

/// Where the cost of a batch whose tasks' costs differ lies: prefix sums of the costs, one per
/// block of 64 tasks, built once when the job is made (O(n) time, n/8 bytes; never for a
/// batch of uniform cost). The cost of a range, and the end of a range that carries a given
/// cost, then take a binary search over the blocks and a scan of at most 64 costs each.
///
/// Units: task i counts `max(est_cost[i] >> shift(), 1)`. A cost of 0 counts as 1 (no task is
/// free: each costs at least its call). `shift()` is 0 unless the costs could sum beyond 2^52
/// (more than 2^20 tasks of costs near 2^32); it then drops low bits so the sum stays below
/// 2^52, which leaves a cursor, a quota counter or a reservation that passes the total by one
/// chunk per claimer far from wrapping.
class CostIndex {
public:
    static constexpr unsigned block_bits = 6;
    static constexpr std::uint64_t max_total = std::uint64_t{1} << 52;

    /// Indexes `n` costs, kept by pointer (they must outlive the index). Returns false, and
    /// keeps nothing, when every task counts the same (the job then stays on the uniform path);
    /// `uniform` then receives that count. May throw `std::bad_alloc`.
    bool build(const std::uint32_t* costs, std::size_t n, std::uint64_t& uniform);

    std::uint64_t total() const noexcept { return total_; }
    unsigned shift() const noexcept { return shift_; }
    /// Units of task i.
    std::uint64_t cost(std::size_t i) const noexcept {
        const std::uint64_t c = costs_[i] >> shift_;
        return c != 0 ? c : 1;
    }
    /// Units of tasks [0, i), i <= n.
    std::uint64_t prefix(std::size_t i) const noexcept {
        std::uint64_t sum = blocks_[i >> block_bits];
        for (std::size_t j = i & ~((std::size_t{1} << block_bits) - 1); j < i; ++j) sum += cost(j);
        return sum;
    }
    std::uint64_t units(Range r) const noexcept { return r.empty() ? 0 : prefix(r.end) - prefix(r.begin); }
    /// The end of the range that starts at `begin` and carries at least `target` units (at
    /// least one task), or `limit`, whichever comes first. `begin < limit <= n`.
    std::size_t end_for(std::size_t begin, std::size_t limit, std::uint64_t target) const noexcept;

private:
    const std::uint32_t* costs_ = nullptr;
    std::size_t n_ = 0;
    std::unique_ptr<std::uint64_t[]> blocks_;  // blocks_[k]: units of tasks [0, 64k), k = 0 .. n/64
    std::uint64_t total_ = 0;
    unsigned shift_ = 0;
};

/// What a device actor needs to run a chunk: raw columns and the launcher.
struct GpuView {
    const void* in = nullptr;          ///< payload column
    std::size_t in_size = 0;           ///< bytes per payload
    void* out = nullptr;               ///< output column (raw storage)
    std::size_t out_size = 0;          ///< bytes per output
    const GpuLauncher* launcher = nullptr;  ///< null when the op has no GPU kernel
    std::pmr::memory_resource* payload_memory = nullptr;  ///< where the payloads live
    std::pmr::memory_resource* out_memory = nullptr;  ///< where the outputs live (null: the heap)
};

/// Stage times of one device chunk (CUDA events, or the simulated device's model).
struct GpuChunkTimes {
    std::chrono::nanoseconds total{0}, h2d{0}, kernel{0}, d2h{0};
    std::uint64_t bytes_h2d = 0, bytes_d2h = 0;
    /// Host clock at the chunk's issue and when its completion was seen (the busy span).
    std::chrono::steady_clock::time_point start, end;
    /// The same two instants on the device's own timeline, which the performance model reads:
    /// the host clock for a real device, the modelled time for a simulated one.
    std::chrono::nanoseconds timeline_start{0}, timeline_end{0};
    /// Chunks of other batches were on the device while this one ran.
    bool contended = false;
    /// For the first chunk of a share that reached an idle device: from the plan that gave the
    /// batch device shares (`JobCore::handed_over`) to when the device began this chunk (how
    /// long the device took to start the share): the host clock for a real device, the
    /// modelled delay (`SimulatedDevice::start_delay`) for a simulated one. Negative for
    /// every other chunk.
    std::chrono::nanoseconds waited{-1};
    /// `h2d`, `kernel` and `d2h` were measured (else only `total`).
    bool stages_timed = false;
    /// For the trace: when the H2D copy began, on the host clock (CUDA event times mapped onto
    /// it; the epoch: `start`), and the stream (slot) that ran the chunk.
    std::chrono::steady_clock::time_point stage_start{};
    unsigned stream = 0;
};

/// One device's part of a batch that devices take part in: the share the plan gave it, and
/// what it ran (for the performance model).
///
/// Quotas and counts are in the job's share units (`JobCore::share_units`): tasks for a batch
/// of uniform cost, cost units for one whose costs differ.
struct DeviceShare {
    /// Most share units the device may claim (no cap: the size_t maximum).
    std::size_t quota = std::numeric_limits<std::size_t>::max();
    /// Predicted busy time the plan added to the device's queue (taken off at completion).
    double backlog_ns = 0;
    /// Tasks per chunk the device claims: for a batch whose costs differ, the most tasks a
    /// chunk may hold; its cost is `chunk_units` (see `JobCore::set_device_chunk`).
    std::size_t chunk = 1;
    std::uint64_t chunk_units = 1;
    std::atomic<std::size_t> claimed{0};
    /// Share units the device ran, and its busy span on its own timeline.
    std::atomic<std::uint64_t> units{0};
    /// Another batch's chunks ran on the device during the span (the span then measures both).
    std::atomic<bool> contended{false};
    std::atomic<std::int64_t> first_ns{std::numeric_limits<std::int64_t>::max()};
    std::atomic<std::int64_t> last_ns{std::numeric_limits<std::int64_t>::min()};
    /// The least `GpuChunkTimes::waited` of its chunks: how long the idle device took to start
    /// it (none when the device was busy as it arrived).
    std::atomic<std::int64_t> waited_ns{std::numeric_limits<std::int64_t>::max()};
};

/// What the scheduler decided for a batch, kept with it until it completes.
struct PlanRecord {
    PlacementInfo info{};
    /// Planned already (on the submitting thread): the scheduler only carries it out.
    bool decided = false;
    /// CPU workers take part; bit d: device d does.
    bool cpu_runs = true;
    std::uint64_t devices = 0;
    /// Predicted CPU worker time the plan added to the workers' queue (taken off at completion).
    double cpu_backlog_ns = 0;
    /// The CPU's share in share units (`JobCore::share_units`): once its workers have run that
    /// much of their own share, the CPU's queued work is over.
    std::uint64_t cpu_share = 0;
    /// The payloads live in page-locked memory (a separate model: their copies are faster).
    bool pinned = false;
    /// The batch was alone in its engine when planned and its CPU share can tell the CPU's
    /// stretch (`Placement::note_stretch_probe`); the engine's count of submitted batches then.
    bool stretch_probe = false;
    std::uint64_t batches_before = 0;
};

class JobCore;

/// Told about every batch that completes (the scheduler's performance model implements it).
class JobObserver {
public:
    /// Lane 0 (the CPU workers) or 1 + d (device d) has run its whole planned share, or the
    /// batch completed without it: its queued work is over. Once per lane, before
    /// `on_complete`.
    virtual void on_share_done(const JobCore& job, std::size_t lane) noexcept = 0;
    virtual void on_complete(const JobCore& job, const ExecStats& stats) noexcept = 0;

protected:
    ~JobObserver() = default;
};

struct EngineShared;  // engine/src/engine_shared.hpp

/// The type-independent part of a batch in flight.
///
/// Lifetime: every thread that can complete a job holds a `shared_ptr` to it while it does
/// (a worker's message, a device actor's slot, the future that cancels), so `complete()` runs
/// on a live job even if the continuation drops the owner's reference.
/// Where a CPU worker keeps the ends of completions it will finish when it has nothing else to
/// do. Freeing a large batch's inputs unmaps its pages (~9 ms for 256 MiB on a 16-core host);
/// done at once, it would hold up every small batch queued behind that worker. A worker
/// installs one for its thread; the job's completing code hands it the tail when one is there.
class CompletionTails {
public:
    /// Inputs at least this large are freed later; smaller ones at once.
    static constexpr std::size_t min_bytes = std::size_t{1} << 20;

    /// At most this many bytes are kept; beyond, the tails run at once.
    static constexpr std::size_t max_bytes = std::size_t{1} << 30;

    /// `owner`: the engine whose worker keeps these; only its own jobs are kept (a job of
    /// another engine completed from a task or continuation here finishes at once).
    explicit CompletionTails(const EngineShared* owner) noexcept : owner_{owner} {}

    /// The calling thread's, or null.
    static CompletionTails* current() noexcept { return current_; }
    static void install(CompletionTails* tails) noexcept { current_ = tails; }

    /// Keeps `job`'s completion tail (`bytes` to free) for `run()`; false (the caller runs
    /// it) for another engine's job, past `max_bytes`, or when out of memory.
    bool keep(std::shared_ptr<JobCore> job, const EngineShared* engine, std::size_t bytes) noexcept {
        if (engine != owner_ || bytes_ + bytes > max_bytes) return false;
        try {
            jobs_.push_back(std::move(job));
            bytes_ += bytes;
            return true;
        } catch (...) {
            return false;
        }
    }
    bool empty() const noexcept { return jobs_.empty(); }
    /// Runs every tail kept.
    void run() noexcept;

private:
    static inline thread_local CompletionTails* current_ = nullptr;
    const EngineShared* owner_;
    std::vector<std::shared_ptr<JobCore>> jobs_;
    std::size_t bytes_ = 0;
};

class JobCore : public TaskErrorSink, public std::enable_shared_from_this<JobCore> {
public:
    using Clock = std::chrono::steady_clock;

    JobCore(std::size_t size, std::uint64_t total_cost, const void* op_key, std::string op_name);
    JobCore(const JobCore&) = delete;
    JobCore& operator=(const JobCore&) = delete;
    virtual ~JobCore();

    std::size_t size() const noexcept { return size_; }
    /// When the plan gave the batch shares on devices (on the planning thread; the scheduler
    /// then sends it to them): what a device's start delay is measured from, so the hop to the
    /// scheduler, which only plans with devices take, is in it. Written before the batch is
    /// sent on, read by a device after it received it. The submission until then.
    void note_handed_over() noexcept { handed_over_ = Clock::now(); }
    Clock::time_point handed_over() const noexcept {
        return handed_over_ == Clock::time_point{} ? submitted_ : handed_over_;
    }
    std::uint64_t total_cost() const noexcept { return total_cost_; }
    const void* op_key() const noexcept { return op_key_; }
    const std::string& op_name() const noexcept { return op_name_; }
    virtual bool has_cpu() const noexcept = 0;

    /// Ties the job to the engine's counters (set once, before the job is dispatched).
    void attach(std::shared_ptr<EngineShared> engine) noexcept;

    // ---- costs ----------------------------------------------------------------------------

    /// Makes the job follow its tasks' costs (before dispatch, once). Costs that differ build a
    /// `CostIndex`: shares, quotas and chunks are then counted in cost units. Costs that are all
    /// equal (0 and 1 count the same) leave the job on the uniform path, counting tasks. May
    /// throw `std::bad_alloc`.
    void set_costs(const CostColumn& costs);
    /// True when the job's tasks differ in cost (its shares and chunks are cut by cost).
    bool weighted() const noexcept { return weighted_ != nullptr; }
    /// The units shares, quotas and claimed counts are kept in: tasks for a batch of uniform
    /// cost, cost units (`CostIndex`) for one whose costs differ. The whole batch, and a range.
    std::uint64_t share_units() const noexcept { return weighted_ ? weighted_->index.total() : size_; }
    std::uint64_t share_units(Range r) const noexcept { return weighted_ ? weighted_->index.units(r) : r.size(); }
    /// The cost (`est_cost`, 0 counted as 1) of one share unit: the batch's one cost, or
    /// 2^`CostIndex::shift()`. What the performance models and the simulated devices count.
    double cost_per_share_unit() const noexcept { return cost_per_unit_; }
    /// The cost of the whole batch, and of a range (as a double: it may pass 2^64).
    double cost() const noexcept { return static_cast<double>(share_units()) * cost_per_unit_; }
    double cost(Range r) const noexcept { return static_cast<double>(share_units(r)) * cost_per_unit_; }
    /// The cost of `units` share units as a count (for stats; the uint64 maximum past it).
    std::uint64_t cost_count(std::uint64_t units) const noexcept {
        const double c = static_cast<double>(units) * cost_per_unit_;
        return c >= 1.8e19 ? std::numeric_limits<std::uint64_t>::max() : static_cast<std::uint64_t>(c);
    }

    // ---- claiming and running ------------------------------------------------------------

    /// Claims up to `max` unclaimed tasks; an empty range once none are left. For a batch whose
    /// costs differ, the range carries the cost of about `max` average tasks instead.
    Range claim(std::size_t max) noexcept {
        if (weighted_) return claim_by_cost(stretch(max), weighted_->units_for(max));
        return claim_tasks(max);
    }
    /// Claims up to `max` tasks for a CPU worker, within the CPU's quota of this batch.
    /// Past its share, a claimer takes what is left only when the plan lets it steal. For a
    /// batch whose costs differ, the chunk carries the cost of `max` average tasks (at most
    /// `max_stretch` × `max` tasks) and the quota counts cost.
    Range claim_cpu(std::size_t max) noexcept {
        if (weighted_) return claim_cpu_by_cost(max);
        if (cpu_quota_ >= size_) return claim_tasks(max);
        if (cpu_claimed_.load(std::memory_order_relaxed) >= cpu_quota_) return steal_ ? claim_tasks(max) : Range{};
        const std::size_t before = cpu_claimed_.fetch_add(max, std::memory_order_relaxed);
        if (before >= cpu_quota_) return steal_ ? claim_tasks(max) : Range{};
        return claim_tasks(std::min(max, cpu_quota_ - before));
    }
    /// Claims up to `max` tasks for device `d`, within its share of this batch. For a batch
    /// whose costs differ, the chunk carries the device share's `chunk_units` (at most `max`
    /// tasks) and the quota counts cost.
    Range claim_device(std::size_t d, std::size_t max) noexcept {
        if (weighted_) return claim_device_by_cost(d, max);
        if (d >= share_count_ || shares_[d].quota >= size_) return claim_tasks(max);
        DeviceShare& s = shares_[d];
        if (s.claimed.load(std::memory_order_relaxed) >= s.quota) return steal_ ? claim_tasks(max) : Range{};
        const std::size_t before = s.claimed.fetch_add(max, std::memory_order_relaxed);
        if (before >= s.quota) return steal_ ? claim_tasks(max) : Range{};
        return claim_tasks(std::min(max, s.quota - before));
    }
    /// True once every task has been claimed (or skipped).
    bool fully_claimed() const noexcept { return cursor_.load(std::memory_order_relaxed) >= size_; }
    /// Lets a participant that finished its share take unclaimed tasks of the others (set
    /// before dispatch).
    void set_steal(bool steal) noexcept { steal_ = steal; }
    /// Claims every task not yet claimed (a device giving up its share, a cancel).
    Range claim_rest() noexcept {
        const std::size_t begin = cursor_.exchange(size_, std::memory_order_relaxed);
        return begin < size_ ? Range{begin, size_} : Range{};
    }
    /// Caps the share units (`share_units`) CPU workers take from the shared cursor (the
    /// devices take the rest). Set before the job is dispatched.
    void set_cpu_quota(std::size_t n) noexcept { cpu_quota_ = n; }
    /// Where to report the batch's measured speed when it completes. Set before the job is
    /// dispatched to any worker or device (the completing thread reads it).
    void set_observer(std::shared_ptr<JobObserver> observer) noexcept { observer_ = std::move(observer); }
    /// Gives the job one `DeviceShare` per device (no caps yet). Before dispatch; may throw.
    void set_device_shares(std::size_t devices) {
        shares_.reset(new DeviceShare[devices]);
        share_count_ = devices;
    }
    std::size_t device_share_count() const noexcept { return share_count_; }
    DeviceShare& device_share(std::size_t d) noexcept { return shares_[d]; }
    const DeviceShare& device_share(std::size_t d) const noexcept { return shares_[d]; }
    /// The plan (set before dispatch; read by the observer and the stats).
    PlanRecord& plan() noexcept { return plan_; }
    const PlanRecord& plan() const noexcept { return plan_; }
    std::size_t cpu_quota() const noexcept { return cpu_quota_; }
    /// CPU chunk size the scheduler chose for this job (set before dispatch): tasks, or for a
    /// batch whose costs differ, the cost of that many average tasks.
    std::size_t cpu_chunk() const noexcept { return cpu_chunk_; }
    /// About how many chunks the CPU's share is cut into (how many workers to engage).
    std::size_t cpu_chunks_planned() const noexcept;
    /// The engine's counts of batches handed over and completed so far (0 without an engine).
    /// Each sums the engine's shards: for placement's occasional checks, not a hot path. A
    /// batch's completion is counted before its waiter is woken.
    std::uint64_t engine_batches_completed() const noexcept;
    std::uint64_t engine_batches_submitted() const noexcept;
    /// Where the CPU-sized piece of `[begin, end)` that starts at `begin` ends (a device's range
    /// handed back is spread over the workers in such pieces).
    std::size_t cpu_piece_end(std::size_t begin, std::size_t end) const noexcept {
        if (!weighted_) return begin + std::min(cpu_chunk_, end - begin);
        return weighted_->index.end_for(begin, end - begin > stretch(cpu_chunk_) ? begin + stretch(cpu_chunk_) : end,
                                        weighted_->cpu_chunk_units);
    }
    /// A batch whose costs differ is cut into chunks of equal cost: a chunk sized for `n`
    /// tasks carries the cost of `n` average tasks and holds at most this many times `n` tasks
    /// (in a stretch of cheap tasks; the bound keeps a chunk's memory and a worker's turn at
    /// other batches within reach when the estimates are far off).
    static constexpr std::size_t max_stretch = 16;
    /// Device `d`'s chunk: `n` tasks, or for a batch whose costs differ, the cost of `n`
    /// average tasks in at most `max_stretch` × `n` tasks. Before dispatch.
    void set_device_chunk(std::size_t d, std::size_t n) noexcept {
        DeviceShare& s = shares_[d];
        s.chunk = weighted_ ? stretch(n) : std::max<std::size_t>(n, 1);
        s.chunk_units = weighted_ ? weighted_->units_for(n) : s.chunk;
    }
    /// The worker sent this batch was parked: the answer comes after a wake-up, not soon.
    void set_cold_start() noexcept { cold_start_ = true; }

    /// The batch's priority among those a CPU worker serves (`Batch::set_priority`).
    int priority() const noexcept { return priority_; }
    void set_priority(int p) noexcept { priority_ = p; }
    void set_cpu_chunk(std::size_t n) noexcept {
        cpu_chunk_ = n == 0 ? 1 : n;
        if (weighted_) weighted_->cpu_chunk_units = weighted_->units_for(cpu_chunk_);
    }
    /// Most CPU workers the batch is sent to (0: as many as it has chunks, up to every one).
    std::size_t cpu_width() const noexcept { return cpu_width_; }
    void set_cpu_width(std::size_t k) noexcept { cpu_width_ = static_cast<std::uint16_t>(std::min<std::size_t>(k, 65535)); }

    /// Runs `r` on the calling CPU worker, in place, and accounts for it. `own_share`: claimed
    /// from the CPU's share (not a device's range handed back).
    void run_cpu(Range r, bool own_share = true);

    /// Runs `r` on the host on behalf of a simulated device: the op's CPU function, or the
    /// kernel's host emulation for a GPU-only op. Outputs are written, nothing is accounted
    /// (the caller reports the chunk with `finish_gpu`). False when neither exists.
    bool run_on_host(Range r);

    /// Marks `r` as never run (outputs default-constructed) because of `why`; the batch then
    /// completes with that error (the first one recorded wins).
    void skip(Range r, ExecError why) noexcept;

    /// True once `cancel` was called (workers skip what they claim from then on).
    bool cancel_requested() const noexcept { return cancel_.load(std::memory_order_relaxed) > 0; }

    /// Stops the batch: every task not yet claimed is skipped with `why`; chunks already
    /// running finish, and the batch completes with `why`. Cheap on the calling thread: the
    /// skipped range (default-constructing its outputs, perhaps completing the batch) is
    /// handed to an engine thread when the job belongs to a running engine. Returns true
    /// exactly when the batch will report `why` (or an earlier error): false if it had
    /// already completed, or was being completed, first.
    bool cancel(ExecError why) noexcept;

    /// Completes a job that never ran (bad input, shut down) with `why`, on this thread.
    void fail(std::error_code why) noexcept;

    // ---- device side ---------------------------------------------------------------------

    /// Raw columns and the launcher for device actors.
    virtual GpuView gpu_view() noexcept = 0;

    /// Accounts for a chunk a device ran (outputs already written).
    void finish_gpu(Range r, const GpuChunkTimes& t, unsigned device) noexcept;

    /// Records that `r` left a device because of `why`; the caller reruns it on the CPU.
    void note_fallback(Range r, std::error_code why) noexcept;

    /// Keeps this job's payloads and outputs allocated for the rest of the process: a device
    /// that was given up on may still copy into or out of them.
    void abandon_memory() noexcept;

    // ---- completion ----------------------------------------------------------------------

    /// True once the batch has completed (results or error).
    bool ready() const noexcept { return ready_.load(std::memory_order_acquire); }

    /// How long a waiter (`get()`) spins before it parks: 100 µs, except
    /// - on a machine where idle actors do not spin (fewer than 4 hardware threads), while the
    ///   busy workers leave no core for the caller: a spinning caller would take a core from
    ///   them (1-task batches behind a huge one waited 3.6 ms at p50 on 2 cores). A caller that
    ///   stays awake is otherwise answered without an idle core's wake-up cost (a 2-core VM:
    ///   a 1-task round trip of 5-6 µs spinning, 70-90 µs parking at once);
    /// - where idle actors spin, for a batch sent to a parked worker: the worker is idle
    ///   because work is sparse, and its wake-up takes longer than spinning is worth (measured
    ///   on 16 cores: 1.3-1.5x asio's CPU per request with 1 ms gaps, 0.9x without the spin).
    std::chrono::nanoseconds wait_spin() const noexcept;

    /// Blocks until ready. A small batch open to its waiter (`open_to_waiter`) is helped
    /// first: the waiting thread claims and runs the CPU chunks no worker has taken yet, so
    /// it needs no hand-off at all. Then it spins (see `wait_policy`) and parks.
    void wait() {
        if (ready()) return;
        if (waiter_helps_.load(std::memory_order_acquire)) help();
        if (ready()) return;
        parker_.wait([this] { return ready(); }, wait_policy());
    }

    /// Lets a thread blocked in `wait()` run this batch's CPU chunks (see `help`). Called once
    /// the plan is made, when it is CPU-only (after this the plan is only read), with the
    /// number of workers the batch was sent to.
    void open_to_waiter(std::size_t workers_engaged) noexcept {
        one_worker_ = workers_engaged <= 1;
        waiter_helps_.store(true, std::memory_order_release);
    }

    /// True if a thread waiting for this batch would run its CPU chunks (`help`) when the plan
    /// sends it to at most one worker: a small batch with CPU code, on an engine of two
    /// workers or more. Reads only what is fixed at construction and attach.
    bool waiter_may_run() noexcept;

    /// Blocks until ready or `deadline`; returns `ready()`.
    bool wait_until(Clock::time_point deadline) {
        if (ready()) return true;
        return parker_.wait_until([this] { return ready(); }, deadline, wait_policy());
    }

    /// How the calling thread waits: `wait_spin()`, adaptive by the thread's own recent waits
    /// (a thread whose batches come back within the window keeps spinning; one whose batches
    /// take longer parks at once), yielding its core now and then on a machine where spinning
    /// does not pay.
    actors::SpinPolicy wait_policy() const noexcept;

    /// Registers the one continuation, run on the thread that completes the job. Returns false,
    /// leaving `fn` with the caller, when the job has already completed: the caller runs it.
    bool set_continuation(UniqueFunction&& fn) noexcept;

    /// The batch-level error (valid once ready): empty, or why the batch did not complete.
    std::error_code error() const noexcept { return failure_; }

protected:
    virtual void do_run_cpu(Range r) = 0;
    virtual void default_fill(Range r) noexcept = 0;
    /// Frees the payloads once no chunk can read them any more.
    virtual void release_inputs() noexcept {}
    /// The bytes `release_inputs` would free, and whether they come from the heap
    /// (`heap_memory()` or `std::pmr::new_delete_resource()`); memory a program gave may be
    /// freed only before the batch is ready, while the program still waits for it.
    virtual std::size_t input_bytes() const noexcept { return 0; }
    virtual bool inputs_on_heap() const noexcept { return false; }
    /// Builds the result (called once, on the completing thread, before `ready()` is set).
    virtual void assemble(ExecStats stats, std::vector<TaskError> errors) = 0;

    void task_failed(std::size_t index, std::exception_ptr error) noexcept override;

    // ---- jobs that run outside an engine (`BatchPromise`) -------------------------------

    /// Completes the job on this thread, with `failure` as its batch-level error (none: the
    /// results stand). For a job no engine runs: its owner claimed every task (`claim_rest`)
    /// when it made the job and has written every output. Once.
    void complete_outside(std::error_code failure) noexcept {
        if (failure && !failure_) failure_ = failure;
        finish(size_);
    }
    /// Lets such a job put its own figures into the stats `complete()` measured (called once,
    /// on the completing thread, before the result is assembled). Engine jobs: nothing.
    virtual void amend_stats(ExecStats& /*stats*/) const {}
    /// A continuation of a job that belongs to no engine threw (engine jobs report to the
    /// engine's `on_continuation_error`). Default: ignored.
    virtual void continuation_failed(std::exception_ptr /*error*/) noexcept {}

private:
    /// The uniform path's claim: one atomic add on the cursor. The cursor cannot wrap: it is
    /// read before it is advanced, so it passes `size()` by at most one `max` per claimer, and
    /// `max` is bounded by the validated chunk limits.
    Range claim_tasks(std::size_t max) noexcept {
        if (cursor_.load(std::memory_order_relaxed) >= size_) return {};
        const std::size_t begin = cursor_.fetch_add(max, std::memory_order_relaxed);
        if (begin >= size_) return {};
        return {begin, begin + std::min(max, size_ - begin)};
    }
    /// The cost path's claims (job.cpp): a compare-and-swap on the cursor, from one task
    /// boundary to the next, and quotas that count cost.
    Range claim_by_cost(std::size_t max_tasks, std::uint64_t target) noexcept;
    Range claim_quota_by_cost(std::atomic<std::size_t>& claimed, std::size_t quota, std::size_t max_tasks,
                              std::uint64_t target) noexcept;
    Range claim_cpu_by_cost(std::size_t max) noexcept;
    Range claim_device_by_cost(std::size_t d, std::size_t max) noexcept;
    static std::size_t stretch(std::size_t n) noexcept {
        n = std::max<std::size_t>(n, 1);
        return n > std::numeric_limits<std::size_t>::max() / max_stretch ? std::numeric_limits<std::size_t>::max()
                                                                         : n * max_stretch;
    }

    void note_start(Clock::time_point t) noexcept;
    /// The waiter's help (`wait`): for a batch the plan sent to one worker of several (a small
    /// one), claims the CPU's chunks as a worker would and runs them here, or skips them once
    /// the engine stops or the batch is cancelled.
    void help() noexcept;
    void finish(std::size_t n) noexcept {
        // acq_rel: every chunk's output writes happen-before the completing thread reads them.
        if (remaining_.fetch_sub(n, std::memory_order_acq_rel) == n) complete();
    }
    void complete() noexcept;
    /// What completion leaves after the batch is ready: freeing its inputs, then taking it off
    /// the engine's books. Runs on the completing thread, or later on a worker (see
    /// `CompletionTails`).
    void complete_tail() noexcept;
    friend class CompletionTails;
    /// Calls the observer's `on_share_done(lane)` unless it was called already.
    void share_done(std::size_t lane) noexcept;
    void run_continuation() noexcept;
    ExecStats make_stats(Clock::time_point now) const;
    /// Records a chunk (or, `kind` Batch, the whole batch) into the engine's trace.
    void trace_event(int kind, Range r, std::int64_t begin_ns, std::int64_t end_ns, std::uint32_t track,
                     std::uint32_t device, const GpuChunkTimes* gpu) const noexcept;

    const std::size_t size_;
    const std::uint64_t total_cost_;
    const void* const op_key_;
    const std::string op_name_;
    std::shared_ptr<EngineShared> engine_;

    // Claimed by workers of every kind: the two hot words sit 64 bytes from each other and from
    // their neighbours, so they never share a cache line. Padding, not alignas: an over-aligned
    // class makes make_shared take glibc's aligned allocation path, which cost ~31% of the
    // instructions of a 1-task batch (bench/RESULTS-cpu.md).
    char pad_before_cursor_[64];
    std::atomic<std::size_t> cursor_{0};
    char pad_before_remaining_[64 - sizeof(std::atomic<std::size_t>)];
    std::atomic<std::size_t> remaining_;
    char pad_after_remaining_[64 - sizeof(std::atomic<std::size_t>)];
    std::size_t cpu_chunk_ = 1;
    /// What only a batch whose costs differ needs (null otherwise: the uniform path reads one
    /// pointer, and the job stays as small as before). Built before dispatch, read-only after
    /// but for its counters.
    struct Weighted {
        CostIndex index;
        double units_per_task = 1;  // the average
        std::uint64_t cpu_chunk_units = 1;
        /// Share units run by the CPU workers (fallbacks included) and by devices.
        std::atomic<std::uint64_t> cpu_units{0}, gpu_units{0};
        /// The cost of `n` average tasks, in units: at least 1, at most the whole batch's (so a
        /// quota counter that reservations of this size pass by one per claimer stays far
        /// below 2^64: the total is below 2^52).
        std::uint64_t units_for(std::size_t n) const noexcept {
            const double u = std::ceil(static_cast<double>(n) * units_per_task);
            const auto total = static_cast<double>(index.total());
            return u < 1 ? 1 : (u >= total ? index.total() : static_cast<std::uint64_t>(u));
        }
    };
    std::unique_ptr<Weighted> weighted_;
    double cost_per_unit_ = 1;
    int priority_ = 0;
    bool cold_start_ = false;  // set before the job is sent; read by the submitter's get()
    bool one_worker_ = false;  // written before waiter_helps_ (release)
    std::atomic<bool> waiter_helps_{false};
    std::uint16_t cpu_width_ = 0;
    std::size_t cpu_quota_ = std::numeric_limits<std::size_t>::max();
    std::atomic<std::size_t> cpu_claimed_{0};
    std::shared_ptr<JobObserver> observer_;
    std::unique_ptr<DeviceShare[]> shares_;
    std::size_t share_count_ = 0;
    PlanRecord plan_;
    std::atomic<std::uint64_t> shares_done_[2] = {0, 0};  // bit lane: on_share_done was called
    bool steal_ = false;
    std::uint64_t trace_id_ = 0;  // the batch's id in the engine's trace (0: not traced)
    std::atomic<int> cancel_{0};  // 0 open, > 0 the cancel's ExecError, -1 closed by complete()
    std::atomic<int> first_skip_{0};
    std::atomic<bool> abandoned_{false};
    std::error_code failure_;  // written before ready_ (release), read after it (acquire)

    // Statistics, added per chunk.
    const Clock::time_point submitted_;
    Clock::time_point handed_over_{};
    std::atomic<std::int64_t> first_start_ns_{std::numeric_limits<std::int64_t>::max()};
    std::atomic<std::uint64_t> cpu_share_run_{0};  // CPU tasks run from the CPU's own share
    std::atomic<std::uint64_t> cpu_tasks_{0}, gpu_tasks_{0}, fallback_tasks_{0}, failed_tasks_{0},
        skipped_tasks_{0};
    std::atomic<std::uint32_t> cpu_chunks_{0}, gpu_chunks_{0};
    std::atomic<std::uint64_t> cpu_ns_{0}, gpu_ns_{0}, h2d_ns_{0}, kernel_ns_{0}, d2h_ns_{0}, bytes_h2d_{0}, bytes_d2h_{0};
    std::atomic<std::uint64_t> devices_used_{0};
    std::atomic<std::int64_t> gpu_first_ns_{std::numeric_limits<std::int64_t>::max()};
    std::atomic<std::int64_t> gpu_last_ns_{std::numeric_limits<std::int64_t>::min()};
    std::atomic<std::int64_t> cpu_first_ns_{std::numeric_limits<std::int64_t>::max()};
    std::atomic<std::int64_t> cpu_last_ns_{std::numeric_limits<std::int64_t>::min()};

    // Error paths only.
    std::mutex mutex_;
    std::vector<TaskError> errors_;
    std::error_code fallback_reason_;

    // Completion.
    std::atomic<bool> ready_{false};
    actors::Parker parker_;
    std::atomic<std::uint8_t> continuation_state_{0};  // 0 none, 1 set, 2 completed
    UniqueFunction continuation_;
};

/// The typed result half: outputs, ids and the finished `BatchResult<R>`.
template <class R>
class ResultCore : public JobCore {
public:
    static_assert(std::is_nothrow_default_constructible_v<R>,
                  "result types must be nothrow default-constructible: a task that throws or is "
                  "skipped gets a default-constructed output");

    ResultCore(std::size_t size, std::uint64_t total_cost, const void* op_key, std::string op_name, IdColumn ids,
               OutputBuffer<R> outputs)
        : JobCore{size, total_cost, op_key, std::move(op_name)}, ids_{std::move(ids)}, outputs_{std::move(outputs)},
          out_data_{outputs_.data()}, out_memory_{storage_memory(outputs_.memory())} {}

    /// Moves the result out (once, after `ready()`).
    BatchResult<R> take_result() { return std::move(*result_); }

protected:
    // Where the outputs live, fixed at construction: read by any thread at any time (the
    // buffer itself moves into the result when the batch completes; its storage does not).
    R* out() const noexcept { return out_data_; }
    std::pmr::memory_resource* out_memory() const noexcept { return out_memory_; }

    void default_fill(Range r) noexcept override { std::uninitialized_value_construct_n(out_data_ + r.begin, r.size()); }

    void assemble(ExecStats stats, std::vector<TaskError> errors) override {
        outputs_.mark_constructed();
        for (TaskError& e : errors) e.id = ids_[e.index];
        result_.emplace(BatchResult<R>{Results<R>{std::move(ids_), std::move(outputs_), std::move(errors)},
                                       std::move(stats)});
    }

private:
    IdColumn ids_;
    OutputBuffer<R> outputs_;
    R* const out_data_;
    std::pmr::memory_resource* const out_memory_;
    std::optional<BatchResult<R>> result_;
};

/// A submitted batch: payloads, op, and the result half.
template <class T, class R>
class BatchJob final : public ResultCore<R> {
public:
    /// `outputs`: storage for `batch.size()` results. The job holds `op` through the calling
    /// thread's own count (`Op::for_this_thread`).
    BatchJob(const Op<T, R>& op, Batch<T>&& batch, OutputBuffer<R> outputs)
        : ResultCore<R>{batch.size(), batch.total_cost(), op.key(), op.name(), batch.take_ids(), std::move(outputs)},
          op_{op.for_this_thread()}, batch_{std::move(batch)}, in_data_{std::as_const(batch_).payloads().data()}, in_memory_{batch_.memory()},
          in_borrowed_{batch_.borrowed()} {
        this->set_priority(batch_.priority());
        this->set_costs(batch_.costs());  // the costs stay in batch_ (its payloads may go first)
    }

    bool has_cpu() const noexcept override { return op_.has_cpu(); }

    /// Reads only what is fixed at construction, so any thread may call it at any time; the
    /// column pointers may be dereferenced only for a range the caller has claimed.
    GpuView gpu_view() noexcept override {
        GpuView v;
        v.in = in_data_;
        v.in_size = sizeof(T);
        v.out = this->out();
        v.out_size = sizeof(R);
        v.launcher = op_.has_gpu() ? op_.gpu().launcher().get() : nullptr;
        v.payload_memory = in_memory_;
        v.out_memory = this->out_memory();
        return v;
    }

private:
    void do_run_cpu(Range r) override {
        op_.cpu().impl().run(in_data_ + r.begin, this->out() + r.begin, r.size(), r.begin, *this);
    }

    void release_inputs() noexcept override { batch_.release_payloads(); }
    std::size_t input_bytes() const noexcept override { return batch_.payloads().size() * sizeof(T); }
    bool inputs_on_heap() const noexcept override {
        // Borrowed payloads are only let go of (cheap), before the batch is ready.
        return !in_borrowed_ && (in_memory_ == heap_memory() || in_memory_ == std::pmr::new_delete_resource());
    }

    Op<T, R> op_;
    Batch<T> batch_;
    const T* const in_data_;                       // fixed at construction, like the outputs'
    std::pmr::memory_resource* const in_memory_;
    const bool in_borrowed_;
};

}  // namespace tandem::detail
