#pragma once
// Helpers shared by the engine's test files (Boost.Test must be included first).

#include <tandem/error.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <exception>
#include <future>
#include <thread>

namespace tandem::testing {

/// Blocks the op's tasks until released: lets a test hold work "running".
struct Gate {
    std::atomic<bool> open{false};
    std::atomic<int> entered{0};
    void wait() {
        entered.fetch_add(1);
        while (!open.load()) std::this_thread::sleep_for(std::chrono::microseconds{100});
    }
};

/// Waits for `f` without running any of its chunks here: a thread blocked in `get()` or
/// `wait()` claims the chunks of a small batch no worker has taken yet and runs them itself,
/// which a test of what the workers do (their order, their thread) must leave out.
template <class Future>
void wait_without_helping(const Future& f) {
    while (f.wait_for(std::chrono::hours{1}) != std::future_status::ready) {}
}

/// A minimal eager coroutine type with no Asio: starts at once, runs to its end on whichever
/// thread resumes it.
struct Spawned {
    struct promise_type {
        Spawned get_return_object() { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() {}
        void unhandled_exception() { std::terminate(); }
    };
};

/// Checks that `f()` throws `tandem::Error` with `expected`.
template <class F>
void expect_error(F&& f, ExecError expected) {
    try {
        f();
        BOOST_FAIL("expected tandem::Error " << make_error_code(expected).message());
    } catch (const Error& e) {
        BOOST_TEST(e.code() == make_error_code(expected), "got " << e.code().message());
    }
}

}  // namespace tandem::testing
