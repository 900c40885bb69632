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
#include <utility>

namespace tandem {

/// The eventual result of a submitted batch.
///
/// Every future completes exactly once — with results, or with an error that says why
/// (bad input, cancelled, shut down, every device failed). Like `std::future`, `get()`
/// consumes the result; `then` and `co_await` do too.
template <class R>
class BatchFuture {
public:
    BatchFuture() = default;
    /// Made by the engine.
    explicit BatchFuture(std::shared_ptr<detail::ResultCore<R>> core) : core_{std::move(core)} {}

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
        return wait_until(std::chrono::steady_clock::now() + timeout);
    }

    /// Blocks until `deadline`; `std::future_status::ready` or `timeout`.
    template <class Clock, class Duration>
    std::future_status wait_until(std::chrono::time_point<Clock, Duration> deadline) const {
        const auto steady_deadline = std::chrono::steady_clock::now() +
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(deadline - Clock::now());
        require_state();
        return core_->wait_until(steady_deadline) ? std::future_status::ready : std::future_status::timeout;
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
    /// Returns true if the cancel reached the batch before it completed.
    bool cancel() noexcept { return core_ && core_->cancel(ExecError::Cancelled); }

    /// Calls `f(std::error_code, BatchResult<R>)` once the batch completes: on the engine
    /// thread that completes it, or right here if it already has. Consumes the future.
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
    Awaiter operator co_await() && { return Awaiter{std::move(core_)}; }
    Awaiter operator co_await() & { return Awaiter{std::move(core_)}; }

    /// The shared state (for adapters such as the Asio integration).
    const std::shared_ptr<detail::ResultCore<R>>& core() const noexcept { return core_; }

private:
    void require_state() const {
        if (!core_) throw Error{ExecError::InvalidArgument, "BatchFuture has no state (already consumed?)"};
    }
    std::shared_ptr<detail::ResultCore<R>> core_;
};

}  // namespace tandem
