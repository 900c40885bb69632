#pragma once
// Helpers shared by the engine's test files (Boost.Test must be included first).

#include <tandem/error.hpp>

#include <atomic>
#include <chrono>
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
