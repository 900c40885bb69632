// The type-independent half of a batch in flight: claiming, accounting, cancellation and the
// one completion.
#include <tandem/detail/job.hpp>

#include "cpu_worker.hpp"  // run_or_skip: the waiter runs chunks as a worker does
#include "engine_shared.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

namespace tandem::detail {

static_assert(alignof(JobCore) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__,
              "an over-aligned job makes make_shared take the slow aligned allocation path");

namespace {

thread_local const EngineShared* tl_engine = nullptr;
thread_local std::uint32_t tl_worker = TraceEvent::no_worker;

void atomic_min(std::atomic<std::int64_t>& a, std::int64_t v) noexcept {
    std::int64_t cur = a.load(std::memory_order_relaxed);
    while (v < cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {}
}
void atomic_max(std::atomic<std::int64_t>& a, std::int64_t v) noexcept {
    std::int64_t cur = a.load(std::memory_order_relaxed);
    while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {}
}

/// Sets the calling thread's engine for as long as it lives, then restores the previous one.
class CompletingFor {
public:
    explicit CompletingFor(const EngineShared* e) noexcept : saved_{tl_engine} {
        if (e) tl_engine = e;
    }
    ~CompletingFor() { tl_engine = saved_; }
    CompletingFor(const CompletingFor&) = delete;
    CompletingFor& operator=(const CompletingFor&) = delete;

private:
    const EngineShared* saved_;
};

}  // namespace

const EngineShared* current_engine() noexcept { return tl_engine; }
void set_current_engine(const EngineShared* engine) noexcept { tl_engine = engine; }
void set_current_worker(std::uint32_t index) noexcept { tl_worker = index; }

void keep_until_exit(std::shared_ptr<void> p) noexcept {
    // Never destroyed: what it holds must outlive every static destructor that could still
    // free into it. Reachable from a static, so leak checkers do not report it.
    static std::mutex mutex;
    static auto* kept = new std::vector<std::shared_ptr<void>>;
    try {
        std::lock_guard lock{mutex};
        kept->push_back(std::move(p));
    } catch (...) {
        new std::shared_ptr<void>(std::move(p));  // out of memory: leak it outright
    }
}

bool CostIndex::build(const std::uint32_t* costs, std::size_t n, std::uint64_t& uniform) {
    // The shift that keeps n × (largest cost) below 2^52: none is needed up to 2^20 tasks.
    unsigned shift = 0;
    if (n > (std::size_t{1} << 20)) {
        std::uint32_t largest = 0;
        for (std::size_t i = 0; i < n; ++i) largest = std::max(largest, costs[i]);
        while ((largest >> shift) > 1 && (largest >> shift) > max_total / n) ++shift;
    }
    costs_ = costs;
    shift_ = shift;
    n_ = n;
    // Equal in units (0 and 1, or costs that the shift makes equal): the uniform path will do.
    const std::uint64_t first = n != 0 ? cost(0) : 1;
    bool equal = true;
    for (std::size_t i = 1; i < n && equal; ++i) equal = cost(i) == first;
    if (equal) {
        uniform = first;
        costs_ = nullptr;
        n_ = 0;
        return false;
    }
    blocks_.reset(new std::uint64_t[(n >> block_bits) + 1]);
    constexpr std::size_t block = std::size_t{1} << block_bits;
    std::uint64_t sum = 0;
    std::size_t i = 0;
    for (std::size_t k = 0; k <= (n >> block_bits); ++k) {
        blocks_[k] = sum;
        const std::size_t end = std::min(n, i + block);
        for (; i < end; ++i) sum += cost(i);
    }
    total_ = sum;
    return true;
}

std::size_t CostIndex::end_for(std::size_t begin, std::size_t limit, std::uint64_t target) const noexcept {
    const std::uint64_t base = prefix(begin);
    target = std::max<std::uint64_t>(target, 1);
    const std::uint64_t want = base + std::min(target, total_ - base + 1);  // no wrap: total_ < 2^52
    // The first block that starts at or past `want`: the end lies in the block before it.
    const std::size_t blocks = (n_ >> block_bits) + 1;
    const std::uint64_t* first = blocks_.get() + (begin >> block_bits);
    const std::uint64_t* const last = blocks_.get() + blocks;
    const std::size_t k = static_cast<std::size_t>(std::lower_bound(first, last, want) - blocks_.get());
    std::size_t from = begin;
    std::uint64_t at = base;
    if (k > 0 && ((k - 1) << block_bits) > begin) {
        from = (k - 1) << block_bits;
        at = blocks_[k - 1];  // < want: the end lies past `from`
    }
    if (from >= limit) return limit;
    std::size_t end = from;
    while (end < limit && at < want) at += cost(end++);  // at most one block's worth
    return end;  // > begin: at < want held at `from`
}

JobCore::JobCore(std::size_t size, std::uint64_t total_cost, const void* op_key, std::string op_name)
    : size_{size}, total_cost_{total_cost}, op_key_{op_key}, op_name_{std::move(op_name)}, remaining_{size},
      submitted_{Clock::now()} {}

JobCore::~JobCore() = default;

void JobCore::set_costs(const CostColumn& costs) {
    const std::uint32_t* per_task = costs.data();
    if (per_task == nullptr || size_ == 0) {
        cost_per_unit_ = static_cast<double>(std::max<std::uint32_t>(costs.uniform_cost(), 1));
        return;
    }
    auto w = std::make_unique<Weighted>();
    std::uint64_t uniform = 1;
    if (!w->index.build(per_task, size_, uniform)) {
        // Equal costs in units (perhaps only after the shift that keeps huge sums in range):
        // count tasks, each worth the unit's cost scaled back.
        cost_per_unit_ = std::ldexp(static_cast<double>(uniform), static_cast<int>(w->index.shift()));
        return;
    }
    w->units_per_task = static_cast<double>(w->index.total()) / static_cast<double>(size_);
    cost_per_unit_ = std::ldexp(1.0, static_cast<int>(w->index.shift()));
    weighted_ = std::move(w);
    set_cpu_chunk(cpu_chunk_);
}

Range JobCore::claim_by_cost(std::size_t max_tasks, std::uint64_t target) noexcept {
    const CostIndex& index = weighted_->index;
    std::size_t begin = cursor_.load(std::memory_order_relaxed);
    while (begin < size_) {
        const std::size_t limit = size_ - begin > max_tasks ? begin + max_tasks : size_;
        const std::size_t end = index.end_for(begin, limit, target);
        // Relaxed, like the uniform path's add: the cursor only hands out disjoint ranges; the
        // payloads were published with the job, the outputs are published by `remaining_`.
        // The cursor only moves from one task boundary to a later one (or to the end, by
        // claim_rest), so a range is never handed out twice; a failed exchange reloads it.
        if (cursor_.compare_exchange_weak(begin, end, std::memory_order_relaxed)) return {begin, end};
    }
    return {};
}

Range JobCore::claim_quota_by_cost(std::atomic<std::size_t>& claimed, std::size_t quota, std::size_t max_tasks,
                                   std::uint64_t target) noexcept {
    if (quota >= weighted_->index.total()) return claim_by_cost(max_tasks, target);
    // Reserve what the chunk may take of the quota first, and only below the quota (a
    // compare-and-swap, not an add): a reservation never lifts the counter past the quota, so
    // a claimer that sees it full knows every unit up to the quota is claimed or reserved by
    // a claimer still at work, who claims again after correcting its count. (An add let a
    // racing claimer leave its reservation standing: the lane then stopped short of its quota
    // and, without stealing, the batch never completed.)
    std::size_t before = claimed.load(std::memory_order_relaxed);
    std::uint64_t allowed = 0;
    do {
        if (before >= quota) return steal_ ? claim_by_cost(max_tasks, target) : Range{};
        allowed = std::min<std::uint64_t>(target, quota - before);
    } while (!claimed.compare_exchange_weak(before, before + static_cast<std::size_t>(allowed), std::memory_order_relaxed));
    const Range r = claim_by_cost(max_tasks, allowed);
    // Then count what the range carries instead of what was reserved: more (its last task
    // passes the reservation) or less (the task limit, the batch's end). Unsigned arithmetic
    // wraps, so adding `got - allowed` takes the difference off when it is negative; the
    // counter never drops below what the claimers have truly taken, since each one only ever
    // takes back the part of its own reservation it did not use.
    const std::uint64_t got = weighted_->index.units(r);
    if (got != allowed) claimed.fetch_add(static_cast<std::size_t>(got - allowed), std::memory_order_relaxed);
    return r;
}

Range JobCore::claim_cpu_by_cost(std::size_t max) noexcept {
    const std::uint64_t target = max == cpu_chunk_ ? weighted_->cpu_chunk_units : weighted_->units_for(max);
    return claim_quota_by_cost(cpu_claimed_, cpu_quota_, stretch(max), target);
}

Range JobCore::claim_device_by_cost(std::size_t d, std::size_t max) noexcept {
    if (d >= share_count_) return claim_by_cost(max, weighted_->units_for(max));
    DeviceShare& s = shares_[d];
    return claim_quota_by_cost(s.claimed, s.quota, std::max<std::size_t>(max, 1), s.chunk_units);
}

std::size_t JobCore::cpu_chunks_planned() const noexcept {
    const std::uint64_t share = std::max<std::uint64_t>(std::min<std::uint64_t>(share_units(), cpu_quota_), 1);
    const std::uint64_t chunk = weighted_ ? weighted_->cpu_chunk_units : cpu_chunk_;
    return static_cast<std::size_t>(share / chunk + (share % chunk != 0));
}

std::uint64_t JobCore::engine_batches_completed() const noexcept {
    return engine_ ? engine_->sum(&EngineShared::Shard::batches_completed) : 0;
}

std::uint64_t JobCore::engine_batches_submitted() const noexcept {
    return engine_ ? engine_->sum(&EngineShared::Shard::batches_submitted) : 0;
}

void JobCore::attach(std::shared_ptr<EngineShared> engine) noexcept {
    engine_ = std::move(engine);
    if (engine_->trace) trace_id_ = engine_->trace->next_batch_id();
}

void JobCore::trace_event(int kind, Range r, std::int64_t begin_ns, std::int64_t end_ns, std::uint32_t track,
                          std::uint32_t device, const GpuChunkTimes* gpu) const noexcept {
    const bool failed = kind == static_cast<int>(TraceKind::Batch) && static_cast<bool>(failure_);
    // Written in place in the ring's slot (every field: the slot holds an older event).
    engine_->trace->record([&](TraceEvent& e) noexcept {
        e.kind = static_cast<TraceKind>(kind);
        e.begin_ns = begin_ns;
        e.end_ns = end_ns;
        e.batch = trace_id_;
        e.first_task = r.begin;
        e.tasks = r.size();
        e.track = track;
        e.device = device;
        e.failed = failed;
        e.set_op(op_name_);
        e.stages = gpu && gpu->stages_timed;
        if (!e.stages) return;
        // Contiguous stages from the mapped H2D start, kept inside the chunk's host span.
        const std::int64_t mapped = gpu->stage_start.time_since_epoch().count();
        std::int64_t at = mapped != 0 ? mapped : begin_ns;
        const std::int64_t took[3] = {gpu->h2d.count(), gpu->kernel.count(), gpu->d2h.count()};
        for (int s = 0; s < 4; ++s) {
            if (s > 0) at += took[s - 1];
            e.stage_ns[s] = std::clamp(at, begin_ns, end_ns);
        }
    });
}

void JobCore::note_start(Clock::time_point t) noexcept { atomic_min(first_start_ns_, t.time_since_epoch().count()); }

std::chrono::nanoseconds JobCore::wait_spin() const noexcept {
    constexpr std::chrono::nanoseconds spin = std::chrono::microseconds{100};
    if (!engine_) return spin;
    // Where idle actors spin: not for a batch sent to a parked worker. (Not spinning while
    // every core is busy was tried there too: a 1-task batch behind a huge one then waited
    // 205 µs at p50 instead of 71 µs, its caller's wake-up queued behind the busy workers,
    // and its p99 did not improve; bench/logs/h200-1gpu-fit.)
    if (spinning_pays()) return cold_start_ ? std::chrono::nanoseconds{0} : spin;
    // A small machine: spin only if the busy workers leave a core for this thread.
    return engine_->no_core_free() ? std::chrono::nanoseconds{0} : spin;
}

actors::SpinPolicy JobCore::wait_policy() const noexcept {
    thread_local actors::SpinHistory history;
    actors::SpinPolicy policy{wait_spin()};
    policy.history = &history;
    policy.yield = !spinning_pays();
    return policy;
}

bool JobCore::waiter_may_run() noexcept {
    // Never on an engine of one worker, which a program may use to run an op on one thread at
    // a time. Not a batch with large inputs either: its completion frees them, which belongs
    // on a worker (`CompletionTails`), not in the caller's get().
    if (!engine_ || engine_->workers < 2 || !has_cpu()) return false;
    // (From the fields fixed at construction: `input_bytes()` reads the payload column, which
    // a worker completing the batch at this moment may be releasing.)
    const std::size_t in_size = gpu_view().in_size;
    return in_size == 0 || size_ < CompletionTails::min_bytes / in_size;
}

void JobCore::help() noexcept {
    // Only a batch the plan sent to one worker of several (a batch spread over workers would
    // take the waiter's core from them, or a device actor's).
    if (!one_worker_ || !waiter_may_run()) return;
    // Meanwhile this thread counts as one of the engine's (as a worker would): a task's
    // `submit` does not wait for admission, and a shutdown from a task does not wait for the
    // batch it runs in. Its chunks go to a trace track of its own.
    const CompletingFor marker{engine_.get()};
    static std::atomic<std::uint32_t> next_waiter{0};
    thread_local const std::uint32_t waiter_track =
        TraceEvent::first_waiter + next_waiter.fetch_add(1, std::memory_order_relaxed) % (TraceEvent::first_waiter - 1);
    struct Track {
        std::uint32_t saved = tl_worker;
        ~Track() { tl_worker = saved; }
    } track;
    tl_worker = waiter_track;
    const std::size_t chunk = cpu_chunk();
    // As a worker runs its share (the last range may complete the batch; the caller's future
    // keeps the job alive).
    for (Range r = claim_cpu(chunk); !r.empty(); r = claim_cpu(chunk)) run_or_skip(*this, r, engine_->stopping, true);
}

void JobCore::run_cpu(Range r, bool own_share) {
    if (!has_cpu()) {  // a GPU-only op whose device work failed has nowhere else to go
        skip(r, ExecError::DeviceFailed);
        return;
    }
    const auto start = Clock::now();
    note_start(start);
    do_run_cpu(r);  // a throwing task is recorded by the op's loop; nothing escapes it
    const auto stop = Clock::now();
    atomic_min(cpu_first_ns_, start.time_since_epoch().count());
    atomic_max(cpu_last_ns_, stop.time_since_epoch().count());
    std::chrono::nanoseconds took = stop - start;
    // Share units of the range: tasks, or its cost when the batch's costs differ.
    const std::uint64_t units = weighted_ ? weighted_->index.units(r) : r.size();
    if (engine_ && engine_->simulate_cpu_cost) {
        // The modelled time counts the range's cost (tasks when every task costs 1).
        const double ns = cost(r) * static_cast<double>(engine_->cpu_per_task.count());
        took = engine_->cpu_fixed_cost + std::chrono::nanoseconds{static_cast<std::int64_t>(std::min(ns, 9e18))};
    }
    if (engine_ && engine_->trace) {
        trace_event(static_cast<int>(TraceKind::CpuChunk), r, start.time_since_epoch().count(),
                    stop.time_since_epoch().count(), tl_worker, 0, nullptr);
    }
    cpu_ns_.fetch_add(static_cast<std::uint64_t>(took.count()), std::memory_order_relaxed);
    cpu_tasks_.fetch_add(r.size(), std::memory_order_relaxed);
    cpu_chunks_.fetch_add(1, std::memory_order_relaxed);
    if (weighted_) weighted_->cpu_units.fetch_add(units, std::memory_order_relaxed);
    if (own_share && observer_ && plan_.devices != 0) {  // a CPU-only plan's share ends with the batch
        const std::uint64_t before = cpu_share_run_.fetch_add(units, std::memory_order_relaxed);
        const std::uint64_t planned = plan_.cpu_share;
        if (before < planned && before + units >= planned) share_done(0);
    }
    finish(r.size());
}

bool JobCore::run_on_host(Range r) {
    if (has_cpu()) {
        do_run_cpu(r);
        return true;
    }
    const GpuView v = gpu_view();
    if (v.launcher == nullptr) return false;
    const auto* in = static_cast<const char*>(v.in) + r.begin * v.in_size;
    auto* out = static_cast<char*>(v.out) + r.begin * v.out_size;
    return !v.launcher->run_on_host(in, out, r.size());
}

void JobCore::skip(Range r, ExecError why) noexcept {
    if (r.empty()) return;
    default_fill(r);
    int expected = 0;
    first_skip_.compare_exchange_strong(expected, static_cast<int>(why), std::memory_order_relaxed);
    skipped_tasks_.fetch_add(r.size(), std::memory_order_relaxed);
    finish(r.size());
}

bool JobCore::cancel(ExecError why) noexcept {
    // One CAS decides: once it succeeds the batch reports `why` (complete() reads the flag);
    // complete() closes the flag first, so a cancel that loses to it returns false.
    int expected = 0;
    if (!cancel_.compare_exchange_strong(expected, static_cast<int>(why), std::memory_order_acq_rel)) {
        return expected > 0;  // cancelled already (true), or completed (false)
    }
    EngineShared* const engine = engine_.get();
    // `offloading` keeps the engine from finishing its shutdown (and destroying the scheduler
    // behind `offload`) until this call has left the scheduler's mailbox, even if the skip it
    // hands over completes the batch on another thread before `skip_later` returns.
    if (engine) engine->offloading.fetch_add(1, std::memory_order_seq_cst);
    const Range rest = claim_rest();
    if (!rest.empty()) {
        std::shared_ptr<JobCore> self = weak_from_this().lock();
        if (engine && engine->offload && self) {
            engine->offload->skip_later(std::move(self), rest, why);
        } else {
            skip(rest, why);  // no engine (or not owned by a shared_ptr): here, then
        }
    }
    if (engine) {
        engine->offloading.fetch_sub(1, std::memory_order_release);
        engine->wake_room_waiters();
    }
    return true;
}

void JobCore::fail(std::error_code why) noexcept {
    failure_ = why;
    if (size_ == 0) {
        complete();
    } else {
        // Never dispatched: nobody else touches the job, so the skip completes it here.
        skip(claim_rest(), static_cast<ExecError>(why.value()));
    }
}

void JobCore::finish_gpu(Range r, const GpuChunkTimes& t, unsigned device) noexcept {
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
    if (engine_ && device < engine_->device_count) {
        // The device's own counters: one writer (its actor), relaxed adds, per chunk.
        EngineShared::DeviceCounters& c = engine_->devices[device];
        c.tasks.fetch_add(r.size(), std::memory_order_relaxed);
        c.chunks.fetch_add(1, std::memory_order_relaxed);
        c.bytes_h2d.fetch_add(t.bytes_h2d, std::memory_order_relaxed);
        c.bytes_d2h.fetch_add(t.bytes_d2h, std::memory_order_relaxed);
        if (engine_->trace) {
            trace_event(static_cast<int>(TraceKind::GpuChunk), r, t.start.time_since_epoch().count(),
                        t.end.time_since_epoch().count(), t.stream, device, &t);
        }
        if (engine_->record_histograms) {
            c.chunk_duration.record(t.total);
            if (t.stages_timed) {
                c.stage_duration[static_cast<std::size_t>(GpuStage::H2D)].record(t.h2d);
                c.stage_duration[static_cast<std::size_t>(GpuStage::Kernel)].record(t.kernel);
                c.stage_duration[static_cast<std::size_t>(GpuStage::D2H)].record(t.d2h);
            }
        }
    }
    atomic_min(gpu_first_ns_, t.start.time_since_epoch().count());
    atomic_max(gpu_last_ns_, t.end.time_since_epoch().count());
    const std::uint64_t units = weighted_ ? weighted_->index.units(r) : r.size();
    if (weighted_) weighted_->gpu_units.fetch_add(units, std::memory_order_relaxed);
    if (device < share_count_) {
        DeviceShare& share = shares_[device];
        if (t.contended) share.contended.store(true, std::memory_order_relaxed);
        atomic_min(share.first_ns, t.timeline_start.count());
        atomic_max(share.last_ns, t.timeline_end.count());
        if (t.waited.count() >= 0) atomic_min(share.waited_ns, static_cast<std::int64_t>(t.waited.count()));
        // After the span: the observer reads it as soon as the share is done.
        const std::uint64_t before = share.units.fetch_add(units, std::memory_order_acq_rel);
        if (observer_ && before < share.quota && before + units >= share.quota) share_done(1 + device);
    }
    finish(r.size());
}

void JobCore::note_fallback(Range r, std::error_code why) noexcept {
    fallback_tasks_.fetch_add(r.size(), std::memory_order_relaxed);
    if (engine_) {
        const auto reason = static_cast<std::size_t>(fallback_reason(why)) - 1;
        engine_->cpu_fallbacks[reason].fetch_add(r.size(), std::memory_order_relaxed);
    }
    std::lock_guard lock{mutex_};  // error_code: copying it cannot throw
    if (!fallback_reason_) fallback_reason_ = why;
}

void JobCore::abandon_memory() noexcept {
    if (abandoned_.exchange(true, std::memory_order_acq_rel)) return;
    if (engine_) engine_->batches_abandoned.fetch_add(1, std::memory_order_relaxed);
    try {
        keep_until_exit(shared_from_this());
    } catch (...) {
    }
}

bool JobCore::set_continuation(UniqueFunction&& fn) noexcept {
    continuation_ = std::move(fn);
    std::uint8_t expected = 0;
    if (continuation_state_.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) return true;
    fn = std::move(continuation_);  // completed already: hand the function back
    return false;
}

void JobCore::task_failed(std::size_t index, std::exception_ptr error) noexcept {
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

ExecStats JobCore::make_stats(Clock::time_point now) const {
    ExecStats s;
    s.tasks = size_;
    s.cpu_tasks = cpu_tasks_.load(std::memory_order_relaxed);
    s.gpu_tasks = gpu_tasks_.load(std::memory_order_relaxed);
    // Costs: counted per chunk only where they differ; otherwise tasks × the one cost.
    s.cpu_cost = cost_count(weighted_ ? weighted_->cpu_units.load(std::memory_order_relaxed) : s.cpu_tasks);
    s.gpu_cost = cost_count(weighted_ ? weighted_->gpu_units.load(std::memory_order_relaxed) : s.gpu_tasks);
    s.fallback_tasks = fallback_tasks_.load(std::memory_order_relaxed);
    s.failed_tasks = failed_tasks_.load(std::memory_order_relaxed);
    s.skipped_tasks = skipped_tasks_.load(std::memory_order_relaxed);
    s.cpu_chunks = cpu_chunks_.load(std::memory_order_relaxed);
    s.gpu_chunks = gpu_chunks_.load(std::memory_order_relaxed);
    s.gpu_devices_used = static_cast<std::uint32_t>(__builtin_popcountll(devices_used_.load(std::memory_order_relaxed)));
    s.device = s.gpu_tasks == 0 ? DeviceKind::Cpu : (s.cpu_tasks == 0 ? DeviceKind::Gpu : DeviceKind::Hybrid);
    if (fallback_reason_) s.fallback_reason = fallback_reason_.message();  // may throw: caller catches
    const std::int64_t first = first_start_ns_.load(std::memory_order_relaxed);
    if (first != std::numeric_limits<std::int64_t>::max()) {
        s.queue_wait = std::max(std::chrono::nanoseconds{0}, Clock::time_point{Clock::duration{first}} - submitted_);
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
        s.overlap_ratio = static_cast<double>(s.gpu_time.count()) / static_cast<double>(g1 - g0);
    }
    s.wall_time = now - submitted_;
    const std::int64_t c0 = cpu_first_ns_.load(std::memory_order_relaxed);
    const std::int64_t c1 = cpu_last_ns_.load(std::memory_order_relaxed);
    const std::int64_t sub = submitted_.time_since_epoch().count();
    if (c1 >= c0) {
        s.cpu_span = std::chrono::nanoseconds{c1 - c0};
        s.cpu_done = std::chrono::nanoseconds{std::max<std::int64_t>(c1 - sub, 0)};
    }
    if (s.gpu_chunks != 0 && g1 >= g0) s.gpu_done = std::chrono::nanoseconds{std::max<std::int64_t>(g1 - sub, 0)};
    s.placement = plan_.info;
    return s;
}

void JobCore::complete() noexcept {
    const auto now = Clock::now();
    const int cancelled = cancel_.exchange(-1, std::memory_order_acq_rel);  // no cancel succeeds from now on
    if (!failure_) {
        const int skip = first_skip_.load(std::memory_order_relaxed);
        if (skip != 0) {
            failure_ = static_cast<ExecError>(skip);
        } else if (cancelled > 0) {
            failure_ = static_cast<ExecError>(cancelled);  // cancelled while its last chunks ran
        }
    }
    ExecStats stats;
    try {
        stats = make_stats(now);
        amend_stats(stats);
    } catch (...) {
        stats.fallback_reason.clear();  // only the reason's text can fail to allocate
    }
    if (observer_) {
        share_done(0);
        for (std::size_t d = 0; d < share_count_; ++d) share_done(1 + d);
        observer_->on_complete(*this, stats);
    }
    std::vector<TaskError> errors;
    {
        std::lock_guard lock{mutex_};
        errors.swap(errors_);
    }
    const std::uint64_t cpu = stats.cpu_tasks, gpu = stats.gpu_tasks, bad = stats.failed_tasks,
                        skipped = stats.skipped_tasks;
    const DeviceKind ran_on = stats.device;
    const std::chrono::nanoseconds wall = stats.wall_time, queue_wait = stats.queue_wait;
    try {
        assemble(std::move(stats), std::move(errors));
    } catch (...) {
        failure_ = ExecError::OutOfMemory;  // building the result ran out of memory
    }
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
        add(e.batches_failed, failure_ ? 1 : 0);
        add(e.task_failures, bad);
        add(e.tasks_skipped, skipped);
        // Before the waiter is woken: a trace written right after get() shows this batch.
        if (e.trace && trace_id_ != 0) {
            trace_event(static_cast<int>(TraceKind::Batch), Range{0, size_}, submitted_.time_since_epoch().count(),
                        now.time_since_epoch().count(), 0, 0, nullptr);
        }
        // Per batch, into this thread's shard; a batch none of whose tasks ran says nothing
        // about where batches run or how long they wait. Here, before the waiter is woken:
        // measured with bench/cpu/metrics_overhead, recording after the wake-up made 1-task
        // round trips 3-7% slower (the worker is then still busy as the next batch comes),
        // here nothing measurable.
        if (e.record_histograms && cpu + gpu != 0) {
            auto& h = e.histograms[EngineShared::my_shard()];
            h.batch_duration[static_cast<std::size_t>(ran_on)].record(wall);
            if (first_start_ns_.load(std::memory_order_relaxed) != std::numeric_limits<std::int64_t>::max()) {
                h.queue_wait.record(queue_wait);
            }
        }
    }

    // Inputs in memory the program gave are freed before the batch is ready: once get()
    // returns, the program may destroy that memory resource.
    const bool heap_inputs = inputs_on_heap();
    if (!heap_inputs && !abandoned_.load(std::memory_order_acquire)) release_inputs();
    ready_.store(true, std::memory_order_release);
    // A waiter woken from its sleep needs a core; when busy workers hold every core it would
    // wait for the kernel to preempt one (milliseconds: a 1-task batch behind a huge one
    // waited 3.8 ms at p50 on 2 cores). The completing thread then offers its core at once.
    // Only on the engine's own threads: a user's thread (a cancel's skip) may hold its locks.
    if (parker_.notify() && engine_ && current_engine() != nullptr && engine_->no_core_free()) {
        std::this_thread::yield();
    }
    run_continuation();
    // Heap inputs are freed on an engine thread and not in the owner's get(): freeing a large
    // batch unmaps its pages, ~9 ms for 256 MiB on a 16-core host. A CPU worker keeps that for
    // when it has nothing else to do, so the small batches queued behind it do not wait.
    const std::size_t bytes = input_bytes();
    if (heap_inputs && bytes >= CompletionTails::min_bytes) {
        CompletionTails* tails = CompletionTails::current();
        std::shared_ptr<JobCore> self = weak_from_this().lock();
        if (tails != nullptr && self && tails->keep(std::move(self), engine_.get(), bytes)) return;
    }
    complete_tail();
}

void JobCore::complete_tail() noexcept {
    if (!abandoned_.load(std::memory_order_acquire)) release_inputs();  // idempotent
    // Last: the batch leaves the engine's books only once nothing of its completion is left
    // to run, so `shutdown()` returns after every continuation and every free into engine
    // memory. `engine_` (shared) outlives this even if the continuation destroyed the engine.
    if (engine_) {
        engine_->inflight.fetch_sub(EngineShared::one_batch | size_, std::memory_order_release);
        engine_->wake_room_waiters();
    }
}

void CompletionTails::run() noexcept {
    // One at a time, and each job's last reference here dropped before the next: the vector
    // is swapped out first, so a tail that completes another job (it cannot: tails only free)
    // could not invalidate the loop.
    std::vector<std::shared_ptr<JobCore>> jobs;
    jobs.swap(jobs_);
    for (auto& job : jobs) {
        job->complete_tail();
        job.reset();
    }
    jobs.clear();
    if (jobs_.empty()) jobs_.swap(jobs);  // keep the capacity
    bytes_ = 0;
}

void JobCore::share_done(std::size_t lane) noexcept {
    if (lane >= 128) return;
    const std::uint64_t bit = std::uint64_t{1} << (lane % 64);
    if ((shares_done_[lane / 64].fetch_or(bit, std::memory_order_acq_rel) & bit) == 0) observer_->on_share_done(*this, lane);
}

void JobCore::run_continuation() noexcept {
    if (continuation_state_.exchange(2, std::memory_order_acq_rel) != 1) return;
    UniqueFunction fn = std::move(continuation_);
    // Inside the continuation this thread counts as one of the engine's: a `submit` from here
    // does not wait for admission, and destroying the engine from here does not join it.
    const CompletingFor marker{engine_.get()};
    try {
        fn();
    } catch (...) {
        if (engine_) {
            engine_->report_continuation_error(std::current_exception());
        } else {
            continuation_failed(std::current_exception());
        }
    }
}

}  // namespace tandem::detail
