// The engine on the CPU: results, per-task errors, bad input, cancellation, shutdown,
// concurrency, futures and coroutines.
#define BOOST_TEST_MODULE engine
#include <boost/test/unit_test.hpp>

#include <tandem/tandem.hpp>

#include "support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <ranges>
#include <stdexcept>
#include <string>
#include <set>
#include <thread>
#include <type_traits>
#include <vector>

using namespace std::chrono_literals;

namespace {

tandem::EngineConfig small_config(std::size_t workers = 2) {
    tandem::EngineConfig c;
    c.cpu_workers = workers;
    c.idle_spin = 5us;
    return c;
}

tandem::Batch<std::uint32_t> iota_batch(std::size_t n, std::uint64_t first_id = 0) {
    tandem::Batch<std::uint32_t> b;
    b.reserve(n);
    for (std::size_t i = 0; i < n; ++i) b.push({first_id + i, static_cast<std::uint32_t>(i), 1});
    return b;
}

using tandem::testing::expect_error;
using tandem::testing::Gate;
using tandem::testing::Spawned;

}  // namespace

BOOST_AUTO_TEST_CASE(results_come_back_in_task_order_with_their_ids) {
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint64_t> square{"square", [](const std::uint32_t& x) { return std::uint64_t{x} * x; }};
    // Shuffled, sparse ids: results still follow task order, each with its own id.
    std::vector<std::uint64_t> ids(100000);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937_64{7});
    tandem::Batch<std::uint32_t> batch;
    for (std::size_t i = 0; i < ids.size(); ++i) batch.push({ids[i] * 3 + 1, static_cast<std::uint32_t>(i), 1});
    auto r = engine.submit(square, std::move(batch)).get();
    BOOST_REQUIRE_EQUAL(r.results.size(), ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
        BOOST_REQUIRE_EQUAL(r.results[i].id, ids[i] * 3 + 1);
        BOOST_REQUIRE_EQUAL(r.results[i].output, std::uint64_t{i} * i);
        BOOST_REQUIRE(r.results[i].ok());
    }
    BOOST_TEST(r.stats.cpu_tasks == ids.size());
    BOOST_TEST(r.stats.gpu_tasks == 0u);
    BOOST_TEST(r.stats.tasks == ids.size());
    BOOST_TEST(r.stats.cpu_chunks >= 2u);
    BOOST_TEST((r.stats.device == tandem::DeviceKind::Cpu));
    BOOST_TEST(r.stats.wall_time.count() > 0);
}

// `for (auto& t : r.results)` did not compile: the iterator handed out each view by value.
BOOST_AUTO_TEST_CASE(an_op_and_what_it_captures_are_freed_once_its_copies_and_batches_are_gone) {
    // Batches hold their op through a count of the submitting thread's own; that count must
    // not keep the op alive once no copy and no batch of it is left, while the thread lives.
    tandem::Engine engine{small_config()};
    auto capture = std::make_shared<int>(7);
    std::weak_ptr<int> watch = capture;
    {
        // An op of the same types first: the thread's count for it is not reused for the next.
        tandem::Op<std::uint32_t, std::uint32_t> other{"other", [](const std::uint32_t& x) { return x; }};
        BOOST_TEST(engine.submit(other, tandem::Batch<std::uint32_t>{{0, 1, 1}}).get().results[0].output == 1u);
        tandem::Op<std::uint32_t, std::uint32_t> op{"captures", [capture](const std::uint32_t& x) { return x + *capture; }};
        capture.reset();
        std::vector<tandem::BatchFuture<std::uint32_t>> futures;
        for (std::uint32_t i = 0; i < 8; ++i) futures.push_back(engine.submit(op, tandem::Batch<std::uint32_t>{{i, i, 1}}));
        for (std::uint32_t i = 0; i < 8; ++i) BOOST_TEST(futures[i].get().results[0].output == i + 7);
        BOOST_TEST(!watch.expired());  // the op itself still holds it
    }
    // A worker may drop its reference to a batch a moment after the batch is ready.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!watch.expired() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    BOOST_TEST(watch.expired());
}

BOOST_AUTO_TEST_CASE(a_destroyed_engine_keeps_nothing_of_the_program_alive_on_the_threads_that_used_it) {
    // The engine's shared state (which holds the program's continuation-error handler) is
    // referenced per submitting thread; once the engine and its batches are gone, no thread
    // that submitted may still hold it.
    auto capture = std::make_shared<int>(1);
    std::weak_ptr<int> watch = capture;
    {
        tandem::EngineConfig c = small_config();
        c.on_continuation_error = [capture](std::exception_ptr) {};
        capture.reset();
        tandem::Engine engine{c};
        tandem::Op<std::uint32_t, std::uint32_t> op{"plain", [](const std::uint32_t& x) { return x; }};
        BOOST_TEST(engine.submit(op, tandem::Batch<std::uint32_t>{{0, 5, 1}}).get().results[0].output == 5u);
        BOOST_TEST(!watch.expired());
    }
    BOOST_TEST(watch.expired());
}

namespace {
/// Submits a batch from its destructor: a thread-local made before the thread's first submit
/// is destroyed after the engine's own thread-locals.
struct SubmitsAtThreadExit {
    tandem::Engine* engine = nullptr;
    std::atomic<std::uint32_t>* answer = nullptr;
    ~SubmitsAtThreadExit() {
        if (engine == nullptr) return;
        tandem::Op<std::uint32_t, std::uint32_t> op{"at_exit", [](const std::uint32_t& x) { return x + 1; }};
        *answer = engine->submit(op, tandem::Batch<std::uint32_t>{{0, 41, 1}}).get().results[0].output;
    }
};
}  // namespace

BOOST_AUTO_TEST_CASE(a_thread_local_destructor_can_submit_as_its_thread_exits) {
    tandem::Engine engine{small_config()};
    std::atomic<std::uint32_t> first{0}, answer{0};
    std::thread{[&] {
        thread_local SubmitsAtThreadExit last;
        last.engine = &engine;
        last.answer = &answer;
        tandem::Op<std::uint32_t, std::uint32_t> op{"before_exit", [](const std::uint32_t& x) { return x; }};
        first = engine.submit(op, tandem::Batch<std::uint32_t>{{0, 1, 1}}).get().results[0].output;
        // The workers let go of that batch, so nothing but this thread's caches is left of it
        // when the thread exits.
        std::this_thread::sleep_for(200ms);
    }}.join();
    BOOST_TEST(first.load() == 1u);
    BOOST_TEST(answer.load() == 42u);
}

BOOST_AUTO_TEST_CASE(results_loop_by_reference_const_reference_and_value) {
    static_assert(std::ranges::input_range<tandem::Results<std::uint64_t>>);
    static_assert(std::ranges::input_range<const tandem::Results<std::uint64_t>>);
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint64_t> twice{"twice", [](const std::uint32_t& x) {
        if (x == 7) throw std::runtime_error{"seven"};
        return std::uint64_t{x} * 2;
    }};
    constexpr std::size_t n = 1000;
    auto r = engine.submit(twice, iota_batch(n, 50)).get();
    BOOST_REQUIRE_EQUAL(r.results.size(), n);
    const auto expected = [](std::size_t i) { return i == 7 ? std::uint64_t{0} : std::uint64_t{i} * 2; };

    std::size_t i = 0;
    for (auto& t : r.results) {
        BOOST_REQUIRE_EQUAL(t.id, 50 + i);
        BOOST_REQUIRE_EQUAL(t.output, expected(i));
        BOOST_REQUIRE_EQUAL(t.ok(), i != 7);
        t.output += 1;  // the view's output is the result's own storage
        ++i;
    }
    BOOST_TEST(i == n);

    i = 0;
    for (const auto& t : r.results) {
        BOOST_REQUIRE_EQUAL(t.output, expected(i) + 1);
        if (i == 7) {
            BOOST_REQUIRE(t.error != nullptr);
            BOOST_TEST(t.error->message == "seven");
        }
        ++i;
    }
    BOOST_TEST(i == n);

    i = 0;
    for (auto t : r.results) {  // a copy of the view still writes the result
        BOOST_REQUIRE_EQUAL(t.id, 50 + i);
        t.output -= 1;
        ++i;
    }
    BOOST_TEST(i == n);
    for (std::size_t k = 0; k < n; ++k) BOOST_REQUIRE_EQUAL(r.results.outputs()[k], expected(k));

    i = 0;
    for (auto&& [id, output, error] : r.results) {
        BOOST_REQUIRE_EQUAL(id, 50 + i);
        BOOST_REQUIRE_EQUAL(output, expected(i));
        BOOST_REQUIRE_EQUAL(error != nullptr, i == 7);
        ++i;
    }
    BOOST_TEST(i == n);

    // Through a const Results the output is read-only.
    const tandem::Results<std::uint64_t>& read_only = r.results;
    i = 0;
    for (auto& t : read_only) {
        static_assert(std::is_same_v<decltype(t.output), const std::uint64_t&>);
        BOOST_REQUIRE_EQUAL(t.output, expected(i));
        ++i;
    }
    BOOST_TEST(i == n);
    BOOST_TEST(std::ranges::count_if(r.results, [](const auto& t) { return !t.ok(); }) == 1);
}

BOOST_AUTO_TEST_CASE(engine_runs_string_payloads_as_in_the_readme) {
    tandem::Engine engine{tandem::EngineConfig{.cpu_workers = 4}};
    tandem::Op<std::string, std::size_t> length{"length", [](const std::string& s) { return s.size(); }};
    tandem::Batch<std::string> batch;
    for (std::uint64_t i = 0; i < 10000; ++i) batch.push({i, std::string(i % 100, 'x'), 1});
    tandem::BatchResult<std::size_t> r = engine.submit(length, std::move(batch)).get();
    BOOST_REQUIRE_EQUAL(r.results.size(), 10000u);
    for (std::uint64_t i = 0; i < 10000; ++i) {
        BOOST_REQUIRE_EQUAL(r.results[i].id, i);
        BOOST_REQUIRE_EQUAL(r.results[i].output, i % 100);
    }
    BOOST_TEST((r.stats.device == tandem::DeviceKind::Cpu));
}

