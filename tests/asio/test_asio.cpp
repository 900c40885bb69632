// The Asio adapter: tandem::async_submit with every completion token, where its handler runs,
// how it keeps an io_context running, per-operation cancellation, and error mapping.
#define BOOST_TEST_MODULE asio
#include <boost/test/unit_test.hpp>

#include <tandem/asio.hpp>
#include <tandem/tandem.hpp>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/experimental/parallel_group.hpp>
#include <asio/experimental/promise.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

using namespace std::chrono_literals;

namespace {

tandem::EngineConfig small_config(std::size_t workers = 2, std::size_t cpu_chunk = 0) {
    tandem::EngineConfig c;
    c.cpu_workers = workers;
    c.cpu_chunk = cpu_chunk;
    c.idle_spin = 5us;
    return c;
}

tandem::Batch<std::uint32_t> iota_batch(std::size_t n, std::uint64_t first_id = 0) {
    tandem::Batch<std::uint32_t> b;
    b.reserve(n);
    for (std::size_t i = 0; i < n; ++i) b.push({first_id + i, static_cast<std::uint32_t>(i), 1});
    return b;
}

tandem::Op<std::uint32_t, std::uint64_t> square_op() {
    return {"square", [](const std::uint32_t& x) { return std::uint64_t{x} * x; }};
}

void check_squares(const tandem::BatchResult<std::uint64_t>& r, std::size_t n) {
    BOOST_REQUIRE_EQUAL(r.results.size(), n);
    for (std::size_t i = 0; i < n; ++i) BOOST_REQUIRE_EQUAL(r.results[i].output, std::uint64_t{i} * i);
}

/// Holds every task of an op inside the op until opened, so a test can keep a batch running
/// (with work still unclaimed behind it) for as long as it needs.
struct Gate {
    std::atomic<bool> opened{false};
    std::atomic<int> entered{0};

    void pass() {
        entered.fetch_add(1);
        while (!opened.load()) std::this_thread::sleep_for(100us);
    }
    void open() { opened.store(true); }
    void wait_entered(int n) const {
        while (entered.load() < n) std::this_thread::sleep_for(100us);
    }
};

tandem::Op<std::uint32_t, std::uint64_t> gated_op(Gate& gate) {
    return {"gated", [&gate](const std::uint32_t& x) {
                gate.pass();
                return std::uint64_t{x};
            }};
}

/// An operation that waits until both workers hold a gated task, completes (through `io`), and
/// then opens `gate`. Completing it inside a `parallel_group` or `||` makes the group cancel
/// its other operands synchronously, inside the handler call, so by the time the gate opens
/// the gated batch has been cancelled with work still unclaimed.
template <class Token>
auto async_complete_then_open(asio::io_context& io, Gate& gate, Token&& token) {
    return asio::async_initiate<Token, void()>(
        [&io, &gate](auto handler) {
            asio::post(io, [handler = std::move(handler), &gate]() mutable {
                gate.wait_entered(2);
                std::move(handler)();
                gate.open();
            });
        },
        token);
}

/// Records which threads ran tasks of an op (the engine's CPU workers).
struct ThreadLog {
    std::mutex mutex;
    std::set<std::thread::id> ids;
    void note() {
        std::lock_guard lock{mutex};
        ids.insert(std::this_thread::get_id());
    }
    bool contains(std::thread::id id) {
        std::lock_guard lock{mutex};
        return ids.count(id) != 0;
    }
};

}  // namespace

// ---- completion tokens -----------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(use_awaitable_returns_the_batch_result_to_the_coroutine) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto r = co_await tandem::async_submit(engine, square, iota_batch(5000), asio::use_awaitable);
            check_squares(r, 5000);
            BOOST_TEST(r.stats.cpu_tasks == 5000u);
            done = true;
        },
        asio::detached);
    io.run();
    BOOST_TEST(done);
}

BOOST_AUTO_TEST_CASE(use_awaitable_throws_a_system_error_for_a_batch_error) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    std::error_code caught;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            try {
                co_await tandem::async_submit(engine, square, tandem::Batch<std::uint32_t>{}, asio::use_awaitable);
            } catch (const std::system_error& e) {
                caught = e.code();
            }
        },
        asio::detached);
    io.run();
    BOOST_TEST(caught == tandem::make_error_code(tandem::ExecError::EmptyBatch));
}

