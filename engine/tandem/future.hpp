#pragma once
/// \file
/// BatchFuture: the one handle on a submitted batch — wait, poll, cancel, continue, co_await.

#include <tandem/detail/job.hpp>
#include <tandem/error.hpp>
#include <tandem/result.hpp>

#include <chrono>
#include <coroutine>
#include <future>
#include <memory>
#include <system_error>
#include <type_traits>
#include <utility>

namespace tandem {

/// A copyable handle that can only cancel a batch (share it with whoever may need to stop the
/// batch; the future itself stays the one owner of the result).
class CancelHandle {
public:
    CancelHandle() = default;
    explicit CancelHandle(std::shared_ptr<detail::JobCore> core) noexcept : core_{std::move(core)} {}

    /// As `BatchFuture::cancel`; false for an empty handle or a batch already complete.
    bool cancel() const noexcept { return core_ && core_->cancel(ExecError::Cancelled); }

private:
    std::shared_ptr<detail::JobCore> core_;
};

/// The eventual result of a submitted batch. Move-only: one owner consumes the result.
///
/// Every future completes exactly once — with results, or with an error that says why
/// (bad input, cancelled, shut down, every device failed). Like `std::future`, `get()`
/// consumes the result; `then` and `co_await` do too. Using a future that has no state
/// (moved from, consumed, default-constructed) throws `tandem::Error` with
/// `ExecError::NoState`.
///
/// Where continuations run: a `then` callback and a coroutine resumed by `co_await` run on
/// the engine thread that completes the batch (a CPU worker, a device actor, or the scheduler
/// for a cancelled batch), or on the calling thread if the batch has already completed. An
/// exception thrown by a continuation on an engine thread is caught, counted and handed to
/// `EngineConfig::on_continuation_error`; it never reaches the engine. Keep continuations
/// short, or move them off the engine with `then(executor, f)`.
template <class R>
class BatchFuture {
public:
    BatchFuture() = default;
    /// Made by the engine.
    explicit BatchFuture(std::shared_ptr<detail::ResultCore<R>> core) : core_{std::move(core)} {}
    BatchFuture(BatchFuture&&) noexcept = default;
    BatchFuture& operator=(BatchFuture&&) noexcept = default;
    BatchFuture(const BatchFuture&) = delete;
    BatchFuture& operator=(const BatchFuture&) = delete;

    /// True while the future refers to a batch whose result has not been taken.
    bool valid() const noexcept { return core_ != nullptr; }

    /// True once the batch has completed.
    bool ready() const noexcept { return core_ && core_->ready(); }

    /// Blocks until the batch completes (spins briefly, then sleeps).
    void wait() const {
        require_state();
        core_->wait();
    }

    /// Blocks up to `timeout`; `std::future_status::ready` or `timeout`.
    template <class Rep, class Period>
    std::future_status wait_for(std::chrono::duration<Rep, Period> timeout) const {
        require_state();
        return core_->wait_until(deadline_in(timeout)) ? std::future_status::ready : std::future_status::timeout;
    }

    /// Blocks until `deadline`; `std::future_status::ready` or `timeout`.
    template <class Clock, class Duration>
    std::future_status wait_until(std::chrono::time_point<Clock, Duration> deadline) const {
        require_state();
        const auto now = Clock::now();
        const auto left = deadline > now ? deadline - now : Clock::duration::zero();
        return core_->wait_until(deadline_in(left)) ? std::future_status::ready : std::future_status::timeout;
    }

    /// Waits, then returns the results. Throws `tandem::Error` carrying the batch-level error
    /// (e.g. `ExecError::Cancelled`). Per-task failures do not throw: see `TaskResult::error`.
    BatchResult<R> get() {
        wait();
        auto core = std::move(core_);
        if (auto ec = core->error()) throw Error{ec, "tandem batch '" + core->op_name() + "'"};
        return core->take_result();
    }

    /// The batch-level error once ready (empty on success).
    std::error_code error() const noexcept { return ready() ? core_->error() : std::error_code{}; }

