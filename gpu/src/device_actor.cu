#include "device_actor.cuh"

#include <algorithm>
#include <bit>
#include <cstring>
#include <utility>

namespace tandem::gpu {

namespace {
float elapsed_ms(const Event& from, const Event& to) {
    float ms = 0;
    cudaEventElapsedTime(&ms, from.get(), to.get());
    return ms;
}
std::chrono::nanoseconds to_ns(float ms) { return std::chrono::nanoseconds{static_cast<long long>(ms * 1e6f)}; }
}  // namespace

DeviceActor::DeviceActor(DeviceState& state, const detail::BackendContext& context, PinnedMemory& pinned)
    : state_{state}, config_{context.config}, sink_{context.sink}, stopping_{context.stopping},
      engine_{context.engine}, pinned_{pinned} {
    const std::size_t streams = std::max<std::size_t>(config_.streams_per_device, 1);
    slot_budget_device_ = std::max<std::size_t>(config_.device_pool_bytes / streams, 2);
    slot_budget_stage_ = std::max<std::size_t>(config_.pinned_pool_bytes / streams, 2);
}

DeviceActor::~DeviceActor() { stop(); }

bool DeviceActor::start(actors::ActorOptions options) {
    auto started = started_.get_future();
    actor_ = std::make_unique<actors::Actor<DeviceMessage>>(*this, options);
    const bool ok = started.get();
    if (!ok) state_.healthy.store(false);
    return ok;
}

void DeviceActor::stop() {
    if (actor_) actor_->stop();
}

void DeviceActor::send(DeviceMessage m) noexcept { actor_->send(std::move(m)); }

void DeviceActor::on_rejected(DeviceMessage& m, actors::Rejection why) noexcept {
    if (m.job) {
        detail::give_back_share(m.job, why == actors::Rejection::Stopped, sink_,
                                make_cuda_error_code(cudaErrorMemoryAllocation));
    }
}

void DeviceActor::on_exception(DeviceMessage& m, std::exception_ptr) noexcept {
    // Only an allocation can throw in on_message (the job list, a trace record): the job's
    // share that this device has not claimed goes back to the CPU.
    if (m.job) detail::give_back_share(m.job, false, sink_, make_cuda_error_code(cudaErrorMemoryAllocation));
}

detail::DeviceUsage DeviceActor::usage() const noexcept {
    detail::DeviceUsage u;
    u.busy = std::chrono::nanoseconds{busy_.total_ns()};
    u.utilization = busy_.utilization(std::chrono::steady_clock::now().time_since_epoch().count(),
                                      std::chrono::nanoseconds{detail::utilization_window}.count());
    u.pinned_pool_used = pinned_pool_used_.load(std::memory_order_relaxed);
    u.pinned_pool_capacity = config_.pinned_pool_bytes;
    u.device_pool_used = device_pool_used_.load(std::memory_order_relaxed);
    u.device_pool_capacity = config_.device_pool_bytes;
    return u;
}

std::vector<GpuChunkTrace> DeviceActor::trace() const {
    std::lock_guard lock{trace_mutex_};
    return trace_;
}

void DeviceActor::on_start() {
    detail::set_current_engine(engine_);
    try {
        check(cudaSetDevice(state_.info.index), "cudaSetDevice");
        for (std::size_t i = 0; i < std::max<std::size_t>(config_.streams_per_device, 1); ++i) {
            slots_.push_back(std::make_unique<Slot>());
            slots_.back()->index = static_cast<unsigned>(i);
        }
        copy_in_.emplace();
        compute_.emplace();
        copy_out_.emplace();
        origin_.emplace();
        check(cudaEventRecord(origin_->get(), copy_in_->get()), "cudaEventRecord");
        anchor_.emplace();
        check(cudaEventRecord(anchor_->get(), copy_in_->get()), "cudaEventRecord");
        anchor_set_ = std::chrono::steady_clock::now();
        started_.set_value(true);
    } catch (...) {
        cudaGetLastError();
        slots_.clear();
        started_.set_value(false);
    }
}

bool DeviceActor::busy() const noexcept {
    for (const auto& s : slots_) {
        if (s->job) return true;
    }
    return false;
}

bool DeviceActor::fault_applies() const noexcept {
    return config_.faults.device < 0 || config_.faults.device == state_.info.index;
}

void DeviceActor::on_message(DeviceMessage& m) {
    if (!state_.healthy.load(std::memory_order_relaxed)) {
        // Retired between the scheduler's look and now: give this device's share back.
        const Range rest = m.job->claim_rest();
        if (!rest.empty()) sink_.fallback(m.job, rest, make_cuda_error_code(cudaErrorDevicesUnavailable));
        return;
    }
    Active a;
    a.started_idle = jobs_.empty() && !busy();
    const auto view = m.job->gpu_view();
    a.payload_pinned = view.payload_memory == &pinned_;
    // The chunk shrinks to what a slot's share of the pools holds, so the pools stay bounded.
    const std::size_t per_task = view.in_size + view.out_size;
    std::size_t chunk = std::min(m.chunk, slot_budget_device_ / per_task);
    const std::size_t staged = (a.payload_pinned ? 0 : view.in_size) + ((view.out_memory == &pinned_) ? 0 : view.out_size);
    if (staged) chunk = std::min(chunk, slot_budget_stage_ / staged);
    a.chunk = std::max<std::size_t>(chunk, 1);
    if (config_.trace) a.received = std::chrono::steady_clock::now();
    a.job = std::move(m.job);
    jobs_.push_back(std::move(a));
    poll();
    fill();
}

bool DeviceActor::on_idle() {
    poll();
    if (stopping_.load(std::memory_order_relaxed) && busy()) {
        // Shutdown waits for chunks in flight, but not forever: a kernel that never returns is
        // given up on after the grace period.
        const auto now = std::chrono::steady_clock::now();
        if (!stop_seen_) stop_seen_ = now;
        if (now - *stop_seen_ >= config_.shutdown_grace) {
            abandon();
            return false;
        }
        return true;
    }
    fill();
    // Keep polling while chunks are in flight, or while jobs wait for a slot (unless the
    // engine is stopping: then only in-flight chunks are waited for).
    return busy() || (!jobs_.empty() && !stopping_.load(std::memory_order_relaxed) &&
                      state_.healthy.load(std::memory_order_relaxed));
}

void DeviceActor::on_stop() {
    // Every chunk in flight has completed (on_idle kept us running until then). What is left
    // unclaimed of the jobs still held is not run.
    for (auto& a : jobs_) a.job->skip(a.job->claim_rest(), ExecError::ShutDown);
    jobs_.clear();
    release_slots();
}

void DeviceActor::abandon() noexcept {
    // The device is stuck (a kernel that never returns). Its chunks' batches fail, and every
    // byte the stuck work may still read or write stays allocated for good: the batches'
    // payloads and outputs (abandon_memory), the slots' device buffers and staging memory.
    // Nothing here waits for the device: cudaFree and cudaFreeHost would.
    abandoned_.store(true, std::memory_order_release);
    state_.healthy.store(false);
    for (auto& slot : slots_) {
        if (!slot->job) continue;
        auto job = std::move(slot->job);
        slot->job = nullptr;
        job->abandon_memory();
        job->skip(slot->range, ExecError::DeviceFailed);
    }
    for (auto& slot : slots_) {
        slot->device_in.leak();
        slot->device_out.leak();
        slot->stage_in = slot->stage_out = nullptr;  // never handed back to the pool
        slot->stage_in_bytes = slot->stage_out_bytes = 0;
    }
    note_pools();
}

void DeviceActor::release_slots() noexcept {
    for (auto& s : slots_) {
        if (s->stage_in) pinned_.deallocate(s->stage_in, s->stage_in_bytes);
        if (s->stage_out) pinned_.deallocate(s->stage_out, s->stage_out_bytes);
        s->stage_in = s->stage_out = nullptr;
    }
    slots_.clear();
    note_pools();
    origin_.reset();
    anchor_.reset();
    copy_in_.reset();
    compute_.reset();
    copy_out_.reset();
}

void DeviceActor::note_pools() noexcept {
    std::size_t device = 0, pinned = 0;
    for (const auto& s : slots_) {
        device += s->device_in.capacity() + s->device_out.capacity();
        pinned += s->stage_in_bytes + s->stage_out_bytes;
    }
    device_pool_used_.store(device, std::memory_order_relaxed);
    pinned_pool_used_.store(pinned, std::memory_order_relaxed);
}

void DeviceActor::fill() {
    if (stopping_.load(std::memory_order_relaxed) || !state_.healthy.load(std::memory_order_relaxed)) return;
    for (auto& slot : slots_) {
        if (slot->job) continue;
        while (!jobs_.empty()) {
            Active& a = jobs_.front();
            if (a.job->cancel_requested()) {  // cancel() already skipped what was unclaimed
                jobs_.pop_front();
                continue;
            }
            const Range r = a.job->claim_device(state_.slot, a.chunk);
            if (r.empty()) {
                jobs_.pop_front();
                continue;
            }
            issue(*slot, a, r);
            // Round robin between the jobs held: a small batch is not starved by a huge one.
            // (A sticky failure inside issue() retires the device and empties jobs_.)
            if (jobs_.size() > 1) std::rotate(jobs_.begin(), jobs_.begin() + 1, jobs_.end());
            break;
        }
        if (jobs_.empty()) return;
    }
}

namespace {

/// What a slot's buffer grows to when `bytes` do not fit: the next power of two, but no more than
/// `cap` (this buffer's part of the slot's share of the pool), so that a chunk a little larger
/// than the last finds room. A split's shares, and with them its chunks, move a few percent from
/// batch to batch; growing each buffer to the exact size made every stream reallocate for each
/// larger chunk (cudaFree waits for the whole device, a cudaHostAlloc of a few MiB takes
/// milliseconds): on an H200 host the first eight chunks of a 4 M-task SHA-256 batch then
/// started 4.5 ms apart instead of 1.1 ms, and the GPU's share took 1.5x its time.
std::size_t grown(std::size_t bytes, std::size_t cap) noexcept {
    if (bytes >= cap) return bytes;
    return bytes > cap / 2 ? cap : std::min(std::bit_ceil(bytes), cap);  // (no bit_ceil above 2^63)
}

}  // namespace

void* DeviceActor::ensure_stage(void*& buffer, std::size_t& capacity, std::size_t bytes, std::size_t want) {
    if (capacity >= bytes) return buffer;
    if (buffer) pinned_.deallocate(buffer, capacity);
    buffer = nullptr;
    capacity = 0;
    want = std::max(want, bytes);
    try {
        buffer = pinned_.allocate(want);
    } catch (const std::bad_alloc&) {
        if (want == bytes) throw;  // none is left
        want = bytes;
        buffer = pinned_.allocate(want);
    }
    capacity = want;
    return buffer;
}

void DeviceActor::issue(Slot& slot, Active& a, Range r) {
    const auto began = std::chrono::steady_clock::now();
    const auto view = a.job->gpu_view();
    const std::size_t n = r.size();
    const std::size_t in_bytes = n * view.in_size, out_bytes = n * view.out_size;
    const auto* src = static_cast<const char*>(view.in) + r.begin * view.in_size;
    char* dst = static_cast<char*>(view.out) + r.begin * view.out_size;
    const bool inject_here = fault_applies();

    // Buffers first: a failure here is a clean fallback, nothing is enqueued yet.
    cudaError_t status = (inject_here && config_.faults.fail_device_alloc) ? cudaErrorMemoryAllocation : cudaSuccess;
    const std::size_t held = slot.device_in.capacity() + slot.device_out.capacity() + slot.stage_in_bytes +
                             slot.stage_out_bytes;
    // Each buffer may grow into its part of the slot's share of the pool (by the bytes per task
    // it holds; `on_message` keeps a chunk within the share).
    const std::size_t per_task = view.in_size + view.out_size;
    const std::size_t staged = (a.payload_pinned ? 0 : view.in_size) + (view.out_memory == &pinned_ ? 0 : view.out_size);
    auto part = [](std::size_t budget, std::size_t size, std::size_t of) { return of == 0 ? 0 : budget / of * size; };
    if (status == cudaSuccess) status = slot.device_in.reserve(in_bytes, grown(in_bytes, part(slot_budget_device_, view.in_size, per_task)));
    if (status == cudaSuccess) status = slot.device_out.reserve(out_bytes, grown(out_bytes, part(slot_budget_device_, view.out_size, per_task)));
    if (status == cudaErrorMemoryAllocation && !(inject_here && config_.faults.fail_device_alloc) &&
        slot.device_in.capacity() > in_bytes) {
        // The input took room to grow that the output then lacked (a device short of memory):
        // both at their exact sizes before giving up. (The slot is idle: its buffers are free.)
        cudaGetLastError();
        slot.device_in.release();
        slot.device_out.release();
        status = slot.device_in.reserve(in_bytes);
        if (status == cudaSuccess) status = slot.device_out.reserve(out_bytes);
    }
    if (status != cudaSuccess) {
        cudaGetLastError();
        note_pools();
        sink_.fallback(a.job, r, make_cuda_error_code(status));
        return;
    }
    try {
        if (inject_here && config_.faults.fail_pinned_alloc && !(a.payload_pinned && (view.out_memory == &pinned_))) {
            throw std::bad_alloc{};
        }
        if (!a.payload_pinned) {
            std::memcpy(ensure_stage(slot.stage_in, slot.stage_in_bytes, in_bytes,
                                     grown(in_bytes, part(slot_budget_stage_, view.in_size, staged))),
                        src, in_bytes);  // pack
            src = static_cast<const char*>(slot.stage_in);
        }
        slot.unstage_out = !(view.out_memory == &pinned_);
        if (slot.unstage_out) {
            dst = static_cast<char*>(ensure_stage(slot.stage_out, slot.stage_out_bytes, out_bytes,
                                                  grown(out_bytes, part(slot_budget_stage_, view.out_size, staged))));
        }
    } catch (const std::bad_alloc&) {
        note_pools();
        sink_.fallback(a.job, r, make_cuda_error_code(cudaErrorMemoryAllocation));
        return;
    }
    if (slot.device_in.capacity() + slot.device_out.capacity() + slot.stage_in_bytes + slot.stage_out_bytes != held) {
        note_pools();  // a buffer grew (rarely: they are kept)
    }

    slot.job = a.job;
    slot.range = r;
    slot.issued = std::chrono::steady_clock::now();
    slot.began = began;
    slot.received = a.received;
    slot.reports_wait = std::exchange(a.started_idle, false);
    // Two ways to issue a chunk:
    // - small chunks (latency): the whole chain on the slot's own stream with one event at the
    //   end; every extra driver call shows at 4 KiB, so the chunk's time is read on the host
    //   (issued -> seen complete);
    // - large chunks (throughput): each stage on the device's stage stream (every H2D on one,
    //   every kernel on another, every D2H on a third), chained by events. A chunk's H2D then
    //   never queues behind another chunk's D2H that waits for its kernel. Measured on an
    //   H100: with each whole chain on a stream of its own, the next wave's H2Ds started only
    //   when the last D2H of the previous wave ended, and a 1 GiB map reached 67 of 97 GB/s.
    slot.pipelined = in_bytes + out_bytes >= pipeline_min_bytes;
    const cudaStream_t s_in = slot.pipelined ? copy_in_->get() : slot.stream.get();
    const cudaStream_t s_run = slot.pipelined ? compute_->get() : s_in;
    const cudaStream_t s_out = slot.pipelined ? copy_out_->get() : s_in;
    status = slot.pipelined ? cudaEventRecord(slot.events[0].get(), s_in) : cudaSuccess;
    if (status == cudaSuccess) status = cudaMemcpyAsync(slot.device_in.get(), src, in_bytes, cudaMemcpyHostToDevice, s_in);
    if (status == cudaSuccess && slot.pipelined) status = cudaEventRecord(slot.events[1].get(), s_in);
    if (status == cudaSuccess && slot.pipelined) status = cudaStreamWaitEvent(s_run, slot.events[1].get(), 0);
    if (status == cudaSuccess) {
        std::error_code launched = (inject_here && config_.faults.fail_launch)
                                       ? make_cuda_error_code(cudaErrorLaunchOutOfResources)
                                       : view.launcher->launch(s_run, slot.device_in.get(), slot.device_out.get(), n);
        // A slowed device (benchmarks): the same kernel on the same inputs, again.
        const std::uint32_t repeats = inject_here ? config_.faults.kernel_repeats : 1;
        for (std::uint32_t k = 1; !launched && k < repeats; ++k) {
            launched = view.launcher->launch(s_run, slot.device_in.get(), slot.device_out.get(), n);
        }
        if (launched) {
            cudaGetLastError();
            on_cuda_error(&slot, r, a.job, static_cast<cudaError_t>(launched.value()));
            return;
        }
    }
    if (status == cudaSuccess && slot.pipelined) status = cudaEventRecord(slot.events[2].get(), s_run);
    if (status == cudaSuccess && slot.pipelined) status = cudaStreamWaitEvent(s_out, slot.events[2].get(), 0);
    if (status == cudaSuccess) status = cudaMemcpyAsync(dst, slot.device_out.get(), out_bytes, cudaMemcpyDeviceToHost, s_out);
    // A small chunk is alone on its slot's stream: querying the stream tells when it is done,
    // one driver call fewer than recording an event.
    if (status == cudaSuccess && slot.pipelined) status = cudaEventRecord(slot.events[3].get(), s_out);
    if (status != cudaSuccess) on_cuda_error(&slot, r, a.job, status);
}

void DeviceActor::drain(Slot* slot) noexcept {
    // A failure path only: copies already enqueued may still write a chunk's outputs, so let
    // them finish before the CPU reruns its range (instant on a broken context).
    if (slot) cudaStreamSynchronize(slot->stream.get());
    for (auto* s : {&copy_in_, &compute_, &copy_out_}) {
        if (*s) cudaStreamSynchronize((*s)->get());
    }
    cudaGetLastError();
}

void DeviceActor::poll() {
    for (auto& slot : slots_) {
        if (!slot->job) continue;
        const cudaError_t status = slot->pipelined ? cudaEventQuery(slot->events[3].get())
                                                   : cudaStreamQuery(slot->stream.get());
        if (status == cudaSuccess) {
            complete(*slot);
        } else if (status != cudaErrorNotReady) {
            auto job = slot->job;
            on_cuda_error(slot.get(), slot->range, job, status);
        }
        // Retired: every chunk in flight went back to the CPU and no job is held any more.
        if (!state_.healthy.load(std::memory_order_relaxed)) return;
    }
}

void DeviceActor::complete(Slot& slot) {
    const auto view = slot.job->gpu_view();
    const Range r = slot.range;
    if (slot.unstage_out) {  // unpack
        std::memcpy(static_cast<char*>(view.out) + r.begin * view.out_size, slot.stage_out, r.size() * view.out_size);
    }
    detail::GpuChunkTimes t;
    t.start = slot.issued;
    t.end = std::chrono::steady_clock::now();
    // The share's span (what placement learns from) includes packing the inputs.
    t.timeline_start = slot.began.time_since_epoch();
    t.timeline_end = t.end.time_since_epoch();
    if (slot.reports_wait) {
        t.waited = std::max(std::chrono::nanoseconds{0},
                            std::chrono::duration_cast<std::chrono::nanoseconds>(slot.began - slot.job->handed_over()));
    }
    // Another batch on the device now: this batch's span also measures that one's chunks.
    t.contended = jobs_.size() > 1;
    for (const auto& s : slots_) t.contended = t.contended || (s->job && s->job != slot.job);
    if (slot.pipelined) {
        t.total = to_ns(elapsed_ms(slot.events[0], slot.events[3]));
        t.h2d = to_ns(elapsed_ms(slot.events[0], slot.events[1]));
        t.kernel = to_ns(elapsed_ms(slot.events[1], slot.events[2]));
        t.d2h = to_ns(elapsed_ms(slot.events[2], slot.events[3]));
        t.stages_timed = true;
    } else {
        t.total = t.end - t.start;
    }
    t.bytes_h2d = r.size() * view.in_size;
    t.bytes_d2h = r.size() * view.out_size;
    if (config_.trace) {
        GpuChunkTrace tr;
        tr.device = state_.info.index;
        for (std::size_t i = 0; i < slots_.size(); ++i) {
            if (slots_[i].get() == &slot) tr.stream = static_cast<int>(i);
        }
        tr.first_task = r.begin;
        tr.tasks = r.size();
        if (slot.pipelined) {
            tr.h2d_start = elapsed_ms(*origin_, slot.events[0]);
            tr.h2d_end = elapsed_ms(*origin_, slot.events[1]);
            tr.kernel_end = elapsed_ms(*origin_, slot.events[2]);
            tr.d2h_end = elapsed_ms(*origin_, slot.events[3]);
        }
        tr.host_handed_ns = slot.job->handed_over().time_since_epoch().count();
        tr.host_received_ns = slot.received.time_since_epoch().count();
        tr.host_began_ns = slot.began.time_since_epoch().count();
        tr.host_issued_ns = slot.issued.time_since_epoch().count();
        tr.host_seen_ns = std::chrono::steady_clock::now().time_since_epoch().count();
        try {
            std::lock_guard lock{trace_mutex_};
            trace_.push_back(tr);
        } catch (...) {  // out of memory for the trace: the record is dropped, the chunk is not
        }
    }
    t.stage_start = account_busy(slot, t.end);  // last use of the slot's events: it may take one as the anchor
    t.stream = slot.index;
    auto job = std::move(slot.job);
    slot.job = nullptr;
    job->finish_gpu(r, t, static_cast<unsigned>(state_.slot));
    ++completed_chunks_;
    if (fault_applies() && config_.faults.fail_device_after_chunks >= 0 &&
        completed_chunks_ >= config_.faults.fail_device_after_chunks) {
        retire(make_cuda_error_code(cudaErrorLaunchFailure));  // as if the device hit a sticky error
    }
}

std::chrono::steady_clock::time_point DeviceActor::account_busy(Slot& slot,
                                                                std::chrono::steady_clock::time_point seen) noexcept {
    const auto issued_ns = static_cast<double>(slot.issued.time_since_epoch().count());
    const auto seen_ns = static_cast<double>(seen.time_since_epoch().count());
    double start = issued_ns, end = seen_ns;
    float from_anchor_ms = 0, span_ms = 0;
    const bool timed = slot.pipelined && anchor_ &&
                       cudaEventElapsedTime(&from_anchor_ms, anchor_->get(), slot.events[0].get()) == cudaSuccess &&
                       cudaEventElapsedTime(&span_ms, slot.events[0].get(), slot.events[3].get()) == cudaSuccess;
    if (timed) {
        // On the device timeline; the chunk's own span from its own two events (exact).
        const double first = anchor_device_ns_ + static_cast<double>(from_anchor_ms) * 1e6;
        const double last = first + static_cast<double>(span_ms) * 1e6;
        const double low = issued_ns - first, high = seen_ns - last;  // bounds of the offset
        clock_offset_ns_ = std::min(offset_known_ ? std::max(clock_offset_ns_, low) : low, high);
        offset_known_ = true;
        start = std::max(first + clock_offset_ns_, issued_ns);
        end = std::clamp(last + clock_offset_ns_, start, seen_ns);
        if (seen - anchor_set_ >= std::chrono::milliseconds{100}) {  // keep the reference recent
            anchor_->swap(slot.events[3]);  // the slot re-records its events before their next use
            anchor_device_ns_ = last;
            anchor_set_ = seen;
        }
    } else if (slot.pipelined) {
        cudaGetLastError();  // a failed elapsed-time query is not sticky: the host times will do
    }
    // No chunk issued later starts before the earliest one still in flight was issued.
    auto horizon = seen.time_since_epoch().count();
    for (const auto& s : slots_) {
        if (s->job && s.get() != &slot) horizon = std::min(horizon, s->issued.time_since_epoch().count());
    }
    busy_.add(static_cast<std::int64_t>(start), static_cast<std::int64_t>(end), horizon);
    return std::chrono::steady_clock::time_point{
        std::chrono::steady_clock::duration{static_cast<std::chrono::steady_clock::rep>(start)}};
}

void DeviceActor::on_cuda_error(Slot* slot, Range r, const std::shared_ptr<JobCore>& job, cudaError_t status) {
    // Clear the error if it is not sticky; a sticky one (the context is broken) shows again on
    // the next call, and then the device is retired.
    cudaGetLastError();
    const cudaError_t again = slot ? cudaStreamQuery(slot->stream.get()) : cudaSuccess;
    const bool sticky = again != cudaSuccess && again != cudaErrorNotReady;
    drain(slot);
    if (slot) slot->job = nullptr;
    sink_.fallback(job, r, make_cuda_error_code(status));
    if (sticky) retire(make_cuda_error_code(again));
}

void DeviceActor::retire(std::error_code why) {
    if (!state_.healthy.exchange(false)) return;
    // Results of chunks in flight cannot be trusted: rerun them elsewhere, with everything
    // this device would still have claimed. Their copies are drained first so no DMA writes
    // into outputs the CPU is rewriting (instant on a broken context; a failure path only).
    drain(nullptr);
    for (auto& slot : slots_) {
        if (!slot->job) continue;
        drain(slot.get());
        auto job = std::move(slot->job);
        slot->job = nullptr;
        sink_.fallback(job, slot->range, why);
    }
    for (auto& a : jobs_) {
        const Range rest = a.job->claim_rest();
        if (!rest.empty()) sink_.fallback(a.job, rest, why);
    }
    jobs_.clear();
}

}  // namespace tandem::gpu