BOOST_AUTO_TEST_CASE(use_future_delivers_the_result_without_an_io_context) {
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    std::future<tandem::BatchResult<std::uint64_t>> f =
        tandem::async_submit(engine, square, iota_batch(3000), asio::use_future);
    check_squares(f.get(), 3000);
}

BOOST_AUTO_TEST_CASE(use_future_rethrows_a_batch_error_as_system_error) {
    // Bound to an io_context run on this thread, so the exception is made, thrown and freed
    // on one thread (libstdc++'s exception_ptr reference count is invisible to TSan).
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    tandem::Batch<std::uint32_t> dup;
    dup.push({7, 1, 1});
    dup.push({7, 2, 1});
    auto f = tandem::async_submit(engine, square, std::move(dup), asio::bind_executor(io, asio::use_future));
    io.run();
    try {
        f.get();
        BOOST_FAIL("expected a std::system_error");
    } catch (const std::system_error& e) {
        BOOST_TEST(e.code() == tandem::make_error_code(tandem::ExecError::DuplicateTaskId));
    }
}

BOOST_AUTO_TEST_CASE(deferred_submits_nothing_until_it_is_invoked_with_a_token) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    auto op = tandem::async_submit(engine, square, iota_batch(100), tandem::deferred);
    BOOST_TEST(engine.metrics().batches_submitted == 0u);

    std::optional<std::error_code> got;
    std::move(op)(asio::bind_executor(io, [&](std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
        got = ec;
        check_squares(r, 100);
    }));
    io.run();
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(!*got);
    BOOST_TEST(engine.metrics().batches_submitted == 1u);
}

BOOST_AUTO_TEST_CASE(deferred_operation_can_be_awaited_in_a_coroutine) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto op = tandem::async_submit(engine, square, iota_batch(64), tandem::deferred);
            auto r = co_await std::move(op)(asio::use_awaitable);
            check_squares(r, 64);
            done = true;
        },
        asio::detached);
    io.run();
    BOOST_TEST(done);
}

BOOST_AUTO_TEST_CASE(plain_callback_bound_to_an_io_context_receives_error_and_result) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    int calls = 0;
    tandem::async_submit(engine, square, iota_batch(777),
                         asio::bind_executor(io, [&](std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
                             ++calls;
                             BOOST_TEST(!ec);
                             check_squares(r, 777);
                         }));
    io.run();
    BOOST_TEST(calls == 1);
}

BOOST_AUTO_TEST_CASE(as_tuple_delivers_error_and_result_without_throwing) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto [ec, r] = co_await tandem::async_submit(engine, square, tandem::Batch<std::uint32_t>{},
                                                         tandem::as_tuple(asio::use_awaitable));
            BOOST_TEST(ec == tandem::make_error_code(tandem::ExecError::EmptyBatch));
            BOOST_TEST(r.results.empty());
            auto [ok, good] =
                co_await tandem::async_submit(engine, square, iota_batch(10), tandem::as_tuple(asio::use_awaitable));
            BOOST_TEST(!ok);
            check_squares(good, 10);
            done = true;
        },
        asio::detached);
    io.run();
    BOOST_TEST(done);
}

BOOST_AUTO_TEST_CASE(use_promise_starts_at_once_and_is_awaited_later) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    std::optional<std::error_code> got;
    {
        auto promise =
            tandem::async_submit(io.get_executor(), engine, square, iota_batch(2048), asio::experimental::use_promise);
        BOOST_TEST(engine.metrics().batches_submitted == 1u);  // eager, unlike deferred
        promise.async_wait([&](std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
            got = ec;
            check_squares(r, 2048);
        });
        io.run();
    }
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(!*got);
}

BOOST_AUTO_TEST_CASE(parallel_group_waits_for_every_batch) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    bool done = false;
    asio::experimental::make_parallel_group(
        tandem::async_submit(io.get_executor(), engine, square, iota_batch(1000), tandem::deferred),
        tandem::async_submit(io.get_executor(), engine, square, iota_batch(2000), tandem::deferred))
        .async_wait(asio::experimental::wait_for_all(),
                    [&](std::array<std::size_t, 2> order, std::error_code e1, tandem::BatchResult<std::uint64_t> r1,
                        std::error_code e2, tandem::BatchResult<std::uint64_t> r2) {
                        std::sort(order.begin(), order.end());
                        BOOST_TEST((order == std::array<std::size_t, 2>{0, 1}));
                        BOOST_TEST(!e1);
                        BOOST_TEST(!e2);
                        check_squares(r1, 1000);
                        check_squares(r2, 2000);
                        done = true;
                    });
    io.run();
    BOOST_TEST(done);
}

