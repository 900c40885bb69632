// An event-loop server that hands its heavy work to the engine and stays responsive.
//
//   clients --TCP, one request per line--> io thread: acceptor + one coroutine per connection
//                                              |
//        "ping" --> "pong", answered at once   | "hash <text>", "hashn <rounds> <text>"
//        "metrics" / GET /metrics --> text     v
//                                          Gatherer: every request that arrives within
//                                          --window-us goes into ONE Batch<HashJob>
//                                              | tandem::async_submit        ^
//                                              v                             | handler runs on
//                                          CPU workers: SHA-256 --results----+ the io thread;
//                                                                 each digest goes to its
//                                                                 connection's reply channel
//
// What it shows: gathering many small requests into one batch amortises the engine's per-batch
// cost, and since the loop only parses, gathers and writes, a cheap request (ping) never waits
// behind a hash, however many are queued. Two baselines that bench/server measures against:
// `--inline` hashes on the event loop itself, and `--pool` hands each request to a plain
// asio::thread_pool of the same size (what any thread pool gives; the engine's figure beside
// it is what the engine adds). (The loop still needs a CPU: on a small machine, leave it one
// with --workers, or run the workers at a lower priority with --priority low.)
//
// Protocol (lines end with \n; a trailing \r is ignored):
//   ping                   -> pong
//   hash <text>            -> SHA-256(text) in hex
//   hashn <rounds> <text>  -> SHA-256 applied <rounds> times (to text, then to the raw digest)
//   metrics                -> Prometheus text exposition (format 0.0.4), ended by an empty line
//   GET /metrics HTTP/1.1  -> the same over HTTP, as text/plain; version=0.0.4; charset=utf-8
//                             (then the connection closes)
//   quit                   -> closes the connection;  anything else -> "error <why>"
//
// Run: hash_server [[--port] N] [--inline | --pool] [--workers N] [--priority normal|low|idle]
//                  [--window-us N] [--max-batch N]
//   --workers: the engine's CPU workers, or the pool's threads (default: one per hardware thread)
//   --priority: the engine's EngineConfig::worker_priority (low: SCHED_BATCH at nice +10;
//               idle: SCHED_IDLE); with --pool, the same is applied to the pool's threads
// Listens on 127.0.0.1 only (port 0: the system picks one; the chosen port is printed on the
// first line of stdout). Stops on SIGINT or SIGTERM and exits 0.

#include <tandem/asio.hpp>
#include <tandem/tandem.hpp>

#include <asio.hpp>
#include <asio/experimental/channel.hpp>

#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <latch>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

using asio::ip::tcp;

namespace {

/// One hashing request: the text and how many times to apply SHA-256.
struct HashJob {
    std::string text;
    std::uint32_t rounds = 1;
};

using Digest = std::array<unsigned char, SHA256_DIGEST_LENGTH>;

/// SHA-256 of the text, then of each previous raw digest, `rounds` times in all.
Digest hash_job(const HashJob& job) {
    Digest d;
    SHA256(reinterpret_cast<const unsigned char*>(job.text.data()), job.text.size(), d.data());
    for (std::uint32_t i = 1; i < job.rounds; ++i) SHA256(d.data(), d.size(), d.data());
    return d;
}

std::string to_hex(const Digest& d) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s(2 * d.size(), '0');
    for (std::size_t i = 0; i < d.size(); ++i) {
        s[2 * i] = digits[d[i] >> 4];
        s[2 * i + 1] = digits[d[i] & 15];
    }
    return s;
}

/// A connection's mailbox for the digest of its one request in flight.
using ReplyChannel = asio::experimental::channel<void(std::error_code, Digest)>;

struct Options {
    unsigned short port = 0;
    bool inline_hashing = false;
    bool pool_hashing = false;  // --pool: an asio::thread_pool instead of the engine
    std::size_t workers = 0;
    tandem::WorkerPriority priority = tandem::WorkerPriority::Normal;
    std::chrono::microseconds window{200};
    std::size_t max_batch = 4096;
    std::size_t max_line = std::size_t{1} << 20;
};

/// Counters the server adds to the engine's in its metrics.
struct ServerCounters {
    std::uint64_t ping = 0, hash = 0, metrics = 0, errors = 0;
    std::uint64_t connections_open = 0, connections_total = 0;
    std::uint64_t batches = 0, batched_requests = 0;
};

/// Gathers the hash requests that arrive within one window into one batch. Lives on the io
/// thread: every member is touched only there.
class Gatherer {
public:
    Gatherer(asio::any_io_executor executor, tandem::Engine& engine, const Options& options, ServerCounters& counters)
        : executor_{executor},
          timer_{executor},
          engine_{engine},
          window_{options.window},
          max_batch_{options.max_batch},
          counters_{counters} {}