BOOST_AUTO_TEST_CASE(move_only_payloads_and_non_trivial_outputs_work) {
    tandem::Engine engine{small_config()};
    tandem::Op<std::unique_ptr<int>, std::string> show{"show", [](const std::unique_ptr<int>& p) { return std::to_string(*p); }};
    tandem::Batch<std::unique_ptr<int>> batch;
    for (int i = 0; i < 5000; ++i) batch.push({static_cast<std::uint64_t>(i), std::make_unique<int>(i), 1});
    auto r = engine.submit(show, std::move(batch)).get();
    for (int i = 0; i < 5000; ++i) BOOST_REQUIRE_EQUAL(r.results[static_cast<std::size_t>(i)].output, std::to_string(i));
}

BOOST_AUTO_TEST_CASE(a_throwing_task_gets_an_error_and_the_rest_of_the_batch_completes) {
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint32_t> picky{"picky", [](const std::uint32_t& x) -> std::uint32_t {
        if (x % 1000 == 7) throw std::runtime_error("no sevens: " + std::to_string(x));
        return x + 1;
    }};
    auto r = engine.submit(picky, iota_batch(10000, 500)).get();
    BOOST_TEST(r.stats.failed_tasks == 10u);
    BOOST_TEST(r.results.errors().size() == 10u);
    for (std::size_t i = 0; i < 10000; ++i) {
        if (i % 1000 == 7) {
            BOOST_REQUIRE(!r.results[i].ok());
            BOOST_TEST(r.results[i].error->id == 500 + i);
            BOOST_TEST(r.results[i].error->message == "no sevens: " + std::to_string(i));
            BOOST_TEST(r.results[i].error->code == tandem::make_error_code(tandem::ExecError::TaskFailed));
            BOOST_TEST(static_cast<bool>(r.results[i].error->exception));
            BOOST_TEST(r.results[i].output == 0u);
        } else {
            BOOST_REQUIRE(r.results[i].ok());
            BOOST_REQUIRE_EQUAL(r.results[i].output, i + 1);
        }
    }
}

BOOST_AUTO_TEST_CASE(an_empty_batch_fails_with_empty_batch) {
    tandem::Engine engine{small_config()};
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    auto f = engine.submit(id, tandem::Batch<int>{});
    BOOST_TEST(f.ready());
    BOOST_TEST(f.error() == tandem::make_error_code(tandem::ExecError::EmptyBatch));
    expect_error([&] { f.get(); }, tandem::ExecError::EmptyBatch);
}

BOOST_AUTO_TEST_CASE(duplicate_task_ids_fail_with_duplicate_task_id) {
    tandem::Engine engine{small_config()};
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    tandem::Batch<int> batch{{5, 1, 1}, {9, 2, 1}, {5, 3, 1}};
    expect_error([&] { engine.submit(id, std::move(batch)).get(); }, tandem::ExecError::DuplicateTaskId);
    // Unordered but unique ids are fine.
    tandem::Batch<int> ok{{5, 1, 1}, {2, 2, 1}, {9, 3, 1}};
    BOOST_TEST(engine.submit(id, std::move(ok)).get().results[1].output == 2);
}

BOOST_AUTO_TEST_CASE(an_op_with_no_cpu_function_fails_with_no_implementation_on_a_cpu_engine) {
    tandem::EngineConfig c = small_config();
    c.gpu.enabled = false;
    tandem::Engine engine{c};
    tandem::Op<int, int> nothing{"nothing", nullptr};
    expect_error([&] { engine.submit(nothing, tandem::Batch<int>{{1, 1, 1}}).get(); }, tandem::ExecError::NoImplementation);
    tandem::Op<int, int> empty_fn{"empty", std::function<int(const int&)>{}};
    BOOST_TEST(!empty_fn.has_cpu());
    expect_error([&] { engine.submit(empty_fn, tandem::Batch<int>{{1, 1, 1}}).get(); }, tandem::ExecError::NoImplementation);
}

BOOST_AUTO_TEST_CASE(a_batch_above_the_task_limit_fails_with_too_large) {
    tandem::EngineConfig c = small_config();
    c.max_tasks_in_flight = 100;
    tandem::Engine engine{c};
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [](const std::uint32_t& x) { return x + 1; }};
    expect_error([&] { engine.submit(inc, iota_batch(101)).get(); }, tandem::ExecError::TooLarge);
    BOOST_TEST(engine.submit(inc, iota_batch(100)).get().results.size() == 100u);
}

BOOST_AUTO_TEST_CASE(submit_after_shutdown_fails_with_shut_down) {
    tandem::Engine engine{small_config()};
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    engine.shutdown();
    auto f = engine.submit(id, tandem::Batch<int>{{1, 1, 1}});
    BOOST_TEST(f.ready());
    expect_error([&] { f.get(); }, tandem::ExecError::ShutDown);
    engine.shutdown();  // idempotent
}

BOOST_AUTO_TEST_CASE(cancel_skips_unstarted_work_and_completes_with_cancelled) {
    tandem::EngineConfig c = small_config(2);
    c.cpu_chunk = 10;
    tandem::Engine engine{c};
    Gate gate;
    std::atomic<std::uint64_t> ran{0};
    tandem::Op<std::uint32_t, std::uint32_t> slow{"slow", [&](const std::uint32_t& x) {
        gate.wait();
        ran.fetch_add(1);
        return x;
    }};
    auto f = engine.submit(slow, iota_batch(100000));
    while (gate.entered.load() < 2) std::this_thread::sleep_for(100us);  // both workers are inside a chunk
    BOOST_TEST(f.cancel());
    gate.open = true;
    BOOST_TEST((f.wait_for(10s) == std::future_status::ready));
    expect_error([&] { f.get(); }, tandem::ExecError::Cancelled);
    // Only the chunks already running finished: at most one chunk per worker.
    BOOST_TEST(ran.load() <= 2 * 10u);
    BOOST_TEST(engine.metrics().tasks_skipped >= 100000u - 20u);
}

BOOST_AUTO_TEST_CASE(cancel_after_completion_changes_nothing) {
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [](const std::uint32_t& x) { return x + 1; }};
    auto f = engine.submit(inc, iota_batch(10));
    f.wait();
    BOOST_TEST(!f.cancel());
    BOOST_TEST(f.get().results[9].output == 10u);
}

BOOST_AUTO_TEST_CASE(shutdown_with_batches_in_flight_completes_every_future) {
    tandem::EngineConfig c = small_config(2);
    c.cpu_chunk = 100;
    auto engine = std::make_unique<tandem::Engine>(c);
    Gate gate;
    tandem::Op<std::uint32_t, std::uint32_t> slow{"slow", [&](const std::uint32_t& x) {
        gate.wait();
        return x;
    }};
    std::vector<tandem::BatchFuture<std::uint32_t>> futures;
    for (int i = 0; i < 50; ++i) futures.push_back(engine->submit(slow, iota_batch(1000)));
    while (gate.entered.load() < 1) std::this_thread::sleep_for(100us);
    std::thread opener{[&] {
        std::this_thread::sleep_for(20ms);
        gate.open = true;
    }};
    engine.reset();  // shutdown in the destructor
    opener.join();
    int shut_down = 0, completed = 0;
    for (auto& f : futures) {
        BOOST_REQUIRE(f.ready());
        if (f.error()) {
            BOOST_TEST(f.error() == tandem::make_error_code(tandem::ExecError::ShutDown));
            ++shut_down;
        } else {
            ++completed;
        }
    }
    BOOST_TEST(shut_down + completed == 50);
    BOOST_TEST(shut_down >= 1);
}