BOOST_AUTO_TEST_CASE(parallel_group_wait_for_one_cancels_the_batch_still_running) {
    asio::io_context io;
    tandem::Engine engine{small_config(2, 1)};
    Gate gate;
    const auto gated = gated_op(gate);
    std::optional<std::error_code> batch_ec;
    std::size_t first = 99;
    asio::experimental::make_parallel_group(
        tandem::async_submit(io.get_executor(), engine, gated, iota_batch(100), tandem::deferred),
        async_complete_then_open(io, gate, tandem::deferred))
        .async_wait(asio::experimental::wait_for_one(),
                    [&](std::array<std::size_t, 2> order, std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
                        first = order[0];
                        batch_ec = ec;
                        BOOST_TEST(r.results.empty());
                    });
    io.run();
    BOOST_TEST(first == 1u);
    BOOST_REQUIRE(batch_ec.has_value());
    BOOST_TEST(*batch_ec == asio::error::operation_aborted);
    BOOST_TEST(engine.metrics().tasks_skipped > 0u);
}

BOOST_AUTO_TEST_CASE(awaitable_or_cancels_the_batch_when_the_other_side_completes_first) {
    using namespace asio::experimental::awaitable_operators;
    asio::io_context io;
    tandem::Engine engine{small_config(2, 1)};
    Gate gate;
    const auto gated = gated_op(gate);
    std::optional<std::size_t> winner;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto result = co_await (tandem::async_submit(engine, gated, iota_batch(100), asio::use_awaitable) ||
                                    async_complete_then_open(io, gate, asio::use_awaitable));
            winner = result.index();
        },
        asio::detached);
    io.run();
    BOOST_REQUIRE(winner.has_value());
    BOOST_TEST(*winner == 1u);
    BOOST_TEST(engine.metrics().tasks_skipped > 0u);
}

BOOST_AUTO_TEST_CASE(redirect_error_puts_the_error_in_a_variable_instead_of_throwing) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    std::error_code got;
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            std::error_code ec;
            co_await tandem::async_submit(engine, square, tandem::Batch<std::uint32_t>{},
                                          asio::redirect_error(asio::use_awaitable, ec));
            got = ec;
            done = true;
        },
        asio::detached);
    io.run();
    BOOST_TEST(done);
    BOOST_TEST(got == tandem::make_error_code(tandem::ExecError::EmptyBatch));
}

BOOST_AUTO_TEST_CASE(detached_runs_the_batch_and_discards_the_result) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    std::atomic<int> ran{0};
    tandem::Op<std::uint32_t, std::uint32_t> counted{"counted", [&](const std::uint32_t& x) {
                                                         ran.fetch_add(1);
                                                         return x;
                                                     }};
    tandem::async_submit(io, engine, counted, iota_batch(300), asio::detached);
    io.run();  // the work guard holds run() until the batch is done
    BOOST_TEST(ran.load() == 300);
}

// ---- where the handler runs ------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(handler_runs_on_its_associated_executor_not_an_engine_thread) {
    asio::io_context io;
    auto strand = asio::make_strand(io);
    tandem::Engine engine{small_config()};
    ThreadLog engine_threads;
    tandem::Op<std::uint32_t, std::uint32_t> logged{"logged", [&](const std::uint32_t& x) {
                                                        engine_threads.note();
                                                        return x;
                                                    }};
    std::thread::id handler_thread;
    bool on_strand = false;
    tandem::async_submit(engine, logged, iota_batch(10000),
                         asio::bind_executor(strand, [&](std::error_code ec, tandem::BatchResult<std::uint32_t>) {
                             BOOST_TEST(!ec);
                             handler_thread = std::this_thread::get_id();
                             on_strand = strand.running_in_this_thread();
                         }));
    io.run();  // on this thread
    BOOST_TEST(on_strand);
    BOOST_TEST((handler_thread == std::this_thread::get_id()));
    BOOST_TEST(!engine_threads.contains(handler_thread));
}

