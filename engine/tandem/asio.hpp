#pragma once
/// \file
/// The Asio adapter: `tandem::async_submit` runs a batch as an Asio asynchronous operation,
/// so any completion token works -- `asio::use_awaitable`, `asio::use_future`, deferred,
/// `as_tuple`, `use_promise`, `parallel_group`, or a plain callback.
///
/// Header-only, for standalone Asio (`#include <asio.hpp>`); the library itself does not
/// depend on Asio.
///
/// ```
///  caller's thread            engine threads                 handler's executor
///  ---------------            --------------                 ------------------
///  async_submit --submit-->   chunks run on workers
///    (work guard taken,            | last chunk lands
///     cancel slot armed)           v
///                             continuation --asio::post-->   slot cleared, work released,
///                                                            handler(ec, BatchResult<R>)
/// ```

#include <tandem/engine.hpp>
#include <tandem/error.hpp>
#include <tandem/future.hpp>
#include <tandem/op.hpp>
#include <tandem/result.hpp>
#include <tandem/task.hpp>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/error.hpp>
#include <asio/execution/executor.hpp>
#include <asio/execution_context.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/is_executor.hpp>
#include <asio/post.hpp>
#include <asio/system_executor.hpp>
#include <asio/version.hpp>

#if ASIO_VERSION >= 102300
#include <asio/deferred.hpp>
#else
#include <asio/experimental/deferred.hpp>
#endif
#if ASIO_VERSION >= 102800
#include <asio/as_tuple.hpp>
#else
#include <asio/experimental/as_tuple.hpp>
#endif

#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>

namespace tandem {

/// The deferred completion token of the Asio in use: `asio::deferred` from Asio 1.23 on,
/// `asio::experimental::deferred` before (Debian 12 ships 1.22).
#if ASIO_VERSION >= 102300
using asio::deferred;
#else
using asio::experimental::deferred;
#endif

/// The `as_tuple` token adapter of the Asio in use: `asio::as_tuple` from Asio 1.28 on,
/// `asio::experimental::as_tuple` before.
#if ASIO_VERSION >= 102800
using asio::as_tuple;
#else
using asio::experimental::as_tuple;
#endif

/// The completion signature of `async_submit` for an op producing `R`: the batch-level error
/// (empty on success) and the results. On error the `BatchResult` is default-constructed.
template <class R>
using BatchSignature = void(std::error_code, BatchResult<R>);

namespace detail {

/// Filled into a handler's cancellation slot: stops the batch's unstarted chunks.
template <class R>
class SubmitCanceller {
public:
    /// Holds a handle on the batch that can only cancel it.
    explicit SubmitCanceller(CancelHandle handle) noexcept : handle_{std::move(handle)} {}

    /// Terminal and partial requests cancel (the batch then reports that it was stopped);
    /// a total-only request is ignored, since chunks that already ran cannot be undone.
    void operator()(asio::cancellation_type type) {
        if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial)) ==
            asio::cancellation_type::none) {
            return;
        }
        // `cancel` hands the skipped work to an engine thread, whose completion may clear this
        // slot (destroying `*this`) at any time: a local copy keeps the batch alive, and
        // nothing below touches a member.
        const CancelHandle handle = handle_;
        handle.cancel();
    }

private:
    CancelHandle handle_;
};

/// The state of one `async_submit` between the engine and the handler's executor: the
/// handler, the work that keeps its executor's `run()` going, and the slot to clear.
template <class Handler, class R, class HandlerExecutor, class Slot>
class SubmitOperation {
public:
    /// Takes the handler, starts counting work on `executor`, remembers the slot to clear.
    SubmitOperation(Handler handler, const HandlerExecutor& executor, Slot slot)
        : handler_{std::move(handler)}, work_{executor}, slot_{std::move(slot)} {}

    /// Runs on the engine thread that completes the batch (or on the thread that cancelled or
    /// submitted it, when it completes there). Always posts, never dispatches: the handler
    /// must not run inside the initiating function or inside a cancellation signal's
    /// emission, and both are threads that might be the handler's executor.
    void operator()(std::error_code ec, BatchResult<R> result) {
        const HandlerExecutor executor = work_.get_executor();
        // `post` makes the handler runnable before it returns (asio signals the io thread
        // after unlocking), so the handler can run, release `work_`, `run()` return and the
        // context be destroyed while this thread is still inside `post`. A second count of
        // work, released only once `post` has returned, keeps the context alive until then.
        const asio::executor_work_guard<HandlerExecutor> while_posting{executor};
        asio::post(executor, [self = std::move(*this), ec, result = std::move(result)]() mutable {
            self.complete(ec, std::move(result));
        });
    }

private:
    /// On the handler's executor: clear the slot, release the work, call the handler.
    void complete(std::error_code ec, BatchResult<R> result) {
        if (slot_.is_connected()) slot_.clear();
        // Only our own canceller can cancel this batch (we hold its only other handle).
        if (ec == make_error_code(ExecError::Cancelled)) ec = asio::error::operation_aborted;
        Handler handler = std::move(handler_);
        work_.reset();  // the post that brought us here still counts until we return
        std::move(handler)(ec, std::move(result));
    }