    /// Queues `job`; its digest, or the batch's error, is sent into `reply`.
    void add(HashJob job, std::shared_ptr<ReplyChannel> reply) {
        jobs_.push_back(std::move(job));
        replies_.push_back(std::move(reply));
        if (jobs_.size() >= max_batch_) {
            flush();
        } else if (jobs_.size() == 1) {
            // The first request of a window starts its clock.
            timer_.expires_after(window_);
            timer_.async_wait([this, generation = generation_](std::error_code) {
                if (generation == generation_) flush();  // else: flushed early, by size
            });
        }
    }

private:
    void flush() {
        ++generation_;
        if (jobs_.empty()) return;
        tandem::Batch<HashJob> batch;
        batch.reserve(jobs_.size());
        for (std::size_t i = 0; i < jobs_.size(); ++i) {
            const std::uint64_t cost = std::uint64_t{jobs_[i].rounds} * (1 + jobs_[i].text.size() / 64);
            batch.push({i, std::move(jobs_[i]), static_cast<std::uint32_t>(std::min<std::uint64_t>(cost, UINT32_MAX))});
        }
        jobs_.clear();
        ++counters_.batches;
        counters_.batched_requests += batch.size();
        // The handler runs on the io thread (bound below), so it may use the channels freely.
        tandem::async_submit(engine_, op_, std::move(batch),
                             asio::bind_executor(executor_, [replies = std::move(replies_)](
                                                                std::error_code ec, tandem::BatchResult<Digest> r) {
                                 for (std::size_t i = 0; i < replies.size(); ++i) {
                                     if (ec) {
                                         replies[i]->try_send(ec, Digest{});
                                     } else if (!r.results[i].ok()) {
                                         replies[i]->try_send(r.results[i].error->code, Digest{});
                                     } else {
                                         replies[i]->try_send(std::error_code{}, r.results[i].output);
                                     }
                                 }
                             }));
        replies_.clear();
    }

    asio::any_io_executor executor_;
    asio::steady_timer timer_;
    tandem::Engine& engine_;
    const tandem::Op<HashJob, Digest> op_{"sha256", [](const HashJob& job) { return hash_job(job); }};
    std::chrono::microseconds window_;
    std::size_t max_batch_;
    ServerCounters& counters_;
    std::vector<HashJob> jobs_;
    std::vector<std::shared_ptr<ReplyChannel>> replies_;
    std::uint64_t generation_ = 0;
};

class Server {
public:
    Server(asio::io_context& io, tandem::Engine& engine, asio::thread_pool* pool, const Options& options)
        : io_{io},
          pool_{pool},
          engine_{engine},
          options_{options},
          acceptor_{io, tcp::endpoint{asio::ip::make_address("127.0.0.1"), options.port}},
          gatherer_{io.get_executor(), engine, options, counters_} {}

    unsigned short port() const { return acceptor_.local_endpoint().port(); }

    asio::awaitable<void> accept_loop() {
        for (;;) {
            auto [ec, socket] = co_await acceptor_.async_accept(tandem::as_tuple(asio::use_awaitable));
            if (ec == asio::error::operation_aborted) co_return;  // closed at shutdown
            if (ec) continue;                                     // e.g. out of descriptors
            socket.set_option(tcp::no_delay{true});
            asio::co_spawn(io_, serve(std::move(socket)), asio::detached);
        }
    }

    /// Stops accepting and closes every connection. Coroutines then finish on their own
    /// (a batch in flight still completes and its write fails), and `io.run()` returns once
    /// nothing is left: no frame outlives the server.
    void stop() {
        std::error_code ignored;
        acceptor_.close(ignored);
        for (tcp::socket* socket : open_) socket->close(ignored);
    }

private:
    asio::awaitable<void> serve(tcp::socket socket) {
        ++counters_.connections_open;
        ++counters_.connections_total;
        open_.insert(&socket);
        struct Closed {
            Server& server;
            tcp::socket& socket;
            ~Closed() {
                --server.counters_.connections_open;
                server.open_.erase(&socket);
            }
        } closed{*this, socket};

        auto reply_channel = std::make_shared<ReplyChannel>(socket.get_executor(), 1);
        std::string input;
        for (;;) {
            auto [ec, n] = co_await asio::async_read_until(socket, asio::dynamic_buffer(input, options_.max_line), '\n',
                                                           tandem::as_tuple(asio::use_awaitable));
            if (ec == asio::error::not_found) {  // a line longer than --max-line
                ++counters_.errors;
                co_await write(socket, "error line too long\n");
                co_return;
            }
            if (ec) co_return;  // closed by the client, or reset
            std::string line = input.substr(0, n - 1);
            input.erase(0, n);
            if (!line.empty() && line.back() == '\r') line.pop_back();

            if (line.starts_with("GET ")) {
                co_await serve_http(socket, line, input);
                co_return;
            }
            std::string out;
            if (line == "ping") {
                ++counters_.ping;
                out = "pong\n";
            } else if (line.starts_with("hash ") || line.starts_with("hashn ")) {
                HashJob job;
                if (!parse_hash(line, job)) {
                    ++counters_.errors;
                    out = "error usage: hash <text> | hashn <rounds 1..1000000> <text>\n";
                } else {
                    ++counters_.hash;
                    out = co_await digest_of(std::move(job), reply_channel);
                }
            } else if (line == "metrics") {
                ++counters_.metrics;
                // The text format has no end marker ("# EOF" is OpenMetrics'): an empty line,
                // which the format allows and never contains otherwise, ends the reply.
                out = metrics_text() + "\n";
            } else if (line == "quit") {
                co_return;
            } else {
                ++counters_.errors;
                out = "error unknown command\n";
            }
            if (!co_await write(socket, out)) co_return;
        }
    }