BOOST_AUTO_TEST_CASE(a_thousand_concurrent_submitters_each_get_their_own_results) {
    tandem::Engine engine{small_config(2)};
    tandem::Op<std::uint64_t, std::uint64_t> twice{"twice", [](const std::uint64_t& x) { return 2 * x; }};
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (std::uint64_t t = 0; t < 1000; ++t) {
        threads.emplace_back([&, t] {
            for (std::uint64_t round = 0; round < 3; ++round) {
                tandem::Batch<std::uint64_t> b;
                for (std::uint64_t i = 0; i < 8; ++i) b.push({i, t * 1000 + round * 10 + i, 1});
                auto r = engine.submit(twice, std::move(b)).get();
                for (std::uint64_t i = 0; i < 8; ++i) {
                    if (r.results[i].output != 2 * (t * 1000 + round * 10 + i)) wrong.fetch_add(1);
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    BOOST_TEST(wrong.load() == 0);
    BOOST_TEST(engine.metrics().batches_completed == 3000u);
}

BOOST_AUTO_TEST_CASE(try_submit_refuses_with_queue_full_at_the_admission_limit) {
    tandem::EngineConfig c = small_config(1);
    c.max_batches_in_flight = 2;
    tandem::Engine engine{c};
    Gate gate;
    tandem::Op<int, int> blocked{"blocked", [&](const int& x) {
        gate.wait();
        return x;
    }};
    auto a = engine.try_submit(blocked, tandem::Batch<int>{{1, 1, 1}});
    auto b = engine.try_submit(blocked, tandem::Batch<int>{{1, 1, 1}});
    auto full = engine.try_submit(blocked, tandem::Batch<int>{{1, 1, 1}});
    BOOST_TEST(full.ready());
    expect_error([&] { full.get(); }, tandem::ExecError::QueueFull);
    // A blocking submit waits for room instead.
    std::atomic<bool> admitted{false};
    std::thread waiter{[&] {
        auto f = engine.submit(blocked, tandem::Batch<int>{{1, 7, 1}});
        admitted = true;
        BOOST_TEST(f.get().results[0].output == 7);
    }};
    std::this_thread::sleep_for(30ms);
    BOOST_TEST(!admitted.load());
    gate.open = true;
    waiter.join();
    a.get();
    b.get();
}

BOOST_AUTO_TEST_CASE(then_runs_once_with_the_results) {
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [](const std::uint32_t& x) { return x + 1; }};
    std::promise<std::uint32_t> got;
    std::atomic<int> calls{0};
    engine.submit(inc, iota_batch(1000)).then([&](std::error_code ec, tandem::BatchResult<std::uint32_t> r) {
        calls.fetch_add(1);
        got.set_value(ec ? 0 : r.results[999].output);
    });
    BOOST_TEST(got.get_future().get() == 1000u);
    BOOST_TEST(calls.load() == 1);
}

BOOST_AUTO_TEST_CASE(then_on_a_completed_batch_runs_on_the_calling_thread) {
    tandem::Engine engine{small_config()};
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    auto f = engine.submit(id, tandem::Batch<int>{});  // completes at once with an error
    std::thread::id ran_on;
    std::error_code seen;
    f.then([&](std::error_code ec, tandem::BatchResult<int>) {
        ran_on = std::this_thread::get_id();
        seen = ec;
    });
    BOOST_TEST((ran_on == std::this_thread::get_id()));
    BOOST_TEST(seen == tandem::make_error_code(tandem::ExecError::EmptyBatch));
}

BOOST_AUTO_TEST_CASE(wait_for_times_out_while_the_batch_runs) {
    tandem::Engine engine{small_config(1)};
    Gate gate;
    tandem::Op<int, int> blocked{"blocked", [&](const int& x) {
        gate.wait();
        return x;
    }};
    auto f = engine.submit(blocked, tandem::Batch<int>{{1, 3, 1}});
    BOOST_TEST((f.wait_for(20ms) == std::future_status::timeout));
    BOOST_TEST(!f.ready());
    gate.open = true;
    BOOST_TEST((f.wait_for(10s) == std::future_status::ready));
    BOOST_TEST(f.get().results[0].output == 3);
    BOOST_TEST(!f.valid());
}

namespace {

Spawned sum_twice(tandem::Engine& engine, Gate& gate, std::promise<std::uint64_t>& done, std::thread::id& resumed_on) {
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [&gate](const std::uint32_t& x) {
        if (x == 0) gate.wait();  // holds the first batch until the test has seen us suspend
        return x + 1;
    }};
    std::uint64_t sum = 0;
    for (int round = 0; round < 2; ++round) {
        tandem::BatchResult<std::uint32_t> r = co_await engine.submit(inc, iota_batch(50000));
        for (auto v : r.results.outputs()) sum += v;
    }
    resumed_on = std::this_thread::get_id();
    done.set_value(sum);
}

Spawned await_error(tandem::Engine& engine, std::promise<std::error_code>& done) {
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    try {
        co_await engine.submit(id, tandem::Batch<int>{});
        done.set_value({});
    } catch (const tandem::Error& e) {
        done.set_value(e.code());
    }
}

}  // namespace

BOOST_AUTO_TEST_CASE(co_await_from_a_plain_coroutine_gets_the_results) {
    tandem::Engine engine{small_config()};
    std::promise<std::uint64_t> done;
    std::thread::id resumed_on;
    Gate gate;
    sum_twice(engine, gate, done, resumed_on);  // returns at the first co_await: the batch is held
    auto result = done.get_future();
    BOOST_TEST((result.wait_for(0s) == std::future_status::timeout));
    gate.open = true;
    const std::uint64_t expected = 2 * (50000ull * 50001ull / 2);
    BOOST_TEST(result.get() == expected);
    // It resumed on an engine thread (documented), not on the thread that started it.
    BOOST_TEST((resumed_on != std::this_thread::get_id()));
}

BOOST_AUTO_TEST_CASE(a_batch_promise_completes_its_future_with_the_outputs_and_stats_it_was_given) {
    tandem::BatchPromise<std::uint32_t> promise{"remote", tandem::IdColumn::dense_range(100, 3)};
    auto future = promise.get_future();
    BOOST_TEST(!future.ready());
    for (std::uint32_t i = 0; i < 3; ++i) promise.outputs()[i] = 10 * i;
    promise.set_task_error(1, std::make_exception_ptr(std::runtime_error{"rank 2: boom"}));
    tandem::ExecStats stats;
    stats.cpu_tasks = 3;
    stats.ranks.push_back(tandem::RankStats{.rank = 2, .tasks = 3});
    promise.set_value(stats);
    BOOST_TEST(!promise.pending());
    auto [results, got] = future.get();
    BOOST_TEST(results.size() == 3u);
    BOOST_TEST(results[2].output == 20u);
    BOOST_TEST(results[2].id == 102u);
    BOOST_TEST(!results[1].ok());
    BOOST_TEST(results[1].error->message == "rank 2: boom");
    BOOST_TEST(got.tasks == 3u);
    BOOST_TEST(got.failed_tasks == 1u);
    BOOST_TEST(got.cpu_tasks == 3u);
    BOOST_TEST(got.ranks.size() == 1u);
    BOOST_TEST(got.ranks[0].rank == 2);
    BOOST_TEST(got.wall_time.count() >= 0);
}

BOOST_AUTO_TEST_CASE(a_batch_promise_destroyed_before_completing_fails_its_future_with_shut_down) {
    tandem::BatchFuture<int> future;
    {
        tandem::BatchPromise<int> promise{"remote", tandem::IdColumn::dense_range(0, 5)};
        future = promise.get_future();
        BOOST_CHECK_THROW(promise.get_future(), tandem::Error);
    }
    BOOST_TEST(future.ready());
    BOOST_TEST((future.error() == tandem::ExecError::ShutDown));
}

BOOST_AUTO_TEST_CASE(a_cancelled_batch_promise_reports_cancelled_whatever_it_completes_with) {
    tandem::BatchPromise<int> promise{"remote", tandem::IdColumn::dense_range(0, 4)};
    auto future = promise.get_future();
    BOOST_TEST(!promise.cancel_requested());
    BOOST_TEST(future.cancel());
    BOOST_TEST(!future.ready());  // the owner completes it
    BOOST_TEST(promise.cancel_requested());
    for (int i = 0; i < 4; ++i) promise.outputs()[i] = i;
    promise.set_value();
    BOOST_TEST((future.error() == tandem::ExecError::Cancelled));
}

BOOST_AUTO_TEST_CASE(a_batch_promise_runs_then_continuations_and_reports_their_exceptions) {
    std::exception_ptr reported;
    tandem::BatchPromise<int> promise{"remote", tandem::IdColumn::dense_range(0, 1), 0,
                                      [&](std::exception_ptr e) { reported = e; }};
    int seen = -1;
    promise.get_future().then([&](std::error_code ec, tandem::BatchResult<int>) {
        seen = ec == tandem::ExecError::DeviceFailed ? -2 : 0;
    });
    promise.outputs()[0] = 7;
    promise.set_error(tandem::ExecError::DeviceFailed);
    BOOST_TEST(seen == -2);
    BOOST_TEST(!reported);
    tandem::BatchPromise<int> second{"remote", tandem::IdColumn::dense_range(0, 1), 0,
                                     [&](std::exception_ptr e) { reported = e; }};
    second.get_future().then([&](std::error_code ec, tandem::BatchResult<int> r) {
        BOOST_TEST(!ec);
        seen = r.results[0].output;
        throw std::runtime_error{"continuation"};
    });
    second.outputs()[0] = 7;
    second.set_value();
    BOOST_TEST(seen == 7);
    BOOST_TEST(static_cast<bool>(reported));
}

BOOST_AUTO_TEST_CASE(co_await_rethrows_a_batch_error) {
    tandem::Engine engine{small_config()};
    std::promise<std::error_code> done;
    await_error(engine, done);
    BOOST_TEST(done.get_future().get() == tandem::make_error_code(tandem::ExecError::EmptyBatch));
}

BOOST_AUTO_TEST_CASE(metrics_count_batches_and_render_as_prometheus_text) {
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [](const std::uint32_t& x) { return x + 1; }};
    for (int i = 0; i < 5; ++i) engine.submit(inc, iota_batch(100)).get();
    engine.shutdown();  // a batch leaves `in flight` just after its future is ready
    auto m = engine.metrics();
    BOOST_TEST(m.batches_submitted == 5u);
    BOOST_TEST(m.batches_completed == 5u);
    BOOST_TEST(m.tasks_completed == 500u);
    BOOST_TEST(m.cpu_tasks == 500u);
    BOOST_TEST(m.batches_in_flight == 0u);
    const std::string text = tandem::to_prometheus(m);
    BOOST_TEST(text.find("tandem_cpu_tasks_total 500\n") != std::string::npos);
    BOOST_TEST(text.find("# TYPE tandem_cpu_fallbacks_total counter") != std::string::npos);
    BOOST_TEST(text.find("tandem_batch_duration_seconds_count{device_kind=\"cpu\"} 5\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_large_batch_keeps_every_result) {
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [](const std::uint32_t& x) { return x + 1; }};
    const std::size_t n = std::size_t{1} << 22;
    auto r = engine.submit(inc, iota_batch(n)).get();
    std::size_t bad = 0;
    auto out = r.results.outputs();
    for (std::size_t i = 0; i < n; ++i) bad += out[i] != i + 1;
    BOOST_TEST(bad == 0u);
    BOOST_TEST(r.results.ids().dense());
}

BOOST_AUTO_TEST_CASE(a_cost_index_finds_the_same_sums_and_chunk_ends_as_a_plain_scan) {
    // The prefix sums behind cutting a batch by cost (engine-internal, tandem/detail/job.hpp),
    // against a scan of every cost: across block boundaries, with costs of 0 (counted as 1)
    // and near 2^32.
    std::mt19937_64 rng{20261128};
    for (std::size_t n : {2, 63, 64, 65, 127, 128, 129, 1000, 4097}) {
        std::vector<std::uint32_t> costs(n);
        for (auto& c : costs) {
            const std::uint64_t r = rng();
            c = r % 5 == 0 ? 0u : r % 11 == 0 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(1 + r % 9);
        }
        costs[0] = 2;
        costs[n - 1] = 3;
        std::vector<std::uint64_t> prefix(n + 1, 0);
        for (std::size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + std::max<std::uint32_t>(costs[i], 1);
        tandem::detail::CostIndex index;
        std::uint64_t uniform = 0;
        BOOST_REQUIRE(index.build(costs.data(), n, uniform));
        BOOST_TEST(index.shift() == 0u);
        BOOST_TEST(index.total() == prefix[n]);
        for (std::size_t i = 0; i <= n; ++i) {
            if (index.prefix(i) != prefix[i]) {
                BOOST_FAIL("n " << n << ", prefix(" << i << ") " << index.prefix(i) << " != " << prefix[i]);
            }
        }
        for (int q = 0; q < 2000; ++q) {
            const std::size_t begin = static_cast<std::size_t>(rng() % n);
            const std::size_t limit = begin + 1 + static_cast<std::size_t>(rng() % (n - begin));
            const std::uint64_t target = rng() % (2 * (prefix[limit] - prefix[begin]) + 2);
            std::size_t expected = begin + 1;
            while (expected < limit && prefix[expected] - prefix[begin] < std::max<std::uint64_t>(target, 1)) ++expected;
            const std::size_t got = index.end_for(begin, limit, target);
            if (got != expected) {
                BOOST_FAIL("n " << n << ": end_for(" << begin << ", " << limit << ", " << target << ") = " << got
                                << ", expected " << expected);
            }
            BOOST_TEST(index.units(tandem::detail::Range{begin, got}) == prefix[got] - prefix[begin]);
        }
    }
}

BOOST_AUTO_TEST_CASE(costs_equal_once_0_counts_as_1_keep_the_uniform_path) {
    const std::vector<std::uint32_t> costs{0, 1, 0, 1, 1, 0};
    tandem::detail::CostIndex index;
    std::uint64_t uniform = 0;
    BOOST_TEST(!index.build(costs.data(), costs.size(), uniform));
    BOOST_TEST(uniform == 1u);
    tandem::Batch<int> batch;
    for (std::uint32_t i = 0; i < 6; ++i) batch.push({i, 0, costs[i]});
    BOOST_TEST(batch.costs().data() != nullptr);  // stored per task, yet counted as uniform
    BOOST_TEST(batch.total_cost() == 3u);
}

BOOST_AUTO_TEST_CASE(costs_that_could_sum_beyond_2_to_the_52_drop_low_bits) {
    const std::size_t n = std::size_t{1} << 21;
    std::vector<std::uint32_t> costs(n);
    for (std::size_t i = 0; i < n; ++i) costs[i] = i % 2 ? 0xFFFFFFFFu : 0x80000000u;
    tandem::detail::CostIndex index;
    std::uint64_t uniform = 0;
    BOOST_REQUIRE(index.build(costs.data(), n, uniform));
    BOOST_TEST(index.shift() == 1u);
    BOOST_TEST(index.total() <= tandem::detail::CostIndex::max_total);
    BOOST_TEST(index.total() == (n / 2) * (0x7FFFFFFFull + 0x40000000ull));
}

BOOST_AUTO_TEST_CASE(costs_made_equal_by_the_shift_still_count_their_whole_cost) {
    // More than 2^21 tasks of costs 2^31 and 2^31 + 1: the shift that keeps their sum in range
    // makes them equal, so the batch takes the uniform path; its cost is still theirs, not
    // half of it.
    tandem::Engine engine{small_config(2)};
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [](const std::uint32_t& x) { return x + 1; }};
    const std::size_t n = (std::size_t{1} << 21) + 2;
    tandem::Batch<std::uint32_t> batch;
    batch.reserve(n);
    for (std::size_t i = 0; i < n; ++i) batch.push(i, static_cast<std::uint32_t>(i), 0x80000000u + (i % 2));
    const double total = static_cast<double>(batch.total_cost());
    auto r = engine.submit(inc, std::move(batch)).get();
    BOOST_TEST(r.results[n - 1].output == n);
    const double ran = static_cast<double>(r.stats.cpu_cost + r.stats.gpu_cost);
    BOOST_TEST(std::abs(ran - total) <= 1e-6 * total, "ran " << ran << " of " << total);
}

BOOST_AUTO_TEST_CASE(racing_claims_by_cost_take_the_whole_quota) {
    // Four threads claim a lane's quota of a batch whose costs differ a thousandfold, in
    // chunks that the task limit cuts short in the cheap half, without stealing: together they
    // must take the whole quota (a claimer that saw the quota full must never leave units
    // that nobody claims: the batch would never complete).
    tandem::Op<std::uint32_t, std::uint32_t> id{"id", [](const std::uint32_t& x) { return x; }};
    const std::size_t n = 4096;
    int short_runs = 0;
    for (int run = 0; run < 1000; ++run) {
        tandem::Batch<std::uint32_t> b;
        b.reserve(n);
        for (std::size_t i = 0; i < n; ++i) b.push(i, 0, i < n / 2 ? 1000 : 1);
        auto job = std::make_shared<tandem::detail::BatchJob<std::uint32_t, std::uint32_t>>(
            id, std::move(b), tandem::detail::OutputBuffer<std::uint32_t>{n});
        const std::uint64_t quota = 1000 * n / 2 + 1024;  // into the cheap half
        job->set_cpu_chunk(4);
        job->set_cpu_quota(quota);
        job->set_steal(false);
        std::atomic<std::uint64_t> got{0};
        std::atomic<int> ready{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t) {
            threads.emplace_back([&] {
                ready.fetch_add(1);
                while (ready.load() < 4) std::this_thread::yield();
                for (auto r = job->claim_cpu(job->cpu_chunk()); !r.empty(); r = job->claim_cpu(job->cpu_chunk())) {
                    got.fetch_add(job->share_units(r));
                }
            });
        }
        for (auto& t : threads) t.join();
        short_runs += got.load() < quota;
        (void)job->claim_rest();
    }
    BOOST_TEST(short_runs == 0);
}

BOOST_AUTO_TEST_CASE(a_dense_batch_numbers_its_tasks_from_the_first_id) {
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [](const std::uint32_t& x) { return x + 1; }};
    std::vector<std::uint32_t> values{5, 6, 7};
    auto batch = tandem::Batch<std::uint32_t>::dense(values, 100, engine.pinned_memory());
    BOOST_TEST(batch.size() == 3u);
    BOOST_TEST(batch.total_cost() == 3u);
    BOOST_TEST(batch.id(2) == 102u);
    auto r = engine.submit(inc, std::move(batch)).get();
    BOOST_TEST(r.results[0].id == 100u);
    BOOST_TEST(r.results[2].output == 8u);
}

BOOST_AUTO_TEST_CASE(a_borrowed_batch_is_read_in_place_and_its_owner_let_go_before_it_is_ready) {
    tandem::Engine engine{small_config()};
    auto values = std::make_shared<std::vector<std::uint32_t>>(100000);
    std::iota(values->begin(), values->end(), 0u);
    const std::uint32_t* first = values->data();
    const std::uint32_t* last = first + values->size();
    // The op reports whether each payload it is given lies in the program's own vector.
    std::atomic<std::size_t> elsewhere{0};
    tandem::Op<std::uint32_t, std::uint32_t> twice{"twice", [&](const std::uint32_t& x) {
                                                        if (&x < first || &x >= last) elsewhere.fetch_add(1);
                                                        return 2 * x;
                                                    }};
    auto batch = tandem::Batch<std::uint32_t>::borrow(*values, values, nullptr, 10);
    BOOST_TEST(batch.borrowed());
    BOOST_TEST(batch.size() == values->size());
    BOOST_TEST(batch.id(0) == 10u);
    BOOST_TEST(values.use_count() == 2);  // the batch holds the owner
    auto future = engine.submit(twice, std::move(batch));
    BOOST_TEST(batch.empty());  // a moved-from batch holds nothing, borrowed or not
    auto r = future.get();
    BOOST_TEST(elsewhere.load() == 0u);  // not one payload was copied
    for (std::size_t i = 0; i < values->size(); ++i) BOOST_REQUIRE_EQUAL(r.results[i].output, 2 * (*values)[i]);
    BOOST_TEST(r.results[5].id == 15u);
    BOOST_TEST(values.use_count() == 1);  // let go of by the time get() returned
}

BOOST_AUTO_TEST_CASE(writing_to_a_borrowed_batch_copies_its_payloads_first_and_leaves_the_owners_alone) {
    tandem::Engine engine{small_config()};
    auto values = std::make_shared<std::vector<std::uint32_t>>(std::vector<std::uint32_t>{1, 2, 3});
    auto batch = tandem::Batch<std::uint32_t>::borrow(*values, values);
    batch.payloads()[0] = 7;
    batch.push(99, 4);
    BOOST_TEST(!batch.borrowed());
    BOOST_TEST(values.use_count() == 1);
    BOOST_TEST((*values)[0] == 1u);  // the program's payloads are untouched
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [](const std::uint32_t& x) { return x + 1; }};
    auto r = engine.submit(inc, std::move(batch)).get();
    BOOST_REQUIRE_EQUAL(r.results.size(), 4u);
    BOOST_TEST(r.results[0].output == 8u);
    BOOST_TEST(r.results[3].output == 5u);
    BOOST_TEST(r.results[3].id == 99u);
}

BOOST_AUTO_TEST_CASE(a_batch_submitted_with_outputs_writes_its_results_into_the_callers_storage) {
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint64_t> square{"square", [](const std::uint32_t& x) {
                                                        if (x == 7) throw std::runtime_error{"seven"};
                                                        return std::uint64_t{x} * x;
                                                    }};
    const std::size_t n = 50000;
    auto storage = std::make_shared<std::vector<std::uint64_t>>(n, 12345u);
    std::weak_ptr<std::vector<std::uint64_t>> watch = storage;
    tandem::BatchResult<std::uint64_t> r;
    {
        tandem::OutputSpan<std::uint64_t> out{*storage, storage};
        storage.reset();  // the batch's results keep it
        r = engine.submit(square, iota_batch(n), std::move(out)).get();
    }
    BOOST_TEST(!watch.expired());
    auto held = watch.lock();
    BOOST_TEST(r.results.outputs().data() == held->data());  // in place, not a copy
    for (std::size_t i = 0; i < n; ++i) {
        if (i == 7) continue;
        BOOST_REQUIRE_EQUAL((*held)[i], std::uint64_t{i} * i);
    }
    BOOST_TEST((*held)[7] == 0u);  // a failed task's slot is value-initialised, as in the engine's own storage
    BOOST_TEST(!r.results[7].ok());
    held.reset();
    r = {};
    BOOST_TEST(watch.expired());  // let go of with the results
}

BOOST_AUTO_TEST_CASE(outputs_of_the_wrong_size_fail_with_invalid_argument) {
    tandem::Engine engine{small_config()};
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [](const std::uint32_t& x) { return x + 1; }};
    std::vector<std::uint32_t> too_few(2);
    expect_error([&] { engine.submit(inc, iota_batch(3), tandem::OutputSpan<std::uint32_t>{too_few, nullptr}).get(); },
                 tandem::ExecError::InvalidArgument);
    auto batch = iota_batch(3);
    tandem::OutputSpan<std::uint32_t> out{too_few, nullptr};
    auto f = engine.submit_if_room(inc, batch, out);
    BOOST_REQUIRE(f.has_value());
    expect_error([&] { f->get(); }, tandem::ExecError::InvalidArgument);
}