    /// Stops the batch: work not yet started is not run, chunks already running finish, and
    /// the batch completes with `ExecError::Cancelled` (if it had not completed already).
    /// Returns true if the cancel reached the batch before it completed. Cheap on the calling
    /// thread: skipping the unstarted work and completing the batch happen on an engine thread.
    bool cancel() noexcept { return core_ && core_->cancel(ExecError::Cancelled); }

    /// A copyable handle that can cancel this batch (and do nothing else).
    CancelHandle cancel_handle() const {
        require_state();
        return CancelHandle{core_};
    }

    /// Calls `f(std::error_code, BatchResult<R>)` once the batch completes: on the engine
    /// thread that completes it, or right here if it already has (an exception from `f` then
    /// propagates to the caller). Consumes the future.
    template <class F>
    void then(F&& f) {
        require_state();
        auto core = std::move(core_);
        auto* raw = core.get();
        auto run = [core = std::move(core), f = std::forward<F>(f)]() mutable {
            if (auto ec = core->error()) {
                f(ec, BatchResult<R>{});
            } else {
                f(std::error_code{}, core->take_result());
            }
        };
        // The continuation owns `core` until it has run; the job keeps only the function.
        detail::UniqueFunction fn{std::move(run)};
        if (!raw->set_continuation(std::move(fn))) fn();  // completed already: run it here
    }

    /// Like `then(f)`, but `f` runs on `executor`: the engine thread only hands it over
    /// (`executor.execute(task)`, or `executor(task)` for a plain callable), so heavy
    /// continuations leave the engine's threads. The task handed over is move-only.
    template <class Executor, class F>
    void then(Executor executor, F&& f) {
        then([executor = std::move(executor), f = std::forward<F>(f)](std::error_code ec,
                                                                      BatchResult<R> result) mutable {
            auto task = [f = std::move(f), ec, result = std::move(result)]() mutable { f(ec, std::move(result)); };
            if constexpr (requires { executor.execute(std::move(task)); }) {
                executor.execute(std::move(task));
            } else {
                executor(std::move(task));
            }
        });
    }

    /// Awaiter for `co_await future` from any C++20 coroutine.
    ///
    /// The coroutine resumes on the engine thread that completed the batch (a CPU worker, a
    /// GPU stream actor, or the thread that cancelled it), or does not suspend at all if the
    /// batch was already complete. Hop to your own executor after resuming if that matters
    /// (the Asio adapter does this for you). Throws like `get()`.
    struct Awaiter {
        std::shared_ptr<detail::ResultCore<R>> core;
        bool await_ready() const noexcept { return core->ready(); }
        bool await_suspend(std::coroutine_handle<> h) {
            return core->set_continuation(detail::UniqueFunction{[h]() mutable { h.resume(); }});
        }
        BatchResult<R> await_resume() {
            if (auto ec = core->error()) throw Error{ec, "tandem batch '" + core->op_name() + "'"};
            return core->take_result();
        }
    };

    /// `co_await std::move(future)` (or on an lvalue: the future is consumed either way).
    /// Throws `ExecError::NoState` for a future with no state.
    Awaiter operator co_await() && {
        require_state();
        return Awaiter{std::move(core_)};
    }
    Awaiter operator co_await() & {
        require_state();
        return Awaiter{std::move(core_)};
    }

    /// The shared state (for adapters such as the Asio integration).
    const std::shared_ptr<detail::ResultCore<R>>& core() const noexcept { return core_; }

private:
    /// steady_clock::now() + d, saturated (wait_for(duration::max()) waits forever).
    template <class Rep, class Period>
    static std::chrono::steady_clock::time_point deadline_in(std::chrono::duration<Rep, Period> d) {
        using std::chrono::steady_clock;
        const auto now = steady_clock::now();
        if (d <= d.zero()) return now;
        const auto room = steady_clock::time_point::max() - now;
        if (d >= std::chrono::duration_cast<std::chrono::duration<Rep, Period>>(room)) return steady_clock::time_point::max();
        return now + std::chrono::duration_cast<steady_clock::duration>(d);
    }

    void require_state() const {
        if (!core_) throw Error{ExecError::NoState, "tandem::BatchFuture"};
    }
    std::shared_ptr<detail::ResultCore<R>> core_;
};

}  // namespace tandem