BOOST_AUTO_TEST_CASE(coroutine_resumes_on_its_own_executor_after_the_batch) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    const auto main_thread = std::this_thread::get_id();
    int resumed_on_main = 0;
    for (int c = 0; c < 4; ++c) {
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                for (int i = 0; i < 10; ++i) {
                    co_await tandem::async_submit(engine, square, iota_batch(500), asio::use_awaitable);
                    if (std::this_thread::get_id() == main_thread) ++resumed_on_main;
                }
            },
            asio::detached);
    }
    io.run();
    BOOST_TEST(resumed_on_main == 40);
}

BOOST_AUTO_TEST_CASE(callback_without_an_executor_runs_on_the_given_default_executor) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    std::thread::id handler_thread;
    tandem::async_submit(io, engine, square, iota_batch(100),
                         [&](std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
                             BOOST_TEST(!ec);
                             check_squares(r, 100);
                             handler_thread = std::this_thread::get_id();
                         });
    io.run();
    BOOST_TEST((handler_thread == std::this_thread::get_id()));
}

BOOST_AUTO_TEST_CASE(callback_with_no_executor_at_all_never_runs_on_an_engine_thread) {
    tandem::Engine engine{small_config()};
    ThreadLog engine_threads;
    tandem::Op<std::uint32_t, std::uint32_t> logged{"logged", [&](const std::uint32_t& x) {
                                                        engine_threads.note();
                                                        return x;
                                                    }};
    std::promise<std::thread::id> handler_thread;
    tandem::async_submit(engine, logged, iota_batch(1000), [&](std::error_code, tandem::BatchResult<std::uint32_t>) {
        handler_thread.set_value(std::this_thread::get_id());
    });
    const auto id = handler_thread.get_future().get();
    BOOST_TEST(!engine_threads.contains(id));
}

BOOST_AUTO_TEST_CASE(handlers_on_a_multi_threaded_pool_each_run_once_on_their_strand) {
    asio::thread_pool pool{2};
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    // Handlers run on pool threads at once; Boost.Test's assertions are not thread-safe, so
    // they record what they saw and the test checks it here.
    std::atomic<int> calls{0}, off_strand{0}, wrong{0};
    std::mutex mutex;
    std::set<std::thread::id> handler_threads;
    for (int i = 0; i < 50; ++i) {
        auto strand = asio::make_strand(pool);
        tandem::async_submit(
            engine, square, iota_batch(200),
            asio::bind_executor(strand, [&, strand](std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
                if (!strand.running_in_this_thread()) off_strand.fetch_add(1);
                if (ec || r.results.size() != 200 || r.results[199].output != 199u * 199u) {
                    wrong.fetch_add(1);
                }
                std::lock_guard lock{mutex};
                handler_threads.insert(std::this_thread::get_id());
                calls.fetch_add(1);
            }));
    }
    pool.join();  // returns once no work is outstanding: every handler has run
    BOOST_TEST(calls.load() == 50);
    BOOST_TEST(off_strand.load() == 0);
    BOOST_TEST(wrong.load() == 0);
    BOOST_TEST(!handler_threads.contains(std::this_thread::get_id()));
}

// ---- outstanding work --------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(io_context_run_waits_for_outstanding_submissions) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    Gate gate;
    const auto gated = gated_op(gate);
    bool called = false;
    tandem::async_submit(engine, gated, iota_batch(4),
                         asio::bind_executor(io, [&](std::error_code ec, tandem::BatchResult<std::uint64_t>) {
                             BOOST_TEST(!ec);
                             called = true;
                         }));
    // Nothing else is queued on `io`: only the operation's work guard keeps run() from
    // returning while the batch is held in the engine.
    std::thread opener{[&] {
        gate.wait_entered(1);
        std::this_thread::sleep_for(20ms);
        gate.open();
    }};
    io.run();
    opener.join();
    BOOST_TEST(called);
}

BOOST_AUTO_TEST_CASE(io_context_run_returns_once_every_handler_has_run) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    int calls = 0;
    for (int i = 0; i < 100; ++i) {
        tandem::async_submit(io.get_executor(), engine, square, iota_batch(50),
                             [&](std::error_code ec, tandem::BatchResult<std::uint64_t>) {
                                 BOOST_TEST(!ec);
                                 ++calls;
                             });
    }
    io.run();
    BOOST_TEST(calls == 100);
    BOOST_TEST(engine.metrics().batches_completed == 100u);
    engine.shutdown();  // a batch leaves `in flight` just after its completion has posted
    BOOST_TEST(engine.metrics().batches_in_flight == 0u);
}