BOOST_AUTO_TEST_CASE(a_borrowed_batch_with_outputs_copies_nothing_of_the_callers) {
    tandem::Engine engine{small_config()};
    const std::size_t n = 200000;
    auto in = std::make_shared<std::vector<std::uint32_t>>(n);
    std::iota(in->begin(), in->end(), 1u);
    auto out = std::make_shared<std::vector<std::uint32_t>>(n);
    const std::uint32_t* first = in->data();
    const std::uint32_t* last = first + n;
    std::atomic<std::size_t> elsewhere{0};
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [&](const std::uint32_t& x) {
                                                     if (&x < first || &x >= last) elsewhere.fetch_add(1);
                                                     return x + 1;
                                                 }};
    // Half of each, as the cluster runs a rank's slice of a batch.
    const std::size_t half = n / 2;
    auto r = engine
                 .submit(inc, tandem::Batch<std::uint32_t>::borrow(std::span{*in}.subspan(half), in, nullptr, half),
                         tandem::OutputSpan<std::uint32_t>{std::span{*out}.subspan(half), out})
                 .get();
    BOOST_TEST(r.results.size() == half);
    BOOST_TEST(elsewhere.load() == 0u);  // the payloads were read where they are
    BOOST_TEST(r.results.outputs().data() == out->data() + half);
    BOOST_TEST(r.results[0].id == half);
    BOOST_TEST((*out)[0] == 0u);  // the other half untouched
    for (std::size_t i = half; i < n; ++i) BOOST_REQUIRE_EQUAL((*out)[i], (*in)[i] + 1);
}