    Handler handler_;
    asio::executor_work_guard<HandlerExecutor> work_;
    Slot slot_;
};

/// A batch waiting for admission: the engine was at its limit when `async_submit` was called.
/// It waits for room without blocking anybody: the engine tells it when room may have freed,
/// the retry runs on the handler's executor, a cancellation through the handler's slot
/// completes the operation with `operation_aborted` while it waits, and an engine that closes
/// completes it with `ShutDown`. `done_` (under `mutex_`, with every post to the executor)
/// decides once who completes the operation; once it is set nothing here posts again, so the
/// executor's context may go as soon as the handler has run.
template <class Operation, class T, class R, class HandlerExecutor, class Slot>
class AdmissionWait final : public RoomWaiter,
                            public std::enable_shared_from_this<AdmissionWait<Operation, T, R, HandlerExecutor, Slot>> {
public:
    AdmissionWait(Engine* engine, const Op<T, R>& op, Batch<T> batch, Operation operation,
                  const HandlerExecutor& executor, Slot slot)
        : engine_{engine}, op_{op}, batch_{std::move(batch)}, operation_{std::move(operation)}, executor_{executor},
          slot_{std::move(slot)} {}

    /// On the initiating thread: arms the slot and waits for room.
    void start() {
        if (slot_.is_connected()) slot_.template emplace<Canceller>(this->weak_from_this());
        wait();
    }

    /// From the engine (any thread).
    void on_room(bool closed) noexcept override {
        std::unique_lock lock{mutex_};
        if (done_) return;
        if (closed) {
            done_ = true;
            lock.unlock();
            finish(make_error_code(ExecError::ShutDown));  // the engine must not be touched again
            return;
        }
        try {
            asio::post(executor_, [self = this->shared_from_this()] { self->retry(); });
        } catch (...) {
            done_ = true;
            lock.unlock();
            finish(make_error_code(ExecError::OutOfMemory));
        }
    }

private:
    /// Filled into the slot while the batch waits for admission.
    class Canceller {
    public:
        explicit Canceller(std::weak_ptr<AdmissionWait> wait) noexcept : wait_{std::move(wait)} {}
        void operator()(asio::cancellation_type type) {
            if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial)) ==
                asio::cancellation_type::none) {
                return;
            }
            if (auto w = wait_.lock()) w->cancel();  // may clear the slot: touch no member after
        }

    private:
        std::weak_ptr<AdmissionWait> wait_;
    };

    void wait() { engine_->when_room(batch_.size(), this->shared_from_this()); }

    /// On the handler's executor.
    void retry() {
        {
            std::lock_guard lock{mutex_};
            if (done_) return;  // cancelled, or the engine closed, meanwhile
        }
        try {
            // Look before reserving: a failed reservation costs the other waiters nothing,
            // but an attempt is an add and a subtract on the engine's admission word.
            std::optional<BatchFuture<R>> future;
            if (engine_->has_room(batch_.size())) future = engine_->submit_if_room(op_, batch_);
            if (!future) {
                wait();
                return;
            }
            {
                std::lock_guard lock{mutex_};
                if (done_) {  // lost the race with a cancellation, which completed the operation
                    future->cancel();
                    return;
                }
                done_ = true;
            }
            if (slot_.is_connected()) slot_.template emplace<SubmitCanceller<R>>(future->cancel_handle());
            future->then(std::move(operation_));
        } catch (...) {  // no memory for the job or the registration
            {
                std::lock_guard lock{mutex_};
                if (done_) return;
                done_ = true;
            }
            finish(make_error_code(ExecError::OutOfMemory));
        }
    }

    /// From the slot's emission.
    void cancel() {
        {
            std::lock_guard lock{mutex_};
            if (done_) return;
            done_ = true;
        }
        finish(make_error_code(ExecError::Cancelled));  // the operation maps it to operation_aborted
    }

    /// Completes the operation (posts the handler); once, by whoever set `done_`.
    void finish(std::error_code ec) noexcept {
        try {
            std::move(operation_)(ec, BatchResult<R>{});
        } catch (...) {  // no memory to post the handler: nothing left to tell it with
        }
    }

    Engine* engine_;
    Op<T, R> op_;
    Batch<T> batch_;
    Operation operation_;
    HandlerExecutor executor_;
    Slot slot_;
    std::mutex mutex_;
    bool done_ = false;  // guarded by mutex_
};

/// The initiation object behind `async_submit`. It carries the executor that handlers with
/// no associated executor of their own complete on (tokens such as `use_promise` read it).
template <class Executor>
class SubmitInitiation {
public:
    /// The default executor for handlers that name none.
    using executor_type = Executor;

    /// `executor`: where handlers that name no executor complete.
    explicit SubmitInitiation(const Executor& executor) : executor_{executor} {}