    /// The reply line for one hash request: offloaded to the engine, hashed right here on the
    /// event loop (`--inline`), or posted to a plain thread pool (`--pool`).
    asio::awaitable<std::string> digest_of(HashJob job, const std::shared_ptr<ReplyChannel>& reply_channel) {
        if (options_.inline_hashing) co_return to_hex(hash_job(job)) + "\n";
        if (pool_ != nullptr) {
            asio::post(*pool_, [job = std::move(job), reply_channel, io = io_.get_executor()]() mutable {
                const Digest d = hash_job(job);
                asio::post(io, [reply_channel, d] { reply_channel->try_send(std::error_code{}, d); });
            });
        } else {
            gatherer_.add(std::move(job), reply_channel);
        }
        auto [ec, digest] = co_await reply_channel->async_receive(tandem::as_tuple(asio::use_awaitable));
        if (ec) co_return "error " + ec.message() + "\n";
        co_return to_hex(digest) + "\n";
    }

    static bool parse_hash(std::string_view line, HashJob& job) {
        if (line.starts_with("hash ")) {
            job.text = line.substr(5);
            return true;
        }
        line.remove_prefix(6);  // "hashn "
        const auto space = line.find(' ');
        const std::string count{line.substr(0, space)};
        char* end = nullptr;
        const unsigned long rounds = std::strtoul(count.c_str(), &end, 10);
        if (count.empty() || *end != '\0' || rounds < 1 || rounds > 1000000) return false;
        job.rounds = static_cast<std::uint32_t>(rounds);
        job.text = space == std::string_view::npos ? std::string{} : std::string{line.substr(space + 1)};
        return true;
    }

    /// Answers one HTTP/1.x request (only GET /metrics exists), then the connection closes.
    asio::awaitable<void> serve_http(tcp::socket& socket, const std::string& request_line, std::string& input) {
        // Skip the headers: up to the empty line.
        for (;;) {
            auto [ec, n] = co_await asio::async_read_until(socket, asio::dynamic_buffer(input, options_.max_line), '\n',
                                                           tandem::as_tuple(asio::use_awaitable));
            if (ec) co_return;
            const bool blank = n <= 2;  // "\n" or "\r\n"
            input.erase(0, n);
            if (blank) break;
        }
        const bool found = request_line.starts_with("GET /metrics ");
        const std::string body = found ? metrics_text() : std::string{"not found\n"};
        if (found) ++counters_.metrics;
        std::string response = found ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.1 404 Not Found\r\n";
        response +=
            found ? "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n" : "Content-Type: text/plain\r\n";
        response += "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
        co_await write(socket, response);
    }

    static asio::awaitable<bool> write(tcp::socket& socket, const std::string& out) {
        auto [ec, n] = co_await asio::async_write(socket, asio::buffer(out), tandem::as_tuple(asio::use_awaitable));
        (void)n;
        co_return !ec;
    }

    /// The engine's counters and the server's own, in the Prometheus text format.
    std::string metrics_text() const {
        std::string s = tandem::to_prometheus(engine_.metrics());
        auto add = [&s](const char* name, const char* type, const char* help, std::uint64_t value) {
            s += std::string{"# HELP hash_server_"} + name + ' ' + help + "\n# TYPE hash_server_" + name + ' ' + type +
                 "\nhash_server_" + name + ' ' + std::to_string(value) + '\n';
        };
        s += "# HELP hash_server_requests_total Requests answered, by command.\n"
             "# TYPE hash_server_requests_total counter\n";
        s += "hash_server_requests_total{command=\"ping\"} " + std::to_string(counters_.ping) + '\n';
        s += "hash_server_requests_total{command=\"hash\"} " + std::to_string(counters_.hash) + '\n';
        s += "hash_server_requests_total{command=\"metrics\"} " + std::to_string(counters_.metrics) + '\n';
        add("request_errors_total", "counter", "Malformed or unknown requests.", counters_.errors);
        add("connections", "gauge", "Open connections.", counters_.connections_open);
        add("connections_total", "counter", "Connections accepted.", counters_.connections_total);
        add("batches_total", "counter", "Batches the gatherer submitted.", counters_.batches);
        add("batched_requests_total", "counter", "Hash requests those batches carried.", counters_.batched_requests);
        return s;
    }