BOOST_AUTO_TEST_CASE(a_moved_from_batch_is_empty_whether_its_payloads_were_its_own_or_borrowed) {
    auto values = std::make_shared<std::vector<std::uint32_t>>(std::vector<std::uint32_t>{1, 2, 3});
    for (bool borrowed : {false, true}) {
        BOOST_TEST_CONTEXT("borrowed " << borrowed) {
            auto a = borrowed ? tandem::Batch<std::uint32_t>::borrow(*values, values) : iota_batch(3);
            tandem::Batch<std::uint32_t> b{std::move(a)};
            BOOST_TEST(b.size() == 3u);
            BOOST_TEST(a.empty());
            BOOST_TEST(a.ids().size() == 0u);
            BOOST_TEST(a.total_cost() == 0u);
            // Reused: a task pushed into it is its only task.
            a.push(7, 70);
            BOOST_TEST(a.size() == 1u);
            BOOST_TEST(a.ids().size() == 1u);
            BOOST_TEST(a.total_cost() == 1u);
            tandem::Batch<std::uint32_t> c{tandem::heap_memory()};
            c = std::move(b);
            BOOST_TEST(c.size() == 3u);
            BOOST_TEST(b.empty());
            BOOST_TEST(b.ids().size() == 0u);
            BOOST_TEST(b.total_cost() == 0u);
        }
    }
    BOOST_TEST(values.use_count() == 1);
}

BOOST_AUTO_TEST_CASE(a_borrowed_batch_that_names_no_memory_counts_as_heap_memory_not_page_locked) {
    tandem::Engine engine{small_config()};
    std::vector<std::uint32_t> values{1, 2};
    BOOST_TEST(tandem::Batch<std::uint32_t>::borrow(values, nullptr).memory() == tandem::heap_memory());
    BOOST_TEST(tandem::Batch<std::uint32_t>::borrow(values, nullptr, engine.pinned_memory()).memory() ==
               engine.pinned_memory());
}

BOOST_AUTO_TEST_CASE(an_engine_without_a_gpu_gives_cached_memory_for_large_columns_and_the_heap_for_small_ones) {
    tandem::EngineConfig c = small_config();
    c.gpu.enabled = false;  // on a GPU host too
    tandem::Engine engine{c};
    BOOST_TEST(engine.output_memory(100) == nullptr);
    auto large = engine.output_memory(std::size_t{1} << 20);
    BOOST_REQUIRE(large != nullptr);
    BOOST_TEST(large.get() != engine.pinned_memory());
    // A block freed into it is handed out again.
    void* p = large->allocate(std::size_t{1} << 20, 64);
    large->deallocate(p, std::size_t{1} << 20, 64);
    BOOST_TEST(large->allocate(std::size_t{1} << 20, 64) == p);
    large->deallocate(p, std::size_t{1} << 20, 64);
}

BOOST_AUTO_TEST_CASE(a_promise_with_outputs_writes_into_the_callers_storage_and_refuses_a_wrong_size) {
    auto storage = std::make_shared<std::vector<std::uint32_t>>(3);
    std::weak_ptr<std::vector<std::uint32_t>> watch = storage;
    BOOST_CHECK_THROW((tandem::BatchPromise<std::uint32_t>{"p", tandem::IdColumn::dense_range(0, 4), 4, {},
                                                           tandem::OutputSpan<std::uint32_t>{*storage, storage}}),
                      std::invalid_argument);
    tandem::BatchPromise<std::uint32_t> promise{"p", tandem::IdColumn::dense_range(0, 3), 3, {},
                                                tandem::OutputSpan<std::uint32_t>{*storage, storage}};
    storage.reset();
    auto future = promise.get_future();
    BOOST_REQUIRE(promise.outputs() == watch.lock()->data());
    for (std::uint32_t i = 0; i < 3; ++i) promise.outputs()[i] = 10 + i;
    promise.set_value();
    auto r = future.get();
    BOOST_TEST(r.results[2].output == 12u);
    BOOST_TEST(!watch.expired());  // the results keep it
    r = {};
    BOOST_TEST(watch.expired());
}

// ---- futures: move-only, no state, cancel handles ----------------------------------------

static_assert(!std::is_copy_constructible_v<tandem::BatchFuture<int>>, "a future has one owner");
static_assert(!std::is_copy_assignable_v<tandem::BatchFuture<int>>, "a future has one owner");
static_assert(std::is_nothrow_move_constructible_v<tandem::BatchFuture<int>>);
static_assert(std::is_copy_constructible_v<tandem::CancelHandle>);

namespace {

/// A coroutine that runs to completion eagerly and records what its co_await threw.
struct Eager {
    struct promise_type {
        Eager get_return_object() { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() {}
        void unhandled_exception() { std::terminate(); }
    };
};

Eager await_consumed(tandem::BatchFuture<int>& f, std::error_code& seen) {
    try {
        co_await f;
    } catch (const tandem::Error& e) {
        seen = e.code();
    }
}

}  // namespace

BOOST_AUTO_TEST_CASE(using_a_consumed_future_gives_no_state_errors_not_undefined_behaviour) {
    tandem::Engine engine{small_config()};
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    auto f = engine.submit(id, tandem::Batch<int>{{1, 5, 1}});
    BOOST_TEST(f.get().results[0].output == 5);
    BOOST_TEST(!f.valid());
    expect_error([&] { f.get(); }, tandem::ExecError::NoState);
    expect_error([&] { f.wait(); }, tandem::ExecError::NoState);
    expect_error([&] { f.then([](std::error_code, tandem::BatchResult<int>) {}); }, tandem::ExecError::NoState);
    expect_error([&] { (void)f.cancel_handle(); }, tandem::ExecError::NoState);
    BOOST_TEST(!f.cancel());
    std::error_code seen;
    await_consumed(f, seen);
    BOOST_TEST(seen == tandem::make_error_code(tandem::ExecError::NoState));
    tandem::BatchFuture<int> empty;
    expect_error([&] { empty.get(); }, tandem::ExecError::NoState);
}

BOOST_AUTO_TEST_CASE(a_moved_from_future_has_no_state_and_the_new_owner_gets_the_result) {
    tandem::Engine engine{small_config()};
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    auto f = engine.submit(id, tandem::Batch<int>{{1, 9, 1}});
    tandem::BatchFuture<int> g = std::move(f);
    expect_error([&] { f.get(); }, tandem::ExecError::NoState);  // NOLINT(bugprone-use-after-move)
    BOOST_TEST(g.get().results[0].output == 9);
}

BOOST_AUTO_TEST_CASE(a_copied_cancel_handle_cancels_the_batch_its_future_reports) {
    tandem::EngineConfig c = small_config(1);
    c.cpu_chunk = 1;
    tandem::Engine engine{c};
    Gate gate;
    tandem::Op<std::uint32_t, std::uint32_t> slow{"slow", [&](const std::uint32_t& x) {
        gate.wait();
        return x;
    }};
    auto f = engine.submit(slow, iota_batch(1000));
    const tandem::CancelHandle handle = f.cancel_handle();
    const tandem::CancelHandle copy = handle;  // NOLINT(performance-unnecessary-copy-initialization)
    while (gate.entered.load() < 1) std::this_thread::sleep_for(100us);
    BOOST_TEST(copy.cancel());
    gate.open = true;
    expect_error([&] { f.get(); }, tandem::ExecError::Cancelled);
    BOOST_TEST(!handle.cancel());  // completed by now
}

// ---- configuration ---------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(every_config_value_out_of_its_range_is_refused_naming_the_field) {
    using Mutate = void (*)(tandem::EngineConfig&);
    const std::vector<std::pair<const char*, Mutate>> cases = {
        {"cpu_workers", [](tandem::EngineConfig& c) { c.cpu_workers = 5000; }},
        {"max_batches_in_flight", [](tandem::EngineConfig& c) { c.max_batches_in_flight = 0; }},
        {"max_batches_in_flight", [](tandem::EngineConfig& c) { c.max_batches_in_flight = SIZE_MAX; }},
        {"max_tasks_in_flight", [](tandem::EngineConfig& c) { c.max_tasks_in_flight = 0; }},
        {"max_tasks_in_flight", [](tandem::EngineConfig& c) { c.max_tasks_in_flight = UINT64_MAX; }},
        {"cpu_chunk", [](tandem::EngineConfig& c) { c.cpu_chunk = SIZE_MAX; }},
        {"idle_spin", [](tandem::EngineConfig& c) { c.idle_spin = -1ns; }},
        {"trace.capacity", [](tandem::EngineConfig& c) { c.trace.capacity = 0; }},
        {"trace.capacity", [](tandem::EngineConfig& c) { c.trace.capacity = SIZE_MAX; }},
        {"idle_spin", [](tandem::EngineConfig& c) { c.idle_spin = 2s; }},
        {"gpu.max_devices", [](tandem::EngineConfig& c) { c.gpu.max_devices = 65; }},
        {"gpu.first_device", [](tandem::EngineConfig& c) { c.gpu.first_device = 64; }},
        {"gpu.streams_per_device", [](tandem::EngineConfig& c) { c.gpu.streams_per_device = 0; }},
        {"gpu.pinned_pool_bytes", [](tandem::EngineConfig& c) { c.gpu.pinned_pool_bytes = 0; }},
        {"gpu.device_pool_bytes", [](tandem::EngineConfig& c) { c.gpu.device_pool_bytes = SIZE_MAX; }},
        {"gpu.chunk_bytes", [](tandem::EngineConfig& c) { c.gpu.chunk_bytes = SIZE_MAX; }},
        {"gpu.faults.kernel_repeats", [](tandem::EngineConfig& c) { c.gpu.faults.kernel_repeats = 0; }},
        {"gpu.model.cpu_dispatch_cost", [](tandem::EngineConfig& c) { c.gpu.model.cpu_dispatch_cost = 2ms; }},
        {"gpu.faults.kernel_repeats", [](tandem::EngineConfig& c) { c.gpu.faults.kernel_repeats = 1001; }},
        {"gpu.shutdown_grace", [](tandem::EngineConfig& c) { c.gpu.shutdown_grace = 0ms; }},
        {"gpu.shutdown_grace", [](tandem::EngineConfig& c) { c.gpu.shutdown_grace = std::chrono::milliseconds::max(); }},
        {"gpu.simulated[].per_task", [](tandem::EngineConfig& c) {
             c.gpu.simulated.push_back({});
             c.gpu.simulated.back().per_task = -1ns;
         }},
        {"gpu.simulated[].hang_after_chunks", [](tandem::EngineConfig& c) {
             c.gpu.simulated.push_back({});
             c.gpu.simulated.back().hang_after_chunks = -2;
         }},
    };
    for (const auto& [field, mutate] : cases) {
        tandem::EngineConfig c = small_config(1);
        mutate(c);
        try {
            tandem::Engine engine{c};
            BOOST_ERROR("accepted an out-of-range " << field);
        } catch (const std::invalid_argument& e) {
            const std::string what = e.what();
            BOOST_TEST(what.find(field) != std::string::npos, what);
            BOOST_TEST(what.find("allowed") != std::string::npos, what);
        }
    }
}

