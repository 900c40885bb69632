// An asynchronous pipeline: read -> transform -> reduce -> write, with bounded queues between the
// stages, backpressure, and several batches in flight on the engine at once.
//
//   read --[ch: 2 blocks]--> transform --[ch: 2 results]--> reduce --[ch: 2 lines]--> write
//   (lines -> blocks)          |  submits each block as a batch      (running totals)    (output)
//                             |  keeps up to --in-flight batches
//                             |  in flight (use_promise), hands
//                             v  results on in block order
//                          engine: CPU workers
//
// Every channel holds at most 2 items, so a slow stage stalls the one before it: when write
// lags, reduce waits to send, transform stops collecting (and so stops submitting), and read
// stops reading. Memory stays bounded however large the input is. All four stages are
// coroutines on one io_context thread; only the batches run elsewhere.
//
// Run: pipeline [--lines N] [--block B] [--in-flight K] [--input FILE] [--output FILE]
// With no --input, N lines are generated. Exits 0 when the totals match a sequential pass
// over the same input, blocks reached the writer in order, and no more than K batches were
// in flight.

#include <tandem/asio.hpp>
#include <tandem/tandem.hpp>

#include <asio.hpp>
#include <asio/experimental/channel.hpp>
#include <asio/experimental/promise.hpp>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

namespace {

/// What transform computes per line.
struct LineStats {
    std::uint32_t words = 0;
    std::uint32_t bytes = 0;
    std::uint64_t hash = 0;  // FNV-1a of the line, iterated: a little real CPU work
};

LineStats line_stats(const std::string& line) {
    LineStats s;
    s.bytes = static_cast<std::uint32_t>(line.size());
    bool in_word = false;
    for (char c : line) {
        const bool space = c == ' ' || c == '\t';
        if (!space && !in_word) ++s.words;
        in_word = !space;
    }
    std::uint64_t h = 1469598103934665603ull;
    for (int round = 0; round < 16; ++round) {
        for (unsigned char c : line) h = (h ^ c) * 1099511628211ull;
    }
    s.hash = h;
    return s;
}

/// Totals over the whole input (the reduce stage's state; also the sequential check).
struct Totals {
    std::uint64_t lines = 0, words = 0, bytes = 0, hash_xor = 0;
    void add(const LineStats& s) {
        ++lines;
        words += s.words;
        bytes += s.bytes;
        hash_xor ^= s.hash;
    }
    bool operator==(const Totals&) const = default;
};

struct Block {
    std::uint64_t index = 0;
    std::vector<std::string> lines;
};
struct BlockResult {
    std::uint64_t index = 0;
    tandem::BatchResult<LineStats> result;
};

// One payload type per channel; an empty optional marks the end of the stream.
template <class T>
using Channel = asio::experimental::channel<void(std::error_code, std::optional<T>)>;

struct Options {
    std::uint64_t lines = 200000;
    std::size_t block = 5000;
    std::size_t in_flight = 4;
    std::string input, output;
};

/// Lines of pseudo-random words, the same for the same count.
std::string generate_input(std::uint64_t lines) {
    std::string text;
    std::uint64_t x = 88172645463325252ull;
    auto next = [&x] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
    };
    for (std::uint64_t i = 0; i < lines; ++i) {
        const unsigned words = 1 + static_cast<unsigned>(next() % 12);
        for (unsigned w = 0; w < words; ++w) {
            if (w) text += ' ';
            const unsigned len = 1 + static_cast<unsigned>(next() % 9);
            for (unsigned k = 0; k < len; ++k) text += static_cast<char>('a' + next() % 26);
        }
        text += '\n';
    }
    return text;
}

/// Observations for the report (all touched on the io thread only).
struct Observed {
    std::size_t max_in_flight = 0;
    std::uint64_t reader_waits = 0;  // sends that found the first queue full
    std::uint64_t out_of_order = 0;
    std::uint64_t blocks_written = 0;
    Totals totals;
};