namespace {

/// An io_context executor whose `post` stays a while after the handler is runnable, as asio's
/// own `post` may (it signals the io thread after unlocking the queue). While it stays, it
/// watches whether the context's `run()` has returned: a caller may destroy the context the
/// moment `run()` returns, so returning while a post is still inside it is a use after free.
class LingeringExecutor {
public:
    struct Watch {
        std::thread::id io_thread;
        std::atomic<bool> handler_ran{false};
        std::atomic<bool> run_returned{false};
        std::atomic<int> lingered{0};
        std::atomic<bool> run_returned_while_posting{false};
    };

    LingeringExecutor(asio::io_context& io, Watch& watch) noexcept : io_{&io}, watch_{&watch} {}

    asio::io_context& context() const noexcept { return *io_; }
    void on_work_started() const noexcept { io_->get_executor().on_work_started(); }
    void on_work_finished() const noexcept { io_->get_executor().on_work_finished(); }
    template <class F, class A>
    void dispatch(F&& f, const A& a) const {
        io_->get_executor().dispatch(std::forward<F>(f), a);
    }
    template <class F, class A>
    void post(F&& f, const A& a) const {
        io_->get_executor().post(std::forward<F>(f), a);
        if (std::this_thread::get_id() == watch_->io_thread) return;
        // An engine thread: stay until the handler has run, then a little longer.
        for (int i = 0; i < 100000 && !watch_->handler_ran.load(); ++i) std::this_thread::sleep_for(100us);
        for (int i = 0; i < 200 && !watch_->run_returned.load(); ++i) std::this_thread::sleep_for(100us);
        if (watch_->run_returned.load()) watch_->run_returned_while_posting.store(true);
        watch_->lingered.fetch_add(1);
    }
    template <class F, class A>
    void defer(F&& f, const A& a) const {
        post(std::forward<F>(f), a);
    }
    friend bool operator==(const LingeringExecutor& a, const LingeringExecutor& b) noexcept { return a.io_ == b.io_; }
    friend bool operator!=(const LingeringExecutor& a, const LingeringExecutor& b) noexcept { return !(a == b); }

private:
    asio::io_context* io_;
    Watch* watch_;
};

}  // namespace

BOOST_AUTO_TEST_CASE(io_context_run_does_not_return_while_an_engine_thread_is_still_posting_the_handler) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    Gate gate;
    LingeringExecutor::Watch watch;
    watch.io_thread = std::this_thread::get_id();
    tandem::async_submit(engine, gated_op(gate), iota_batch(1),
                         asio::bind_executor(LingeringExecutor{io, watch},
                                             [&](std::error_code ec, tandem::BatchResult<std::uint64_t>) {
                                                 BOOST_TEST(!ec);
                                                 watch.handler_ran.store(true);
                                             }));
    // Opened from the io thread, so the batch completes on an engine thread while run() runs.
    asio::post(io, [&] { gate.open(); });
    io.run();
    watch.run_returned.store(true);
    engine.shutdown();  // joins the engine thread, wherever it is
    BOOST_TEST(watch.handler_ran.load());
    BOOST_TEST(watch.lingered.load() == 1);
    BOOST_TEST(!watch.run_returned_while_posting.load(), "run() returned while the completion was still being posted");
}

// ---- cancellation ------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(cancellation_slot_completes_with_operation_aborted) {
    asio::io_context io;
    tandem::Engine engine{small_config(2, 1)};
    Gate gate;
    std::atomic<int> ran{0};
    tandem::Op<std::uint32_t, std::uint64_t> counted{"counted", [&](const std::uint32_t& x) {
                                                         gate.pass();
                                                         ran.fetch_add(1);
                                                         return std::uint64_t{x};
                                                     }};
    asio::cancellation_signal signal;
    std::optional<std::error_code> got;
    tandem::async_submit(
        engine, counted, iota_batch(100),
        asio::bind_cancellation_slot(
            signal.slot(), asio::bind_executor(io, [&](std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
                got = ec;
                BOOST_TEST(r.results.empty());
            })));
    // Emit on the handler's executor (the slot's rules), while both workers hold a task.
    asio::post(io, [&] {
        gate.wait_entered(2);
        signal.emit(asio::cancellation_type::terminal);
        gate.open();
    });
    io.run();
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(*got == asio::error::operation_aborted);
    BOOST_TEST(ran.load() < 100);
    BOOST_TEST(engine.metrics().tasks_skipped == 100u - static_cast<unsigned>(ran.load()));
}