    /// The default executor for handlers that name none.
    executor_type get_executor() const noexcept { return executor_; }

    /// Submits the batch and arranges for `handler` to run on its associated executor.
    template <class Handler, class T, class R>
    void operator()(Handler&& handler, Engine* engine, const Op<T, R>& op, Batch<T> batch) const {
        using DecayedHandler = std::decay_t<Handler>;
        auto executor = asio::get_associated_executor(handler, executor_);
        auto slot = asio::get_associated_cancellation_slot(handler);
        using Operation = SubmitOperation<DecayedHandler, R, decltype(executor), decltype(slot)>;
        Operation operation{std::forward<Handler>(handler), executor, slot};

        std::optional<BatchFuture<R>> future = engine->submit_if_room(op, batch);
        if (!future) {
            // At the admission limit: wait for room asynchronously, never blocking this thread.
            auto wait = std::make_shared<AdmissionWait<Operation, T, R, decltype(executor), decltype(slot)>>(
                engine, op, std::move(batch), std::move(operation), executor, slot);
            wait->start();
            return;
        }
        // Armed before `then`: the completion (posted from `then` at the earliest) can only
        // clear the slot after this emplace, on the handler's executor.
        if (slot.is_connected()) slot.template emplace<SubmitCanceller<R>>(future->cancel_handle());
        future->then(std::move(operation));
    }

private:
    Executor executor_;
};

/// An Asio executor of either model (standard executors and the older networking-TS kind).
template <class E>
concept AsioExecutor = asio::execution::is_executor<E>::value || asio::is_executor<E>::value;

}  // namespace detail

/// Submits `batch` to `engine` as an Asio asynchronous operation with completion signature
/// `void(std::error_code, tandem::BatchResult<R>)`.
///
/// - The handler runs on its associated executor (for `use_awaitable`, the coroutine's),
///   never on an engine thread unless bound there; a handler with no associated executor
///   runs on `asio::system_executor` -- prefer the overloads taking an executor for those.
/// - That executor counts the operation as outstanding work until the handler runs, so
///   `io_context::run()` does not return while a batch is in flight.
/// - A terminal or partial cancellation through the handler's cancellation slot skips the
///   chunks not yet started and completes with `asio::error::operation_aborted`; chunks
///   already running finish first. Cancelling after completion changes nothing.
/// - Other batch errors (`EmptyBatch`, `DuplicateTaskId`, `ShutDown`, ...) reach the handler
///   unchanged, in the "tandem" category. Per-task failures are in `results.errors()`.
/// - The engine must outlive the operation (for deferred tokens, and for an operation waiting
///   for admission: until its handler has run); the handler's execution context must outlive
///   the batch. Safe order: shut the engine down, let the `io_context` run its remaining
///   handlers, then destroy both (or destroy the engine before the `io_context` when no
///   operation waits for admission).
/// - Cancellation must be emitted on the handler's executor (or a strand of it), as Asio
///   requires for per-operation cancellation.
/// - The initiation never blocks: at the engine's admission limit
///   (`EngineConfig::max_batches_in_flight`, `max_tasks_in_flight`) the operation waits for
///   room asynchronously (the engine calls back as batches complete; the retry runs on the
///   handler's executor), and a cancellation while it waits completes it with
///   `operation_aborted`.
///
/// Deferred and lazy tokens store a copy of `op` (cheap: ops share their definition), the
/// batch, and a pointer to the engine.
template <class T, class R, ASIO_COMPLETION_TOKEN_FOR(BatchSignature<R>) CompletionToken>
auto async_submit(Engine& engine, const Op<T, R>& op, Batch<T> batch, CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, BatchSignature<R>>(
        detail::SubmitInitiation<asio::system_executor>{asio::system_executor{}}, token, &engine, op, std::move(batch));
}

/// As above; a handler with no associated executor (a plain callback, `use_promise`, the
/// operations of a `parallel_group`) runs on `executor`, which also counts the work.
template <class Executor, class T, class R, ASIO_COMPLETION_TOKEN_FOR(BatchSignature<R>) CompletionToken>
requires detail::AsioExecutor<Executor>
auto async_submit(const Executor& executor, Engine& engine, const Op<T, R>& op, Batch<T> batch,
                  CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, BatchSignature<R>>(detail::SubmitInitiation<Executor>{executor}, token,
                                                                    &engine, op, std::move(batch));
}

/// As above, with the executor of `context` (e.g. an `asio::io_context`).
template <class ExecutionContext, class T, class R, ASIO_COMPLETION_TOKEN_FOR(BatchSignature<R>) CompletionToken>
requires std::is_convertible_v<ExecutionContext&, asio::execution_context&>
auto async_submit(ExecutionContext& context, Engine& engine, const Op<T, R>& op, Batch<T> batch,
                  CompletionToken&& token) {
    return async_submit(context.get_executor(), engine, op, std::move(batch), std::forward<CompletionToken>(token));
}

}  // namespace tandem