asio::awaitable<void> read_stage(std::istream& in, std::size_t block_size, Channel<Block>& out, Observed& seen) {
    Block block;
    std::string line;
    auto send = [&](std::optional<Block> b) -> asio::awaitable<void> {
        // try_send first only to count how often backpressure stopped the reader.
        if (!out.try_send(std::error_code{}, std::move(b))) {
            ++seen.reader_waits;
            co_await out.async_send(std::error_code{}, std::move(b), asio::use_awaitable);
        }
    };
    while (std::getline(in, line)) {
        block.lines.push_back(std::move(line));
        if (block.lines.size() == block_size) {
            const std::uint64_t next = block.index + 1;
            co_await send(std::exchange(block, Block{next, {}}));
        }
    }
    if (!block.lines.empty()) co_await send(std::move(block));
    co_await send(std::nullopt);
}

asio::awaitable<void> transform_stage(tandem::Engine& engine, std::size_t max_in_flight, Channel<Block>& in,
                                      Channel<BlockResult>& out, Observed& seen) {
    const tandem::Op<std::string, LineStats> op{"line_stats", [](const std::string& l) { return line_stats(l); }};
    auto ex = co_await asio::this_coro::executor;
    using Promise =
        decltype(tandem::async_submit(ex, engine, op, tandem::Batch<std::string>{}, asio::experimental::use_promise));
    std::deque<std::pair<std::uint64_t, Promise>> in_flight;  // oldest first

    // Waits for the oldest batch and passes its result on (this wait is where backpressure
    // from reduce reaches the engine: no new batch starts while we are stuck sending).
    auto pass_oldest = [&]() -> asio::awaitable<void> {
        const std::uint64_t index = in_flight.front().first;
        Promise promise = std::move(in_flight.front().second);
        in_flight.pop_front();
        std::tuple<std::error_code, tandem::BatchResult<LineStats>> done =
            co_await promise.async_wait(tandem::as_tuple(asio::use_awaitable));
        if (std::get<0>(done)) throw std::system_error{std::get<0>(done), "batch of block " + std::to_string(index)};
        // A named local, not `BlockResult{...}` inside the co_await expression: GCC 12 frees a
        // brace-initialised aggregate temporary of a co_await expression from the wrong
        // address (caught by AddressSanitizer as a bad free).
        std::optional<BlockResult> item{BlockResult{index, std::move(std::get<1>(done))}};
        co_await out.async_send(std::error_code{}, std::move(item), asio::use_awaitable);
    };

    for (;;) {
        std::optional<Block> block = co_await in.async_receive(asio::use_awaitable);
        if (!block) break;
        tandem::Batch<std::string> batch;
        batch.reserve(block->lines.size());
        for (std::size_t i = 0; i < block->lines.size(); ++i) {
            const auto cost = static_cast<std::uint32_t>(1 + block->lines[i].size() / 16);
            batch.push({i, std::move(block->lines[i]), cost});
        }
        // use_promise starts the batch now; we await it later, in order.
        in_flight.emplace_back(block->index,
                               tandem::async_submit(ex, engine, op, std::move(batch), asio::experimental::use_promise));
        seen.max_in_flight = std::max(seen.max_in_flight, in_flight.size());
        if (in_flight.size() == max_in_flight) co_await pass_oldest();
    }
    while (!in_flight.empty()) co_await pass_oldest();
    co_await out.async_send(std::error_code{}, std::nullopt, asio::use_awaitable);
}

asio::awaitable<void> reduce_stage(Channel<BlockResult>& in, Channel<std::string>& out, Observed& seen) {
    std::uint64_t expected_index = 0;
    for (;;) {
        std::optional<BlockResult> r = co_await in.async_receive(asio::use_awaitable);
        if (!r) break;
        if (r->index != expected_index++) ++seen.out_of_order;
        Totals block;
        for (const LineStats& s : r->result.results.outputs()) {
            block.add(s);
            seen.totals.add(s);
        }
        char line[160];
        std::snprintf(line, sizeof line,
                      "block %4" PRIu64 ": %6" PRIu64 " lines %8" PRIu64 " words  hash %016" PRIx64 "  (%s)\n",
                      r->index, block.lines, block.words, block.hash_xor, tandem::to_string(r->result.stats.device));
        co_await out.async_send(std::error_code{}, std::string{line}, asio::use_awaitable);
    }
    co_await out.async_send(std::error_code{}, std::nullopt, asio::use_awaitable);
}