BOOST_AUTO_TEST_CASE(partial_cancellation_also_stops_the_batch) {
    asio::io_context io;
    tandem::Engine engine{small_config(2, 1)};
    Gate gate;
    const auto gated = gated_op(gate);
    asio::cancellation_signal signal;
    std::optional<std::error_code> got;
    tandem::async_submit(engine, gated, iota_batch(100),
                         asio::bind_cancellation_slot(
                             signal.slot(), asio::bind_executor(io, [&](std::error_code ec, auto) { got = ec; })));
    asio::post(io, [&] {
        gate.wait_entered(2);
        signal.emit(asio::cancellation_type::partial);
        gate.open();
    });
    io.run();
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(*got == asio::error::operation_aborted);
}

BOOST_AUTO_TEST_CASE(total_cancellation_alone_is_ignored_because_run_chunks_cannot_be_undone) {
    asio::io_context io;
    tandem::Engine engine{small_config(2, 1)};
    Gate gate;
    const auto gated = gated_op(gate);
    asio::cancellation_signal signal;
    std::optional<std::error_code> got;
    tandem::async_submit(engine, gated, iota_batch(100),
                         asio::bind_cancellation_slot(
                             signal.slot(), asio::bind_executor(io, [&](std::error_code ec, auto) { got = ec; })));
    asio::post(io, [&] {
        gate.wait_entered(2);
        signal.emit(asio::cancellation_type::total);
        gate.open();
    });
    io.run();
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(!*got);
    BOOST_TEST(engine.metrics().tasks_skipped == 0u);
}

BOOST_AUTO_TEST_CASE(cancellation_slot_is_cleared_before_the_handler_runs) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    asio::cancellation_signal signal;
    bool had_handler_at_start = false;
    std::optional<bool> had_handler_in_handler;
    tandem::async_submit(
        engine, square, iota_batch(1000),
        asio::bind_cancellation_slot(signal.slot(), asio::bind_executor(io, [&](std::error_code ec, auto) {
                                         BOOST_TEST(!ec);
                                         had_handler_in_handler = signal.slot().has_handler();
                                     })));
    had_handler_at_start = signal.slot().has_handler();
    io.run();
    BOOST_TEST(had_handler_at_start);
    BOOST_REQUIRE(had_handler_in_handler.has_value());
    BOOST_TEST(!*had_handler_in_handler);
    signal.emit(asio::cancellation_type::terminal);  // after completion: reaches nothing
}

BOOST_AUTO_TEST_CASE(cancelling_after_the_batch_completed_still_delivers_the_results) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    asio::cancellation_signal signal;
    std::optional<std::error_code> got;
    tandem::async_submit(
        engine, square, iota_batch(10),
        asio::bind_cancellation_slot(
            signal.slot(), asio::bind_executor(io, [&](std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
                got = ec;
                check_squares(r, 10);
            })));
    // Wait until the engine has completed the batch (its completion is then queued on `io`,
    // which has not run yet), then cancel: the batch is past stopping.
    while (engine.metrics().batches_completed == 0) std::this_thread::sleep_for(100us);
    signal.emit(asio::cancellation_type::terminal);
    io.run();
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(!*got);
}

BOOST_AUTO_TEST_CASE(a_coroutine_cancelled_by_its_parent_stops_its_batch) {
    asio::io_context io;
    tandem::Engine engine{small_config(2, 1)};
    Gate gate;
    const auto gated = gated_op(gate);
    asio::cancellation_signal signal;
    std::optional<std::error_code> got;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto [ec, r] =
                co_await tandem::async_submit(engine, gated, iota_batch(100), tandem::as_tuple(asio::use_awaitable));
            got = ec;
        },
        asio::bind_cancellation_slot(signal.slot(), asio::detached));
    asio::post(io, [&] {
        gate.wait_entered(2);
        signal.emit(asio::cancellation_type::terminal);  // reaches the batch before returning
        gate.open();
    });
    io.run();
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(*got == asio::error::operation_aborted);
}

