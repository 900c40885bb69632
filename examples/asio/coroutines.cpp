// Plain C++20 coroutines awaiting batches -- no Asio, no library: a 40-line Task<T> is enough.
//
//   main --sync_wait--> report()
//                         | co_await
//                         v
//                     sum_of_squares() --co_await engine.submit(square, batch)--> CPU workers
//                         ^                                                          |
//                         +---- resumed ON THE ENGINE THREAD that completed it <-----+
//                         | co_await (a second, dependent batch)
//                         v
//                     digit_sums() --co_await engine.submit(...)--> ... --> result to main
//
// What it shows: `co_await engine.submit(op, batch)` suspends any coroutine until its batch
// completes. The coroutine then runs on whichever engine thread finished the batch (or goes
// straight on, if the batch was already done) -- fine for computing, but hop back to your own
// thread (or use <tandem/asio.hpp>) before touching state that thread does not own. A batch
// error is thrown as tandem::Error at the co_await.
//
// Run: coroutines [tasks]   (default 200000). Exits 0 when every result checks out.

#include <tandem/tandem.hpp>

#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <semaphore>
#include <string>
#include <thread>
#include <utility>

namespace {

/// A lazy coroutine producing a T: starts when awaited, resumes its awaiter when done.
template <class T>
class Task {
public:
    struct promise_type {
        std::optional<T> value;
        std::exception_ptr error;
        std::coroutine_handle<> awaiter;

        Task get_return_object() { return Task{std::coroutine_handle<promise_type>::from_promise(*this)}; }
        std::suspend_always initial_suspend() noexcept { return {}; }
        auto final_suspend() noexcept {
            struct Resume {
                bool await_ready() noexcept { return false; }
                // Symmetric transfer: resume the awaiter without growing the stack.
                std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> self) noexcept {
                    return self.promise().awaiter;
                }
                void await_resume() noexcept {}
            };
            return Resume{};
        }
        void return_value(T v) { value.emplace(std::move(v)); }
        void unhandled_exception() { error = std::current_exception(); }
    };

    Task(Task&& other) noexcept : handle_{std::exchange(other.handle_, {})} {}
    Task(const Task&) = delete;
    ~Task() {
        if (handle_) handle_.destroy();
    }

    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
        handle_.promise().awaiter = awaiter;
        return handle_;  // start the task
    }
    T await_resume() {
        if (handle_.promise().error) std::rethrow_exception(handle_.promise().error);
        return std::move(*handle_.promise().value);
    }

private:
    explicit Task(std::coroutine_handle<promise_type> h) : handle_{h} {}
    std::coroutine_handle<promise_type> handle_;
};

/// A coroutine nobody awaits: runs at once and frees itself at the end.
struct Detached {
    struct promise_type {
        Detached get_return_object() noexcept { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
};

/// Blocks the calling thread until `task` finishes; returns its value or rethrows.
template <class T>
T sync_wait(Task<T> task) {
    struct State {
        std::binary_semaphore done{0};
        std::optional<T> value;
        std::exception_ptr error;
    };
    auto state = std::make_shared<State>();
    // The driver's frame holds `s` until after `release` returns, so the semaphore outlives
    // the call even when this thread wakes and returns first.
    [](Task<T> t, std::shared_ptr<State> s) -> Detached {
        try {
            s->value.emplace(co_await std::move(t));
        } catch (...) {
            s->error = std::current_exception();
        }
        s->done.release();
    }(std::move(task), state);
    state->done.acquire();
    if (state->error) std::rethrow_exception(state->error);
    return std::move(*state->value);
}

tandem::Batch<std::uint64_t> iota(std::uint64_t n) {
    tandem::Batch<std::uint64_t> batch;
    batch.reserve(n);
    for (std::uint64_t i = 0; i < n; ++i) batch.push({i, i, 1});
    return batch;
}

const tandem::Op<std::uint64_t, std::uint64_t> square{"square", [](const std::uint64_t& x) { return x * x; }};
const tandem::Op<std::uint64_t, std::uint64_t> digit_sum{"digit_sum", [](const std::uint64_t& x) {
                                                             std::uint64_t sum = 0;
                                                             for (std::uint64_t v = x; v != 0; v /= 10) sum += v % 10;
                                                             return sum;
                                                         }};

/// One batch: the sum of i^2 for i < n. Also notes which thread it resumed on.
Task<std::uint64_t> sum_of_squares(tandem::Engine& engine, std::uint64_t n, std::thread::id& resumed_on) {
    tandem::BatchResult<std::uint64_t> r = co_await engine.submit(square, iota(n));
    resumed_on = std::this_thread::get_id();  // the engine thread that completed the batch
    std::uint64_t sum = 0;
    for (std::uint64_t v : r.results.outputs()) sum += v;
    co_return sum;
}

/// Two dependent batches: square every i, then sum the decimal digits of every square.
Task<std::uint64_t> digit_sums_of_squares(tandem::Engine& engine, std::uint64_t n) {
    tandem::BatchResult<std::uint64_t> squares = co_await engine.submit(square, iota(n));
    tandem::Batch<std::uint64_t> next;
    next.reserve(n);
    for (std::size_t i = 0; i < squares.results.size(); ++i)
        next.push({squares.results[i].id, squares.results[i].output, 1});
    tandem::BatchResult<std::uint64_t> digits = co_await engine.submit(digit_sum, std::move(next));
    std::uint64_t sum = 0;
    for (std::uint64_t v : digits.results.outputs()) sum += v;
    co_return sum;
}

/// A batch error arrives as an exception at the co_await.
Task<std::string> error_of_an_empty_batch(tandem::Engine& engine) {
    try {
        co_await engine.submit(square, tandem::Batch<std::uint64_t>{});
    } catch (const tandem::Error& e) {
        co_return e.code() == tandem::ExecError::EmptyBatch ? std::string{"EmptyBatch"} : e.code().message();
    }
    co_return "no error";
}

}  // namespace

int main(int argc, char** argv) {
    const std::uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200000;
    tandem::Engine engine{tandem::EngineConfig{.cpu_workers = 2}};
    int failures = 0;
    auto check = [&](bool ok, const char* what) {
        std::printf("%-52s %s\n", what, ok ? "ok" : "FAILED");
        if (!ok) ++failures;
    };

    std::thread::id resumed_on;
    const std::uint64_t sum = sync_wait(sum_of_squares(engine, n, resumed_on));
    std::uint64_t expected = 0;
    for (std::uint64_t i = 0; i < n; ++i) expected += i * i;
    std::printf("sum of i^2 for i < %llu = %llu\n", static_cast<unsigned long long>(n),
                static_cast<unsigned long long>(sum));
    check(sum == expected, "one batch: sum of squares");
    // Usually an engine thread; the calling thread when the batch had already completed by the
    // time the coroutine looked (then co_await does not suspend at all).
    std::printf("the coroutine went on after co_await on %s\n",
                resumed_on == std::this_thread::get_id() ? "main (the batch was already done)" : "an engine thread");

    const std::uint64_t digits = sync_wait(digit_sums_of_squares(engine, n));
    std::uint64_t expected_digits = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
        for (std::uint64_t v = i * i; v != 0; v /= 10) expected_digits += v % 10;
    }
    check(digits == expected_digits, "two dependent batches: digit sums of squares");

    check(sync_wait(error_of_an_empty_batch(engine)) == "EmptyBatch", "an empty batch throws EmptyBatch at co_await");

    std::printf("%s\n", failures == 0 ? "all checks passed" : "some checks FAILED");
    return failures == 0 ? 0 : 1;
}