BOOST_AUTO_TEST_CASE(the_largest_cpu_chunk_allowed_still_runs_every_task) {
    tandem::EngineConfig c = small_config(2);
    c.cpu_chunk = std::size_t{1} << 32;
    tandem::Engine engine{c};
    tandem::Op<std::uint32_t, std::uint32_t> inc{"inc", [](const std::uint32_t& x) { return x + 1; }};
    auto f = engine.submit(inc, iota_batch(5000));
    BOOST_REQUIRE((f.wait_for(60s) == std::future_status::ready));
    auto r = f.get();
    for (std::uint32_t i = 0; i < 5000; ++i) BOOST_REQUIRE_EQUAL(r.results[i].output, i + 1);
}

// ---- continuations ---------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(a_throwing_continuation_is_caught_counted_and_reported_to_the_handler) {
    std::atomic<int> reported{0};
    std::string what;
    std::mutex what_mutex;
    tandem::EngineConfig c = small_config(1);
    c.on_continuation_error = [&](std::exception_ptr e) {
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            std::lock_guard lock{what_mutex};
            what = ex.what();
        }
        reported.fetch_add(1);
    };
    tandem::Engine engine{c};
    Gate gate;
    tandem::Op<int, int> gated{"gated", [&](const int& x) {
        gate.wait();
        return x;
    }};
    std::atomic<bool> ran{false};
    engine.submit(gated, tandem::Batch<int>{{1, 1, 1}}).then([&](std::error_code, tandem::BatchResult<int>) {
        ran = true;
        throw std::runtime_error{"continuation failed"};
    });
    gate.open = true;  // the continuation runs on the worker that completes the batch
    while (reported.load() == 0) std::this_thread::sleep_for(100us);
    BOOST_TEST(ran.load());
    {
        std::lock_guard lock{what_mutex};
        BOOST_TEST(what == "continuation failed");
    }
    // The engine goes on.
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    BOOST_TEST(engine.submit(id, tandem::Batch<int>{{1, 4, 1}}).get().results[0].output == 4);
    BOOST_TEST(engine.metrics().continuation_failures == 1u);
    BOOST_TEST(tandem::to_prometheus(engine.metrics()).find("tandem_continuation_failures_total 1\n") !=
               std::string::npos);
}

BOOST_AUTO_TEST_CASE(destroying_the_engine_from_its_own_continuation_completes_every_batch) {
    auto engine = std::make_shared<tandem::Engine>(small_config(2));
    Gate gate;
    tandem::Op<int, int> gated{"gated", [&](const int& x) {
        gate.wait();
        return x;
    }};
    auto later = engine->submit(gated, tandem::Batch<int>{{1, 7, 1}});
    std::promise<void> destroyed;
    engine->submit(gated, tandem::Batch<int>{{1, 1, 1}})
        .then([&, owner = engine](std::error_code, tandem::BatchResult<int>) mutable {
            owner.reset();  // the last reference: the engine is destroyed on its own thread
            destroyed.set_value();
        });
    engine.reset();
    gate.open = true;
    destroyed.get_future().wait();
    BOOST_REQUIRE((later.wait_for(60s) == std::future_status::ready));
    if (!later.error()) BOOST_TEST(later.get().results[0].output == 7);
}

BOOST_AUTO_TEST_CASE(shutdown_from_a_continuation_returns_and_the_engine_finishes_shutting_down) {
    tandem::Engine engine{small_config(1)};
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    std::promise<void> returned;
    engine.submit(id, tandem::Batch<int>{{1, 1, 1}}).then([&](std::error_code, tandem::BatchResult<int>) {
        engine.shutdown();
        returned.set_value();
    });
    BOOST_REQUIRE((returned.get_future().wait_for(60s) == std::future_status::ready));
    engine.shutdown();  // from this thread: waits for the shutdown the continuation began
    expect_error([&] { engine.submit(id, tandem::Batch<int>{{1, 1, 1}}).get(); }, tandem::ExecError::ShutDown);
}

BOOST_AUTO_TEST_CASE(then_with_an_executor_runs_the_continuation_on_that_executor) {
    tandem::Engine engine{small_config(1)};
    tandem::Op<int, int> id{"id", [](const int& x) { return x + 1; }};
    // A one-thread executor: tasks handed to it run on its own thread.
    std::mutex m;
    std::vector<tandem::detail::UniqueFunction> queue;
    std::atomic<bool> have{false};
    auto executor = [&](auto task) {
        std::lock_guard lock{m};
        queue.emplace_back(std::move(task));
        have = true;
    };
    std::thread::id ran_on;
    int value = 0;
    engine.submit(id, tandem::Batch<int>{{1, 1, 1}}).then(executor, [&](std::error_code ec, tandem::BatchResult<int> r) {
        ran_on = std::this_thread::get_id();
        value = ec ? -1 : r.results[0].output;
    });
    std::thread runner{[&] {
        while (!have.load()) std::this_thread::sleep_for(100us);
        std::lock_guard lock{m};
        for (auto& t : queue) t();
    }};
    const auto runner_id = runner.get_id();
    runner.join();
    BOOST_TEST((ran_on == runner_id));
    BOOST_TEST(value == 2);
}

namespace {

/// An output that notes whether it was default-constructed (as skipped tasks' outputs are) on
/// the thread named in `cancelling_thread`.
std::atomic<std::thread::id> cancelling_thread{};
std::atomic<std::uint64_t> skipped_on_canceller{0}, skipped_elsewhere{0};

struct Noted {
    std::uint32_t value = 0;
    Noted() noexcept {
        (std::this_thread::get_id() == cancelling_thread.load() ? skipped_on_canceller : skipped_elsewhere)
            .fetch_add(1, std::memory_order_relaxed);
    }
    explicit Noted(std::uint32_t v) noexcept : value{v} {}
};

}  // namespace

BOOST_AUTO_TEST_CASE(cancel_leaves_the_skipping_of_unstarted_work_to_an_engine_thread) {
    tandem::EngineConfig c = small_config(1);
    c.cpu_chunk = 1;
    tandem::Engine engine{c};
    Gate gate;
    tandem::Op<std::uint32_t, Noted> slow{"slow", [&](const std::uint32_t& x) {
        gate.wait();
        return Noted{x};
    }};
    auto f = engine.submit(slow, iota_batch(100000));
    while (gate.entered.load() < 1) std::this_thread::sleep_for(100us);
    cancelling_thread = std::this_thread::get_id();
    skipped_on_canceller = 0;
    skipped_elsewhere = 0;
    BOOST_TEST(f.cancel());  // 99,999 outputs to default-construct: not on this thread
    gate.open = true;
    expect_error([&] { f.get(); }, tandem::ExecError::Cancelled);
    BOOST_TEST(skipped_on_canceller.load() == 0u);
    BOOST_TEST(skipped_elsewhere.load() >= 99999u);
}

BOOST_AUTO_TEST_CASE(a_cancel_that_wins_reports_cancelled_even_if_every_chunk_was_already_running) {
    tandem::EngineConfig c = small_config(1);
    tandem::Engine engine{c};
    Gate gate;
    tandem::Op<int, int> gated{"gated", [&](const int& x) {
        gate.wait();
        return x;
    }};
    auto f = engine.submit(gated, tandem::Batch<int>{{1, 1, 1}});
    while (gate.entered.load() < 1) std::this_thread::sleep_for(100us);  // nothing left unclaimed
    BOOST_TEST(f.cancel());
    gate.open = true;
    expect_error([&] { f.get(); }, tandem::ExecError::Cancelled);
}

BOOST_AUTO_TEST_CASE(shutdown_from_a_continuation_while_a_user_thread_shuts_down_does_not_deadlock) {
    auto engine = std::make_unique<tandem::Engine>(small_config(1));
    Gate gate;
    tandem::Op<int, int> gated{"gated", [&](const int& x) {
        gate.wait();
        return x;
    }};
    std::atomic<bool> called{false};
    engine->submit(gated, tandem::Batch<int>{{1, 1, 1}}).then([&](std::error_code, tandem::BatchResult<int>) {
        engine->shutdown();  // runs on the worker that the user's shutdown is joining
        called = true;
    });
    while (gate.entered.load() < 1) std::this_thread::sleep_for(100us);
    auto done = std::async(std::launch::async, [&] { engine->shutdown(); });
    std::this_thread::sleep_for(20ms);  // the user's shutdown is (most likely) joining the worker
    gate.open = true;
    BOOST_REQUIRE_MESSAGE(done.wait_for(30s) == std::future_status::ready, "shutdown deadlocked");
    BOOST_TEST(called.load());
}