// ---- errors --------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(batch_errors_reach_the_handler_unchanged_in_the_tandem_category) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    tandem::Op<std::uint32_t, std::uint64_t> nothing{"nothing", nullptr};
    std::vector<std::error_code> got;
    auto record = [&](std::error_code ec, tandem::BatchResult<std::uint64_t>) { got.push_back(ec); };
    tandem::async_submit(io, engine, square, tandem::Batch<std::uint32_t>{}, record);
    tandem::Batch<std::uint32_t> dup;
    dup.push({1, 1, 1});
    dup.push({1, 2, 1});
    tandem::async_submit(io, engine, square, std::move(dup), record);
    tandem::async_submit(io, engine, nothing, iota_batch(3), record);
    io.run();
    BOOST_REQUIRE_EQUAL(got.size(), 3u);
    std::set<tandem::ExecError> seen;
    for (const auto& ec : got) {
        BOOST_TEST(std::string{ec.category().name()} == "tandem");
        seen.insert(static_cast<tandem::ExecError>(ec.value()));
    }
    BOOST_TEST((seen == std::set<tandem::ExecError>{tandem::ExecError::EmptyBatch, tandem::ExecError::DuplicateTaskId,
                                                    tandem::ExecError::NoImplementation}));
}

BOOST_AUTO_TEST_CASE(submitting_to_a_shut_down_engine_completes_with_shut_down) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    engine.shutdown();
    const auto square = square_op();
    std::optional<std::error_code> got;
    tandem::async_submit(io, engine, square, iota_batch(10),
                         [&](std::error_code ec, tandem::BatchResult<std::uint64_t>) { got = ec; });
    io.run();
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(*got == tandem::make_error_code(tandem::ExecError::ShutDown));
}

BOOST_AUTO_TEST_CASE(an_error_completes_asynchronously_never_inside_the_initiating_call) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    const auto square = square_op();
    bool initiating = true;
    bool ran_inside = false;
    bool called = false;
    tandem::async_submit(io, engine, square, tandem::Batch<std::uint32_t>{},
                         [&](std::error_code, tandem::BatchResult<std::uint64_t>) {
                             ran_inside = initiating;
                             called = true;
                         });
    initiating = false;
    io.run();
    BOOST_TEST(called);
    BOOST_TEST(!ran_inside);
}

BOOST_AUTO_TEST_CASE(a_throwing_task_is_a_task_error_not_an_operation_error) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint64_t> picky{"picky", [](const std::uint32_t& x) -> std::uint64_t {
                                                       if (x == 3) throw std::runtime_error{"three"};
                                                       return x;
                                                   }};
    std::optional<std::error_code> got;
    std::size_t failures = 0;
    tandem::async_submit(io, engine, picky, iota_batch(10),
                         [&](std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
                             got = ec;
                             failures = r.results.errors().size();
                             BOOST_TEST(!r.results[3].ok());
                             BOOST_TEST(r.results[4].ok());
                         });
    io.run();
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(!*got);
    BOOST_TEST(failures == 1u);
}

// ---- many at once ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(many_coroutines_each_get_their_own_results) {
    asio::io_context io;
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint64_t> tag{"tag", [](const std::uint32_t& x) { return std::uint64_t{x} * 3; }};
    int finished = 0;
    for (std::uint32_t c = 0; c < 200; ++c) {
        asio::co_spawn(
            io,
            [&, c]() -> asio::awaitable<void> {
                for (int round = 0; round < 3; ++round) {
                    tandem::Batch<std::uint32_t> b;
                    for (std::uint32_t i = 0; i < 20; ++i) b.push({i, c * 1000 + i, 1});
                    auto r = co_await tandem::async_submit(engine, tag, std::move(b), asio::use_awaitable);
                    for (std::uint32_t i = 0; i < 20; ++i)
                        BOOST_REQUIRE_EQUAL(r.results[i].output, std::uint64_t{c * 1000 + i} * 3);
                }
                ++finished;
            },
            asio::detached);
    }
    io.run();
    BOOST_TEST(finished == 200);
}

// ---- asynchronous admission ----------------------------------------------------------------

namespace {

/// An engine with room for one batch, and that room taken by a batch held at a gate.
struct FullEngine {
    FullEngine() : engine{std::make_unique<tandem::Engine>(config())} {
        held = engine->submit(gated_op(gate), iota_batch(1));
        gate.wait_entered(1);
    }
    static tandem::EngineConfig config() {
        tandem::EngineConfig c = small_config(1);
        c.max_batches_in_flight = 1;
        return c;
    }
    Gate gate;
    std::unique_ptr<tandem::Engine> engine;
    tandem::BatchFuture<std::uint64_t> held;
};

}  // namespace