asio::awaitable<void> write_stage(std::ostream& out, Channel<std::string>& in, Observed& seen) {
    for (;;) {
        std::optional<std::string> line = co_await in.async_receive(asio::use_awaitable);
        if (!line) break;
        out << *line;
        ++seen.blocks_written;
    }
    out.flush();
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string_view a = argv[i];
        if (a == "--lines")
            o.lines = std::strtoull(argv[i + 1], nullptr, 10);
        else if (a == "--block")
            o.block = std::max<std::size_t>(1, std::strtoull(argv[i + 1], nullptr, 10));
        else if (a == "--in-flight")
            o.in_flight = std::max<std::size_t>(1, std::strtoull(argv[i + 1], nullptr, 10));
        else if (a == "--input")
            o.input = argv[i + 1];
        else if (a == "--output")
            o.output = argv[i + 1];
        else {
            std::fprintf(stderr, "usage: %s [--lines N] [--block B] [--in-flight K] [--input FILE] [--output FILE]\n",
                         argv[0]);
            return 2;
        }
    }

    // The input twice: once streamed through the pipeline, once for the sequential check.
    std::string generated = o.input.empty() ? generate_input(o.lines) : std::string{};
    std::unique_ptr<std::istream> in;
    if (o.input.empty()) {
        in = std::make_unique<std::istringstream>(generated);
    } else {
        in = std::make_unique<std::ifstream>(o.input);
        if (!*in) {
            std::fprintf(stderr, "cannot read %s\n", o.input.c_str());
            return 2;
        }
    }
    std::ofstream file_out;
    if (!o.output.empty()) file_out.open(o.output);
    std::ostream& out = o.output.empty() ? std::cout : file_out;

    Observed seen;
    {
        asio::io_context io;
        tandem::Engine engine{tandem::EngineConfig{.cpu_workers = 2}};
        Channel<Block> blocks{io, 2};
        Channel<BlockResult> results{io, 2};
        Channel<std::string> lines{io, 2};
        bool failed = false;
        auto on_exit = [&](const char* stage) {
            return [&failed, stage](std::exception_ptr e) {
                if (!e) return;
                failed = true;
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& ex) {
                    std::fprintf(stderr, "%s stage: %s\n", stage, ex.what());
                }
            };
        };
        asio::co_spawn(io, read_stage(*in, o.block, blocks, seen), on_exit("read"));
        asio::co_spawn(io, transform_stage(engine, o.in_flight, blocks, results, seen), on_exit("transform"));
        asio::co_spawn(io, reduce_stage(results, lines, seen), on_exit("reduce"));
        asio::co_spawn(io, write_stage(out, lines, seen), on_exit("write"));
        io.run();
        if (failed) return 1;
    }

    // The same totals, computed in one sequential pass.
    Totals expected;
    {
        std::unique_ptr<std::istream> again;
        if (o.input.empty())
            again = std::make_unique<std::istringstream>(generated);
        else
            again = std::make_unique<std::ifstream>(o.input);
        std::string line;
        while (std::getline(*again, line)) expected.add(line_stats(line));
    }

    std::printf("%" PRIu64 " lines, %" PRIu64 " words, %" PRIu64 " bytes, hash %016" PRIx64 "\n", seen.totals.lines,
                seen.totals.words, seen.totals.bytes, seen.totals.hash_xor);
    std::printf("at most %zu batches in flight (limit %zu); the reader waited for room %" PRIu64 " times\n",
                seen.max_in_flight, o.in_flight, seen.reader_waits);
    int failures = 0;
    auto check = [&](bool ok, const char* what) {
        std::printf("%-56s %s\n", what, ok ? "ok" : "FAILED");
        if (!ok) ++failures;
    };
    check(seen.totals == expected, "totals match a sequential pass");
    check(seen.out_of_order == 0, "blocks reached reduce in order");
    const std::uint64_t blocks = (expected.lines + o.block - 1) / o.block;
    check(seen.blocks_written == blocks, "every block was written");
    check(seen.max_in_flight <= o.in_flight, "batches in flight stayed within the limit");
    std::printf("%s\n", failures == 0 ? "all checks passed" : "some checks FAILED");
    return failures == 0 ? 0 : 1;
}