BOOST_AUTO_TEST_CASE(wait_for_the_longest_duration_does_not_overflow_into_a_timeout) {
    tandem::Engine engine{small_config(1)};
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    auto f = engine.submit(id, tandem::Batch<int>{{1, 1, 1}});
    BOOST_TEST((f.wait_for(std::chrono::nanoseconds::max()) == std::future_status::ready));
    BOOST_TEST((f.wait_until(std::chrono::steady_clock::time_point::max()) == std::future_status::ready));
}

BOOST_AUTO_TEST_CASE(shutdown_returns_only_after_every_continuation_has_finished) {
    // A batch cancelled from a user's thread while it waits behind another one: its completion
    // (and its continuation) must be over before shutdown returns, wherever it runs.
    tandem::Engine engine{small_config(1)};
    Gate gate;
    tandem::Op<int, int> gated{"gated", [&](const int& x) {
        gate.wait();
        return x;
    }};
    auto first = engine.submit(gated, tandem::Batch<int>{{1, 1, 1}});
    while (gate.entered.load() < 1) std::this_thread::sleep_for(100us);
    auto queued = engine.submit(gated, tandem::Batch<int>{{1, 2, 1}});
    const auto handle = queued.cancel_handle();
    std::atomic<bool> entered{false}, release{false}, finished{false};
    queued.then([&](std::error_code, tandem::BatchResult<int>) {
        entered = true;
        while (!release.load()) std::this_thread::sleep_for(100us);
        finished = true;
    });
    std::thread canceller{[&] { handle.cancel(); }};
    while (!entered.load()) std::this_thread::sleep_for(100us);
    gate.open = true;
    first.get();
    std::atomic<bool> finished_when_shutdown_returned{false};
    std::thread stopper{[&] {
        engine.shutdown();
        finished_when_shutdown_returned = finished.load();
    }};
    std::this_thread::sleep_for(50ms);  // room for a shutdown that does not wait to return early
    release = true;
    stopper.join();
    canceller.join();
    BOOST_TEST(finished_when_shutdown_returned.load());
}

BOOST_AUTO_TEST_CASE(a_failed_send_to_the_scheduler_fails_that_batch_with_out_of_memory) {
    tandem::EngineConfig c = small_config(1);
    c.test_hooks.fail_scheduler_sends = 1;
    tandem::Engine engine{c};
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    expect_error([&] { engine.submit(id, tandem::Batch<int>{{1, 1, 1}}).get(); }, tandem::ExecError::OutOfMemory);
    BOOST_TEST(engine.submit(id, tandem::Batch<int>{{1, 3, 1}}).get().results[0].output == 3);
    engine.shutdown();  // a batch leaves the books just after its future is ready
    BOOST_TEST(engine.metrics().batches_in_flight == 0u);
}

BOOST_AUTO_TEST_CASE(a_failed_send_to_a_worker_fails_that_batch_with_out_of_memory) {
    tandem::EngineConfig c = small_config(1);
    c.test_hooks.fail_worker_sends = 1;
    tandem::Engine engine{c};
    tandem::Op<int, int> id{"id", [](const int& x) { return x; }};
    expect_error([&] { engine.submit(id, tandem::Batch<int>{{1, 1, 1}}).get(); }, tandem::ExecError::OutOfMemory);
    BOOST_TEST(engine.submit(id, tandem::Batch<int>{{1, 3, 1}}).get().results[0].output == 3);
}

// ---- fairness and priority ---------------------------------------------------------------

