#pragma once
/// \file
/// BatchPromise: completes a `BatchFuture<R>` from outside any engine, for components that run
/// a batch elsewhere (the MPI cluster, <tandem/cluster.hpp>) and hand back the same future an
/// engine gives.

#include <tandem/detail/job.hpp>
#include <tandem/error.hpp>
#include <tandem/future.hpp>
#include <tandem/result.hpp>
#include <tandem/task.hpp>

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace tandem {

namespace detail {

/// A job that no engine runs: every task is claimed at construction, so a cancel only raises
/// the flag (`cancel_requested`) and can never touch the outputs; the owner writes them and
/// completes the job (`JobCore::complete_outside`).
template <class R>
class PromiseJob final : public ResultCore<R> {
public:
    /// `n`: `ids.size()` (passed apart: `ids` is moved in the base's initialiser).
    PromiseJob(std::string op_name, std::size_t n, IdColumn ids, std::uint64_t total_cost,
               std::function<void(std::exception_ptr)> on_continuation_error, OutputBuffer<R> outputs)
        : ResultCore<R>{n, total_cost, nullptr, std::move(op_name), std::move(ids), std::move(outputs)},
          on_continuation_error_{std::move(on_continuation_error)} {
        this->claim_rest();
    }

    bool has_cpu() const noexcept override { return false; }
    GpuView gpu_view() noexcept override { return {}; }
    R* outputs() const noexcept { return this->out(); }
    void record_task_error(std::size_t index, std::exception_ptr error) noexcept {
        this->task_failed(index, std::move(error));
    }
    /// Completes with `stats` (their `tasks`, `wall_time` and `failed_tasks` are the job's own).
    void finish_with(ExecStats stats, std::error_code failure) noexcept {
        stats_ = std::move(stats);
        // A failed batch's outputs may be half written: value-initialise them all (`R` is
        // trivially copyable, so writing over a written slot is fine).
        if (failure) this->default_fill(Range{0, this->size()});
        this->complete_outside(failure);
    }

protected:
    void do_run_cpu(Range) override {}
    void amend_stats(ExecStats& s) const override {
        const auto tasks = s.tasks;
        const auto wall = s.wall_time;
        const auto failed = s.failed_tasks;
        s = stats_;
        s.tasks = tasks;
        s.wall_time = wall;
        s.failed_tasks = failed;
    }
    void continuation_failed(std::exception_ptr error) noexcept override {
        if (!on_continuation_error_) return;
        try {
            on_continuation_error_(std::move(error));
        } catch (...) {
        }
    }

private:
    ExecStats stats_;  // written by finish_with, read by amend_stats on the same thread
    std::function<void(std::exception_ptr)> on_continuation_error_;
};

}  // namespace detail

/// The writing end of a `BatchFuture<R>` made outside any engine. Its owner writes every
/// output, records the tasks that failed, and completes the future once, with stats or with
/// a batch-level error; the future behaves as an engine's (get, wait, then, co_await, cancel).
///
/// Threads: one owner at a time (move it between threads as you like). The outputs may be
/// written from any thread that the owner synchronises with before it completes.
/// Cancel: `BatchFuture::cancel` only sets `cancel_requested()`; the owner stops when it
/// likes and completes (the future then reports `ExecError::Cancelled`, whatever the owner
/// completes with). A promise destroyed before completing completes its future with
/// `ExecError::ShutDown`, so no future is left hanging. A continuation that throws is caught
/// and handed to `on_continuation_error` (ignored when that is empty).
template <class R>
class BatchPromise {
public:
    static_assert(std::is_trivially_copyable_v<R>, "BatchPromise outputs are written as raw bytes: R must be trivially copyable");

    /// A batch of `ids.size()` tasks of the op named `op_name`; outputs uninitialised.
    explicit BatchPromise(std::string op_name, IdColumn ids, std::uint64_t total_cost = 0,
                          std::function<void(std::exception_ptr)> on_continuation_error = {})
        : BatchPromise{std::move(op_name), std::move(ids), total_cost, std::move(on_continuation_error), nullptr} {}
    /// The same, the output column in the caller's storage (`outputs.slots`, one slot per
    /// task; the results view it and keep `outputs.owner`). Throws `std::invalid_argument`
    /// when its size is not `ids.size()`.
    BatchPromise(std::string op_name, IdColumn ids, std::uint64_t total_cost,
                 std::function<void(std::exception_ptr)> on_continuation_error, OutputSpan<R> outputs)
        : BatchPromise{std::move(op_name), std::move(ids), total_cost, std::move(on_continuation_error), &outputs} {}
    BatchPromise(BatchPromise&&) noexcept = default;
    BatchPromise& operator=(BatchPromise&& other) noexcept {
        if (this != &other) {
            abandon();
            job_ = std::move(other.job_);
            future_taken_ = other.future_taken_;
        }
        return *this;
    }
    BatchPromise(const BatchPromise&) = delete;
    BatchPromise& operator=(const BatchPromise&) = delete;
    ~BatchPromise() { abandon(); }

    /// The future (once; a second call throws `ExecError::NoState`).
    BatchFuture<R> get_future() {
        if (!job_ || future_taken_) throw Error{ExecError::NoState, "tandem::BatchPromise::get_future"};
        future_taken_ = true;
        return BatchFuture<R>{job_};
    }

    /// Tasks in the batch.
    std::size_t size() const noexcept { return job_ ? job_->size() : 0; }
    /// The output column, `size()` slots in task order, to be written before `set_value`
    /// (raw storage: write with memcpy or assignment). Null once completed.
    R* outputs() const noexcept { return job_ ? job_->outputs() : nullptr; }
    /// True once the future was cancelled: stop, and complete.
    bool cancel_requested() const noexcept { return job_ && job_->cancel_requested(); }
    /// True until the promise completes (or is moved from).
    bool pending() const noexcept { return job_ != nullptr; }

    /// Records that task `index` failed with `error` (its output stays whatever was written).
    void set_task_error(std::size_t index, std::exception_ptr error) noexcept {
        if (job_ && index < job_->size()) job_->record_task_error(index, std::move(error));
    }

    /// Completes with the outputs written and `stats` (`tasks`, `wall_time` from submit, and
    /// `failed_tasks` are filled in by the promise). Continuations run here. Once; later calls
    /// do nothing.
    void set_value(ExecStats stats = {}) noexcept { complete(std::move(stats), {}); }

    /// Completes with the batch-level error `why` (must be an error); outputs value-initialised.
    void set_error(std::error_code why, ExecStats stats = {}) noexcept {
        complete(std::move(stats), why ? why : make_error_code(ExecError::ShutDown));
    }

private:
    BatchPromise(std::string op_name, IdColumn ids, std::uint64_t total_cost,
                 std::function<void(std::exception_ptr)> on_continuation_error, OutputSpan<R>* outputs) {
        const std::size_t n = ids.size();
        detail::OutputBuffer<R> buffer;
        if (outputs) {
            if (outputs->slots.size() != n) {
                throw std::invalid_argument{"tandem::BatchPromise: the output span's size is not the batch's"};
            }
            buffer = detail::OutputBuffer<R>{n, std::make_shared<detail::OutputWindow>(outputs->slots.data(), n * sizeof(R),
                                                                                    std::move(outputs->owner),
                                                                                    outputs->memory)};
        } else {
            buffer = detail::OutputBuffer<R>{n};
        }
        job_ = std::make_shared<detail::PromiseJob<R>>(std::move(op_name), n, std::move(ids), total_cost,
                                                       std::move(on_continuation_error), std::move(buffer));
    }

    void complete(ExecStats stats, std::error_code why) noexcept {
        if (!job_) return;
        // Our reference keeps the job alive through its continuations, whatever they drop.
        auto job = std::move(job_);
        job->finish_with(std::move(stats), why);
    }
    void abandon() noexcept {
        if (job_) set_error(make_error_code(ExecError::ShutDown));
    }

    std::shared_ptr<detail::PromiseJob<R>> job_;
    bool future_taken_ = false;
};

}  // namespace tandem
