// The Asio quick start of issue #4, verbatim: 100 rounds of a 1000-task batch awaited from an
// asio::awaitable coroutine. Plain asserts; exits 0 when every result checks out.
#include <tandem/tandem.hpp>
#include <tandem/asio.hpp>
#include <asio.hpp>
#include <cassert>
int main() {
    asio::io_context io;
    tandem::Engine engine{tandem::EngineConfig{.cpu_workers = 2}};
    tandem::Op<int, int> square{"square", [](const int& x) { return x * x; }};
    int checked = 0;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
        for (int round = 0; round < 100; ++round) {
            tandem::Batch<int> batch;
            for (int i = 0; i < 1000; ++i) batch.push({static_cast<std::uint64_t>(i), i, 1});
            tandem::BatchResult<int> r = co_await tandem::async_submit(engine, square, std::move(batch), asio::use_awaitable);
            for (int i = 0; i < 1000; ++i) { assert(r.results[i].output == i * i); ++checked; }
        }
    }, asio::detached);
    io.run();
    assert(checked == 100000);
}