    asio::io_context& io_;
    asio::thread_pool* pool_;  // --pool
    tandem::Engine& engine_;
    const Options options_;
    ServerCounters counters_;
    tcp::acceptor acceptor_;
    Gatherer gatherer_;
    std::set<tcp::socket*> open_;  // for stop()
};

bool parse_options(int argc, char** argv, Options& o) {
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        auto value = [&]() -> unsigned long {
            if (i + 1 >= argc) throw std::invalid_argument{std::string{arg} + " needs a value"};
            return std::stoul(argv[++i]);
        };
        if (arg == "--port" || (!arg.empty() && arg.find_first_not_of("0123456789") == std::string_view::npos)) {
            const unsigned long port = arg == "--port" ? value() : std::stoul(std::string{arg});
            if (port > 65535) throw std::invalid_argument{"port: 0..65535"};
            o.port = static_cast<unsigned short>(port);
        } else if (arg == "--inline") {
            o.inline_hashing = true;
        } else if (arg == "--pool") {
            o.pool_hashing = true;
        } else if (arg == "--priority") {
            if (i + 1 >= argc) throw std::invalid_argument{"--priority needs a value"};
            const std::string_view p = argv[++i];
            if (p == "normal") {
                o.priority = tandem::WorkerPriority::Normal;
            } else if (p == "low") {
                o.priority = tandem::WorkerPriority::Low;
            } else if (p == "idle") {
                o.priority = tandem::WorkerPriority::Idle;
            } else {
                throw std::invalid_argument{"--priority: normal, low or idle"};
            }
        } else if (arg == "--workers") {
            o.workers = value();
        } else if (arg == "--window-us") {
            o.window = std::chrono::microseconds{value()};
        } else if (arg == "--max-batch") {
            o.max_batch = std::max<std::size_t>(value(), 1);
        } else {
            return false;
        }
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    Options options;
    try {
        if (!parse_options(argc, argv, options)) {
            std::fprintf(stderr,
                         "usage: %s [[--port] N] [--inline | --pool] [--workers N] [--priority normal|low|idle] "
                         "[--window-us N] [--max-batch N]\n",
                         argv[0]);
            return 2;
        }
        if (options.inline_hashing && options.pool_hashing) {
            std::fprintf(stderr, "hash_server: --inline and --pool exclude each other\n");
            return 2;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "hash_server: %s\n", e.what());
        return 2;
    }

    try {
        // Declared in this order so the engine goes first: its shutdown completes every batch
        // still in flight, and those completions are posted to the io_context, still alive.
        asio::io_context io;
        tandem::EngineConfig config;
        config.cpu_workers = options.workers;
        config.worker_priority = options.priority;
        tandem::Engine engine{config};
        // --pool: the plain thread pool baseline, as many threads as the engine has workers,
        // at the same priority. Declared after the io_context and joined before it goes.
        std::unique_ptr<asio::thread_pool> pool;
        if (options.pool_hashing) {
            pool = std::make_unique<asio::thread_pool>(engine.cpu_workers());
            // One task per thread: each waits until all have started, so every thread takes one.
            std::latch started{static_cast<std::ptrdiff_t>(engine.cpu_workers())};
            for (std::size_t i = 0; i < engine.cpu_workers(); ++i) {
                asio::post(*pool, [&started, p = options.priority] {
                    tandem::set_thread_priority(p);
                    started.arrive_and_wait();
                });
            }
            started.wait();
        }
        Server server{io, engine, pool.get(), options};

        asio::signal_set signals{io, SIGINT, SIGTERM};
        signals.async_wait([&](std::error_code ec, int) {
            if (!ec) server.stop();
        });
        asio::co_spawn(io, server.accept_loop(), asio::detached);

        const char* priority = options.priority == tandem::WorkerPriority::Low    ? "low"
                               : options.priority == tandem::WorkerPriority::Idle ? "idle"
                                                                                  : "normal";
        std::printf("hash_server: listening on 127.0.0.1:%u (%s, %zu workers at %s priority, window %lld us)\n",
                    server.port(),
                    options.inline_hashing ? "inline hashing on the event loop"
                    : options.pool_hashing ? "hashing posted to an asio::thread_pool"
                                           : "hashing offloaded to the engine",
                    engine.cpu_workers(), priority, static_cast<long long>(options.window.count()));
        std::fflush(stdout);
        io.run();
        if (pool) pool->join();
        std::printf("hash_server: stopped\n");
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "hash_server: %s\n", e.what());
        return 1;
    }
}
