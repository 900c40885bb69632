// The same batches from asio::awaitable coroutines, through tandem::async_submit.
//
//   io thread (io.run)                          engine threads
//   ------------------                          --------------
//   report() --co_await async_submit----------> square batch runs
//      ^  (suspended; the loop serves others)        |
//      +---- resumed ON THE IO THREAD <-- posted ----+
//      |
//      +- co_await (a && b) --> two batches at once, both awaited
//      +- co_await (batch || timer) --> the timer wins: the batch is cancelled,
//      |                                its unstarted chunks never run
//      +- co_await ... as_tuple(use_awaitable) --> errors as values, no exception
//
// What it shows: with <tandem/asio.hpp>, a coroutine resumes on its own executor (here the
// io_context's thread), so it may touch the loop's state with no locks; Asio's awaitable
// operators and cancellation work on batches like on any other asynchronous operation.
//
// Run: coroutines_asio [tasks]   (default 200000). Exits 0 when every check passes.

#include <tandem/asio.hpp>
#include <tandem/tandem.hpp>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <tuple>

using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

namespace {

tandem::Batch<std::uint64_t> iota(std::uint64_t n, std::uint64_t first = 0) {
    tandem::Batch<std::uint64_t> batch;
    batch.reserve(n);
    for (std::uint64_t i = first; i < first + n; ++i) batch.push({i, i, 1});
    return batch;
}

std::uint64_t sum(const tandem::BatchResult<std::uint64_t>& r) {
    std::uint64_t s = 0;
    for (std::uint64_t v : r.results.outputs()) s += v;
    return s;
}

std::uint64_t expected_sum_of_squares(std::uint64_t first, std::uint64_t n) {
    std::uint64_t s = 0;
    for (std::uint64_t i = first; i < first + n; ++i) s += i * i;
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    const std::uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200000;
    asio::io_context io;
    tandem::Engine engine{tandem::EngineConfig{.cpu_workers = 2}};
    const tandem::Op<std::uint64_t, std::uint64_t> square{"square", [](const std::uint64_t& x) { return x * x; }};
    // A deliberately slow op, so that a timer can beat it.
    std::atomic<std::uint64_t> slow_ran{0};
    const tandem::Op<std::uint64_t, std::uint64_t> slow{"slow", [&slow_ran](const std::uint64_t& x) {
                                                            std::this_thread::sleep_for(1ms);
                                                            slow_ran.fetch_add(1, std::memory_order_relaxed);
                                                            return x;
                                                        }};

    int failures = 0;
    auto check = [&](bool ok, const char* what) {
        std::printf("%-56s %s\n", what, ok ? "ok" : "FAILED");
        if (!ok) ++failures;
    };
    const auto io_thread = std::this_thread::get_id();  // io.run() below runs on this thread

    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            // 1. One batch. The coroutine resumes on the io thread, not an engine thread.
            auto r = co_await tandem::async_submit(engine, square, iota(n), asio::use_awaitable);
            check(sum(r) == expected_sum_of_squares(0, n), "one batch: sum of squares");
            check(std::this_thread::get_id() == io_thread, "resumed on the io thread");

            // 2. Two batches in flight at once; && waits for both.
            auto [a, b] = co_await (tandem::async_submit(engine, square, iota(n / 2), asio::use_awaitable) &&
                                    tandem::async_submit(engine, square, iota(n / 2, n / 2), asio::use_awaitable));
            check(sum(a) + sum(b) == expected_sum_of_squares(0, n / 2 * 2), "two batches at once with &&");

            // 3. A deadline: || cancels whichever side loses. 2000 tasks of 1 ms on 2 workers
            //    need about a second; the timer fires after 20 ms and the batch is cancelled.
            asio::steady_timer deadline{io, 20ms};
            auto winner = co_await (tandem::async_submit(engine, slow, iota(2000), asio::use_awaitable) ||
                                    deadline.async_wait(asio::use_awaitable));
            check(winner.index() == 1, "the deadline won the race");
            check(slow_ran.load() < 2000, "the cancelled batch's unstarted tasks never ran");
            std::printf("  (%llu of 2000 slow tasks ran before the cancel)\n",
                        static_cast<unsigned long long>(slow_ran.load()));

            // 4. Errors as values instead of exceptions.
            auto [ec, nothing] = co_await tandem::async_submit(engine, square, tandem::Batch<std::uint64_t>{},
                                                               tandem::as_tuple(asio::use_awaitable));
            check(ec == tandem::ExecError::EmptyBatch && nothing.results.empty(),
                  "as_tuple: an empty batch is EmptyBatch");
        },
        [&](std::exception_ptr e) {
            if (e) {
                std::printf("coroutine threw\n");
                ++failures;
            }
        });

    io.run();  // returns once the coroutine and every batch it started are done
    std::printf("%s\n", failures == 0 ? "all checks passed" : "some checks FAILED");
    return failures == 0 ? 0 : 1;
}