BOOST_AUTO_TEST_CASE(async_submit_at_the_admission_limit_waits_without_blocking_the_io_thread) {
    // One io thread, an engine with room for one batch, and that batch held by a gate. The
    // io thread calls async_submit, then must still run the handler that opens the gate: a
    // blocking initiation would never return to the loop.
    FullEngine full;
    tandem::Engine& engine = *full.engine;
    Gate& gate = full.gate;
    auto& held = full.held;
    asio::io_context io;
    bool initiation_returned = false, opened_while_waiting = false;
    std::optional<std::uint64_t> result;
    asio::post(io, [&] {
        tandem::async_submit(io, engine, square_op(), iota_batch(10),
                             [&](std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
                                 BOOST_TEST(!ec, ec.message());
                                 if (!ec) result = r.results[9].output;
                             });
        initiation_returned = true;
        asio::post(io, [&] {
            opened_while_waiting = !result.has_value();
            gate.open();
        });
    });
    io.run_for(60s);
    BOOST_TEST(initiation_returned);
    BOOST_TEST(opened_while_waiting);
    BOOST_REQUIRE(result.has_value());
    BOOST_TEST(*result == 81u);
    BOOST_TEST(held.get().results[0].output == 0u);
}

BOOST_AUTO_TEST_CASE(cancelling_an_async_submit_that_waits_for_admission_completes_with_operation_aborted) {
    FullEngine full;
    tandem::Engine& engine = *full.engine;
    Gate& gate = full.gate;
    auto& held = full.held;
    asio::io_context io;
    asio::cancellation_signal signal;
    std::error_code seen;
    bool called = false;
    asio::post(io, [&] {
        tandem::async_submit(io, engine, square_op(), iota_batch(10),
                             asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec, tandem::BatchResult<std::uint64_t>) {
                                 called = true;
                                 seen = ec;
                             }));
        asio::post(io, [&] { signal.emit(asio::cancellation_type::terminal); });
    });
    io.run_for(60s);
    BOOST_TEST(called);
    BOOST_TEST(seen == asio::error::operation_aborted, seen.message());
    gate.open();
    held.get();
    engine.shutdown();
    BOOST_TEST(engine.metrics().batches_submitted == 1u);  // the waiting batch never entered
}

BOOST_AUTO_TEST_CASE(an_async_submit_waiting_for_admission_completes_with_shut_down_when_the_engine_closes) {
    FullEngine full;
    auto& engine = full.engine;
    Gate& gate = full.gate;
    asio::io_context io;
    std::error_code seen;
    bool called = false;
    tandem::async_submit(io, *engine, square_op(), iota_batch(10),
                         [&](std::error_code ec, tandem::BatchResult<std::uint64_t>) {
                             called = true;
                             seen = ec;
                         });
    // Close the engine while the held batch still runs (shutdown waits for it), and only then
    // let it finish: the waiting operation must not get in.
    std::thread stopper{[&] { engine->shutdown(); }};
    while (engine->try_submit(square_op(), iota_batch(1)).error() != tandem::make_error_code(tandem::ExecError::ShutDown)) {
        std::this_thread::sleep_for(100us);
    }
    gate.open();
    io.run_for(60s);
    stopper.join();
    BOOST_TEST(called);
    BOOST_TEST(seen == tandem::make_error_code(tandem::ExecError::ShutDown), seen.message());
    engine.reset();  // nothing of the finished operation touches the engine any more
}

BOOST_AUTO_TEST_CASE(several_async_submits_waiting_for_admission_do_not_spin_the_io_thread) {
    // Waiters that fail to get in must not wake each other in a loop: with the engine full,
    // the io thread runs only a handful of handlers while they wait.
    FullEngine full;
    tandem::Engine& engine = *full.engine;
    Gate& gate = full.gate;
    auto& held = full.held;
    asio::io_context io;
    int completed = 0;
    for (int i = 0; i < 4; ++i) {
        tandem::async_submit(io, engine, square_op(), iota_batch(10),
                             [&](std::error_code ec, tandem::BatchResult<std::uint64_t>) {
                                 BOOST_TEST(!ec, ec.message());
                                 ++completed;
                             });
    }
    const std::size_t handlers_while_full = io.run_for(50ms);
    BOOST_TEST(handlers_while_full < 100u, "handlers run while the engine was full: " << handlers_while_full);
    gate.open();
    io.run_for(60s);
    BOOST_TEST(completed == 4);
    held.get();
}