BOOST_AUTO_TEST_CASE(a_small_batch_submitted_while_a_huge_one_runs_is_served_between_its_chunks) {
    // One worker, a batch of 1000 one-task chunks. From its second task on, each task waits
    // (up to 5 ms) for the small batch to be done. Served fairly, the small batch runs after
    // a few of the huge one's chunks; served batch after batch, it would wait for all 1000.
    tandem::EngineConfig c = small_config(1);
    c.cpu_chunk = 1;
    tandem::Engine engine{c};
    std::atomic<bool> small_done{false};
    std::atomic<int> huge_ran{0}, huge_ran_before_small{-1};
    tandem::Op<std::uint32_t, std::uint32_t> huge{"huge", [&](const std::uint32_t& x) {
        if (huge_ran.fetch_add(1) >= 1) {
            const auto until = std::chrono::steady_clock::now() + 5ms;
            while (!small_done.load() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(50us);
        }
        return x;
    }};
    tandem::Op<std::uint32_t, std::uint32_t> small{"small", [](const std::uint32_t& x) { return x + 1; }};
    auto big = engine.submit(huge, iota_batch(1000));
    while (huge_ran.load() < 1) std::this_thread::sleep_for(50us);
    engine.submit(small, iota_batch(1)).then([&](std::error_code ec, tandem::BatchResult<std::uint32_t> r) {
        BOOST_TEST(!ec);
        BOOST_TEST(r.results[0].output == 1u);
        huge_ran_before_small = huge_ran.load();
        small_done = true;
    });
    auto r = big.get();
    BOOST_TEST(r.results[999].output == 999u);
    BOOST_TEST_MESSAGE("huge-batch tasks run before the small batch completed: " << huge_ran_before_small.load());
    BOOST_TEST(huge_ran_before_small.load() >= 1);
    BOOST_TEST(huge_ran_before_small.load() < 500);  // batch after batch: 1000
}

BOOST_AUTO_TEST_CASE(a_worker_serves_higher_priority_batches_first_and_equal_ones_in_turn) {
    // One worker, held inside the first chunk of a background batch (priority -1, 100 chunks).
    // Then come, in this order: two normal batches (0) of 3 chunks and one urgent batch (1) of
    // 3 chunks. Released, the worker must run the urgent batch to its end first, then the two
    // normal ones in turn, and the background batch last.
    tandem::EngineConfig c = small_config(1);
    c.cpu_chunk = 1;
    tandem::Engine engine{c};
    tandem::testing::Gate gate;
    std::mutex mutex;
    std::vector<char> order;  // which batch each chunk (one task) belonged to
    auto op_for = [&](char tag) {
        return tandem::Op<std::uint32_t, std::uint32_t>{std::string{"op_"} + tag, [&, tag](const std::uint32_t& x) {
            if (tag == 'z' && x == 0) gate.wait();
            std::lock_guard lock{mutex};
            order.push_back(tag);
            return x;
        }};
    };
    auto batch_of = [](std::size_t n, int priority) {
        auto b = iota_batch(n);
        b.set_priority(priority);
        return b;
    };
    const auto background = op_for('z'), normal_a = op_for('a'), normal_b = op_for('b'), urgent = op_for('u');
    auto z = engine.submit(background, batch_of(100, -1));
    while (gate.entered.load() == 0) std::this_thread::sleep_for(50us);
    auto a = engine.submit(normal_a, batch_of(3, 0));
    auto b = engine.submit(normal_b, batch_of(3, 0));
    auto u = engine.submit(urgent, batch_of(3, 1));
    // submit() has put each in the worker's mailbox (no device: the direct path) by now.
    gate.open = true;
    // Not get(): this thread would run chunks of the batch it waits for.
    for (auto* f : {&z, &a, &b, &u}) tandem::testing::wait_without_helping(*f);
    const std::string got{order.begin(), order.end()};
    BOOST_TEST_MESSAGE("chunk order: " << got);
    BOOST_REQUIRE(got.size() == 109u);
    BOOST_TEST(got.substr(0, 1) == "z");    // the chunk that was running
    BOOST_TEST(got.substr(1, 3) == "uuu");  // urgent first, to its end
    std::string normal = got.substr(4, 6);
    BOOST_TEST((normal == "ababab" || normal == "bababa"));  // the two normal ones in turn
    BOOST_TEST(got.substr(10) == std::string(99, 'z'));  // background last
}

namespace {

/// Runs a 4-task batch (`submit` + `get`, or `run` when `through_run`) while every worker of
/// `engine` (`workers` of them) is held inside a batch of its own; returns the threads the
/// batch's tasks ran on, whether the workers were still held when each ran, and whether a
/// worker still held the batch (its op's captures) once the call returned and the op was
/// gone. A helper thread lets the workers go after a while, so that a batch left to them
/// completes (then on a worker's thread) instead of hanging.
struct HeldRun {
    std::set<std::thread::id> ran_on;
    bool workers_were_free = false;
    bool left_with_a_worker = false;
    std::vector<std::uint32_t> outputs;
};
HeldRun run_while_workers_are_held(tandem::Engine& engine, int workers, std::chrono::milliseconds release_after,
                                   bool through_run = false) {
    tandem::testing::Gate gate;
    const tandem::Op<std::uint32_t, std::uint32_t> hold{"hold", [&](const std::uint32_t& x) {
        gate.wait();
        return x;
    }};
    std::vector<tandem::BatchFuture<std::uint32_t>> held;
    for (int w = 0; w < workers; ++w) held.push_back(engine.submit(hold, iota_batch(1, static_cast<std::uint64_t>(w))));
    while (gate.entered.load() < workers) std::this_thread::sleep_for(50us);
    std::atomic<bool> done{false};
    std::thread opener{[&] {
        const auto until = std::chrono::steady_clock::now() + release_after;
        while (!done.load() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
        gate.open = true;
    }};
    struct Join {  // even if a check throws: the workers leave the gate before it goes
        std::atomic<bool>& done;
        std::thread& t;
        tandem::testing::Gate& gate;
        std::vector<tandem::BatchFuture<std::uint32_t>>& held;
        ~Join() {
            done = true;
            t.join();
            gate.open = true;
            for (auto& h : held) {
                if (h.valid()) h.wait();
            }
        }
    } join{done, opener, gate, held};
    HeldRun out;
    std::mutex mutex;
    auto capture = std::make_shared<int>(1);
    const std::weak_ptr<int> watch = capture;
    {
        const tandem::Op<std::uint32_t, std::uint32_t> small{"small", [&, capture](const std::uint32_t& x) {
            std::lock_guard lock{mutex};
            out.ran_on.insert(std::this_thread::get_id());
            out.workers_were_free = out.workers_were_free || gate.open.load();
            return x + static_cast<std::uint32_t>(*capture);
        }};
        capture.reset();
        auto r = through_run ? engine.run(small, iota_batch(4)) : engine.submit(small, iota_batch(4)).get();
        BOOST_TEST(r.results.all_ok());
        for (std::size_t i = 0; i < r.results.size(); ++i) out.outputs.push_back(r.results[i].output);
    }
    out.left_with_a_worker = !watch.expired();
    gate.open = true;
    for (auto& h : held) h.get();
    return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_thread_waiting_in_get_runs_a_small_batch_that_no_worker_has_started) {
    // Both workers are held inside batches of their own. A 4-task batch submitted now (one
    // chunk) is sent to one worker; its caller, blocked in get(), claims and runs it on its own thread instead
    // of waiting for a worker to come free.
    tandem::EngineConfig c = small_config(2);
    c.cpu_chunk = 64;  // the batch is one chunk: sent to one worker
    tandem::Engine engine{c};
    const HeldRun run = run_while_workers_are_held(engine, 2, 5s);
    BOOST_TEST((run.outputs == std::vector<std::uint32_t>{1, 2, 3, 4}));
    BOOST_TEST(run.ran_on.size() == 1u);
    BOOST_TEST((run.ran_on.count(std::this_thread::get_id()) == 1));
    BOOST_TEST(!run.workers_were_free);  // the workers were still held
}

BOOST_AUTO_TEST_CASE(a_waiting_thread_leaves_the_batches_of_an_engine_of_one_worker_to_that_worker) {
    // An engine of one worker runs one task at a time (a program may rely on it for an op that
    // is not thread-safe): its waiters do not run tasks themselves.
    tandem::EngineConfig c = small_config(1);
    c.cpu_chunk = 64;
    tandem::Engine engine{c};
    const HeldRun run = run_while_workers_are_held(engine, 1, 20ms);
    BOOST_TEST((run.outputs == std::vector<std::uint32_t>{1, 2, 3, 4}));
    BOOST_TEST(run.ran_on.size() == 1u);
    BOOST_TEST((run.ran_on.count(std::this_thread::get_id()) == 0));
    BOOST_TEST(run.workers_were_free);  // it ran once the worker was let go
}

BOOST_AUTO_TEST_CASE(run_answers_a_small_batch_on_the_calling_thread_and_sends_it_to_no_worker) {
    // Both workers are held inside batches of their own. `run` of a small batch runs it on the
    // caller's thread, and no worker is sent it: once `run` returns and the op is gone, nothing
    // holds the op's captures (a batch sent to a held worker would wait in its mailbox, holding
    // its op, until the worker came free).
    tandem::EngineConfig c = small_config(2);
    c.cpu_chunk = 64;
    tandem::Engine engine{c};
    const HeldRun run = run_while_workers_are_held(engine, 2, 10s, true);
    BOOST_TEST((run.outputs == std::vector<std::uint32_t>{1, 2, 3, 4}));
    BOOST_TEST(run.ran_on.size() == 1u);
    BOOST_TEST((run.ran_on.count(std::this_thread::get_id()) == 1));
    BOOST_TEST(!run.workers_were_free);  // it ran while both workers were held
    BOOST_TEST(!run.left_with_a_worker);
}

BOOST_AUTO_TEST_CASE(run_on_an_engine_of_one_worker_leaves_the_batch_to_that_worker) {
    tandem::Engine engine{small_config(1)};
    std::atomic<bool> on_caller{false};
    const auto caller = std::this_thread::get_id();
    const tandem::Op<std::uint32_t, std::uint32_t> op{"where", [&](const std::uint32_t& x) {
        if (std::this_thread::get_id() == caller) on_caller = true;
        return x;
    }};
    BOOST_TEST(engine.run(op, iota_batch(3)).results.all_ok());
    BOOST_TEST(!on_caller.load());
}

BOOST_AUTO_TEST_CASE(run_throws_for_bad_input_and_after_shutdown_as_get_does) {
    tandem::Engine engine{small_config(2)};
    const tandem::Op<std::uint32_t, std::uint32_t> op{"plain", [](const std::uint32_t& x) { return x; }};
    expect_error([&] { engine.run(op, tandem::Batch<std::uint32_t>{}); }, tandem::ExecError::EmptyBatch);
    BOOST_TEST(engine.run(op, iota_batch(2000)).results.size() == 2000u);  // a batch for the workers
    engine.shutdown();
    expect_error([&] { engine.run(op, iota_batch(1)); }, tandem::ExecError::ShutDown);
}

BOOST_AUTO_TEST_CASE(a_task_run_by_the_caller_of_run_can_shut_the_engine_down) {
    // The caller runs the task as one of the engine's threads: the shutdown it starts returns
    // at once (finishing elsewhere) instead of waiting for the batch the caller is running.
    tandem::Engine engine{small_config(2)};
    const auto caller = std::this_thread::get_id();
    std::atomic<bool> on_caller{false};
    const tandem::Op<std::uint32_t, std::uint32_t> stop{"stop", [&](const std::uint32_t& x) {
        on_caller = std::this_thread::get_id() == caller;
        engine.shutdown();
        return x + 1;
    }};
    auto r = engine.run(stop, iota_batch(1));
    BOOST_TEST(r.results[0].output == 1u);
    BOOST_TEST(on_caller.load());
    expect_error([&] { engine.run(stop, iota_batch(1)); }, tandem::ExecError::ShutDown);
}

BOOST_AUTO_TEST_CASE(a_small_batch_queued_behind_the_worker_finishing_a_large_batch_runs_before_its_inputs_are_freed) {
    // One worker. The large batch (2 MiB of heap inputs) holds its last task until the small
    // batch is queued behind it. Freeing the large batch's inputs is the last step of its
    // completion, and the batch stays "in flight" until then: while the small batch's task
    // runs, the large one must still be in flight (its free left for when the worker is idle),
    // not already freed and gone (the small batch waiting for the free, ~9 ms per 256 MiB).
    tandem::EngineConfig c = small_config(1);
    tandem::Engine engine{c};
    constexpr std::size_t n = std::size_t{512} << 10;  // 512 Ki u32: 2 MiB of payloads
    std::atomic<bool> release{false}, last_started{false};
    tandem::Op<std::uint32_t, std::uint32_t> large{"large", [&](const std::uint32_t& x) {
        if (x == n - 1) {
            last_started = true;
            while (!release.load()) std::this_thread::yield();
        }
        return x;
    }};
    std::atomic<std::uint64_t> in_flight_seen{0};
    tandem::Op<std::uint32_t, std::uint32_t> small{"small", [&](const std::uint32_t& x) {
        in_flight_seen = engine.metrics().batches_in_flight;
        return x + 1;
    }};
    std::vector<std::uint32_t> payloads(n);
    std::iota(payloads.begin(), payloads.end(), 0u);
    auto big = engine.submit(large, tandem::Batch<std::uint32_t>::dense(payloads));
    while (!last_started.load()) std::this_thread::yield();
    auto one = engine.submit(small, iota_batch(1));
    release = true;
    BOOST_TEST(one.get().results[0].output == 1u);
    BOOST_TEST(big.get().results[n - 1].output == n - 1);
    BOOST_TEST(in_flight_seen.load() == 2u);  // the small batch and the large one, not yet freed
    engine.shutdown();
    BOOST_TEST(engine.metrics().batches_in_flight == 0u);  // every tail ran
}

BOOST_AUTO_TEST_CASE(a_large_batch_completed_under_steady_load_is_freed_within_a_few_chunks) {
    // One worker serves a background batch of 400 chunks and a large batch (2 MiB of heap
    // inputs, 128 chunks) in turn; the large one completes first. Its free waits for the small
    // batches queued behind it, but not for the ring to empty: a few chunks of the background
    // batch later it must have left "in flight". (Kept until the ring was empty, it stayed in
    // flight, its inputs allocated, until the background batch was done.)
    tandem::EngineConfig c = small_config(1);
    c.cpu_chunk = 4096;
    tandem::Engine engine{c};
    constexpr std::size_t large_n = std::size_t{512} << 10, background_n = 400 * 4096;
    std::atomic<std::uint64_t> last_seen{0};
    std::atomic<bool> both_submitted{false}, large_returned{false}, gave_up{false};
    tandem::Op<std::uint32_t, std::uint32_t> background{"background", [&](const std::uint32_t& x) {
        if (x == 0) {
            while (!both_submitted.load()) std::this_thread::yield();  // both in the ring first
        }
        if (x % 4096 == 0) last_seen = engine.metrics().batches_in_flight;  // first task of a chunk
        if (x == background_n - 1) {
            // The background batch ends only once the large one's get() has returned (however
            // late this thread is woken on a loaded machine); a worker that ran the large
            // batch only after the background one would wait here in vain.
            const auto deadline = std::chrono::steady_clock::now() + 60s;
            while (!large_returned.load() && !gave_up.load()) {
                if (std::chrono::steady_clock::now() > deadline) gave_up = true;
                std::this_thread::yield();
            }
        }
        return x;
    }};
    tandem::Op<std::uint32_t, std::uint32_t> large{"large", [](const std::uint32_t& x) { return x; }};
    std::vector<std::uint32_t> payloads(large_n);
    std::iota(payloads.begin(), payloads.end(), 0u);
    std::vector<std::uint32_t> bg(background_n);
    std::iota(bg.begin(), bg.end(), 0u);
    auto bg_batch = tandem::Batch<std::uint32_t>::dense(bg);
    auto large_batch = tandem::Batch<std::uint32_t>::dense(payloads);
    auto b = engine.submit(background, std::move(bg_batch));
    auto l = engine.submit(large, std::move(large_batch));
    both_submitted = true;
    BOOST_TEST(l.get().results[large_n - 1].output == large_n - 1);
    large_returned = true;
    BOOST_TEST(b.get().results[background_n - 1].output == background_n - 1);
    BOOST_TEST(!gave_up.load());  // the large batch completed while the background one still ran
    BOOST_TEST(last_seen.load() == 1u);  // the background batch's last chunk: the large one is gone
}

#if defined(__linux__)
#include <sched.h>

BOOST_AUTO_TEST_CASE(workers_run_at_the_configured_scheduling_priority) {
    for (auto [priority, policy] : {std::pair{tandem::WorkerPriority::Idle, SCHED_IDLE},
                                    std::pair{tandem::WorkerPriority::Low, SCHED_BATCH},
                                    std::pair{tandem::WorkerPriority::Normal, SCHED_OTHER}}) {
        tandem::EngineConfig c = small_config(2);
        c.worker_priority = priority;
        tandem::Engine engine{c};
        tandem::Op<int, int> policy_of_worker{"policy", [](const int&) { return sched_getscheduler(0); }};
        auto r = engine.submit(policy_of_worker, tandem::Batch<int>{{1, 0, 1}, {2, 0, 1}}).get();
        BOOST_TEST(r.results[0].output == policy);
        BOOST_TEST(r.results[1].output == policy);
    }
}
#endif
