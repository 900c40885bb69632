// Loopback load test of examples/asio/hash_server: starts the server (port 0, 127.0.0.1 only),
// opens many connections at once, sends each a bounded number of hash requests, checks every
// reply against SHA-256 computed here, checks the metrics over the line protocol and over
// HTTP, then stops the server with SIGTERM and requires it to exit with status 0.
//
//   this process                                   hash_server (child)
//   ------------                                   -------------------
//   spawn -------------------------------------->  "listening on 127.0.0.1:PORT"
//   N client coroutines --hash/hashn/ping lines--> gatherer -> engine
//      each reply == local SHA-256 ? <-------------+
//   "metrics" + GET /metrics ---------------------> Prometheus text
//   SIGTERM --------------------------------------> exits 0
//
// Bounded: N x M requests, and --max-seconds for the whole run (the server is killed and the
// test fails past it).
//
// Usage: asio_server_load <hash_server> [--connections N] [--requests M] [--max-seconds S]
//                         [-- extra server arguments]

#include <asio.hpp>

#include <openssl/sha.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#if ASIO_VERSION >= 102800
#include <asio/as_tuple.hpp>
namespace as_tuple_ns = asio;
#else
#include <asio/experimental/as_tuple.hpp>
namespace as_tuple_ns = asio::experimental;
#endif

extern char** environ;

using asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

constexpr auto use_tuple = as_tuple_ns::as_tuple(asio::use_awaitable);

std::string hex_sha256(std::string_view text, unsigned rounds) {
    std::array<unsigned char, SHA256_DIGEST_LENGTH> d;
    SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), d.data());
    for (unsigned i = 1; i < rounds; ++i) SHA256(d.data(), d.size(), d.data());
    static constexpr char digits[] = "0123456789abcdef";
    std::string s;
    for (unsigned char c : d) {
        s += digits[c >> 4];
        s += digits[c & 15];
    }
    return s;
}

/// The server as a child process, its stdout on a pipe.
class ServerProcess {
public:
    explicit ServerProcess(std::vector<std::string> argv) {
        int fds[2];
        if (pipe(fds) != 0) throw std::runtime_error{"pipe failed"};
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
        posix_spawn_file_actions_addclose(&actions, fds[0]);
        posix_spawn_file_actions_addclose(&actions, fds[1]);
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        const int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        close(fds[1]);
        if (rc != 0) {
            close(fds[0]);
            throw std::runtime_error{std::string{"cannot start "} + argv[0] + ": " + std::strerror(rc)};
        }
        out_ = fdopen(fds[0], "r");
    }
    ServerProcess(const ServerProcess&) = delete;
    ~ServerProcess() {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
        if (out_) fclose(out_);
    }

    /// Reads the server's first line and returns the port in "127.0.0.1:PORT" (0 if absent).
    unsigned short read_port() {
        char line[512];
        if (!std::fgets(line, sizeof line, out_)) return 0;
        std::printf("server: %s", line);
        const char* at = std::strstr(line, "127.0.0.1:");
        return at ? static_cast<unsigned short>(std::atoi(at + 10)) : 0;
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; true when it exited with status 0.
    bool terminate(std::chrono::seconds limit) {
        kill(pid_, SIGTERM);
        const auto give_up = std::chrono::steady_clock::now() + limit;
        int status = 0;
        while (std::chrono::steady_clock::now() < give_up) {
            const pid_t r = waitpid(pid_, &status, WNOHANG);
            if (r == pid_) {
                pid_ = -1;
                return WIFEXITED(status) && WEXITSTATUS(status) == 0;
            }
            std::this_thread::sleep_for(10ms);
        }
        return false;  // the destructor kills it
    }

private:
    pid_t pid_ = -1;
    FILE* out_ = nullptr;
};

struct Totals {
    std::uint64_t sent = 0, ok = 0, wrong = 0, hash_requests = 0;
    int clients_done = 0, clients_failed = 0;
};

/// One client: `requests` requests on one connection, each reply checked.
asio::awaitable<void> client(tcp::endpoint server, int index, int requests, Totals& totals) {
    std::mt19937_64 rng{static_cast<std::uint64_t>(index) * 7919 + 1};
    tcp::socket socket{co_await asio::this_coro::executor};
    auto [cec] = co_await socket.async_connect(server, use_tuple);
    if (cec) {
        std::printf("client %d: connect: %s\n", index, cec.message().c_str());
        ++totals.clients_failed;
        co_return;
    }
    std::string input;
    for (int r = 0; r < requests; ++r) {
        // Mostly single hashes of random printable text (empty included), some repeated
        // hashes, some pings.
        const unsigned kind = static_cast<unsigned>(rng() % 10);
        std::string request, expected;
        if (kind == 0) {
            request = "ping\n";
            expected = "pong";
        } else {
            std::string text(rng() % 600, ' ');
            for (char& c : text) c = static_cast<char>(' ' + rng() % 95);
            if (kind == 1) {
                const unsigned rounds = 1 + static_cast<unsigned>(rng() % 50);
                request = "hashn " + std::to_string(rounds) + ' ' + text + '\n';
                expected = hex_sha256(text, rounds);
            } else {
                request = "hash " + text + '\n';
                expected = hex_sha256(text, 1);
            }
            ++totals.hash_requests;
        }
        auto [wec, wn] = co_await asio::async_write(socket, asio::buffer(request), use_tuple);
        ++totals.sent;
        auto [rec, n] = co_await asio::async_read_until(socket, asio::dynamic_buffer(input), '\n', use_tuple);
        if (wec || rec) {
            std::printf("client %d: %s\n", index, (wec ? wec : rec).message().c_str());
            ++totals.clients_failed;
            co_return;
        }
        const std::string reply = input.substr(0, n - 1);
        input.erase(0, n);
        if (reply == expected) {
            ++totals.ok;
        } else {
            if (totals.wrong < 5)
                std::printf("client %d: got '%s', expected '%s'\n", index, reply.c_str(), expected.c_str());
            ++totals.wrong;
        }
    }
    ++totals.clients_done;
}

/// The value of a Prometheus sample line `name value` in `text` (-1 if absent).
double sample(const std::string& text, const std::string& name) {
    const auto at = text.find('\n' + name + ' ');
    if (at == std::string::npos) return -1;
    return std::strtod(text.c_str() + at + name.size() + 2, nullptr);
}

/// Runs `promtool check metrics` on `text`: "" when it has no complaint, "skipped" when
/// promtool is not installed, else what it said.
std::string promtool_check(const std::string& text) {
    if (std::system("command -v promtool >/dev/null 2>&1") != 0) return "skipped";
    char in[] = "/tmp/tandem-metrics-XXXXXX";
    const int fd = mkstemp(in);
    if (fd < 0) return "cannot create a temporary file";
    const bool written = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    close(fd);
    const std::string out = std::string{in} + ".out";
    const int status = written ? std::system(("promtool check metrics < " + std::string{in} + " > " + out + " 2>&1").c_str()) : -1;
    std::string said;
    if (std::FILE* f = std::fopen(out.c_str(), "r")) {
        char buf[4096];
        for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) said.append(buf, n);
        std::fclose(f);
    }
    std::remove(in);
    std::remove(out.c_str());
    if (status == 0 && said.empty()) return "";
    return said.empty() ? "promtool failed (status " + std::to_string(status) + ")" : said;
}

/// Sends "metrics" and reads up to the empty line that ends the reply.
asio::awaitable<std::string> line_metrics(tcp::endpoint server) {
    tcp::socket socket{co_await asio::this_coro::executor};
    co_await socket.async_connect(server, asio::use_awaitable);
    co_await asio::async_write(socket, asio::buffer(std::string{"metrics\n"}), asio::use_awaitable);
    std::string text;
    auto [ec, n] = co_await asio::async_read_until(socket, asio::dynamic_buffer(text), "\n\n", use_tuple);
    co_return ec ? std::string{} : '\n' + text.substr(0, n);
}

/// GET /metrics over HTTP/1.1; returns the whole response.
asio::awaitable<std::string> http_metrics(tcp::endpoint server) {
    tcp::socket socket{co_await asio::this_coro::executor};
    co_await socket.async_connect(server, asio::use_awaitable);
    co_await asio::async_write(socket, asio::buffer(std::string{"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"}),
                               asio::use_awaitable);
    std::string response;
    auto [ec, n] = co_await asio::async_read(socket, asio::dynamic_buffer(response), use_tuple);
    (void)n;
    co_return ec == asio::error::eof ? response : std::string{};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr,
                     "usage: %s <hash_server> [--connections N] [--requests M] [--max-seconds S] [-- server args]\n",
                     argv[0]);
        return 2;
    }
    int connections = 200, requests = 25, max_seconds = 120;
    std::vector<std::string> server_args{argv[1], "--port", "0"};
    for (int i = 2; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--") {
            for (++i; i < argc; ++i) server_args.emplace_back(argv[i]);
        } else if (i + 1 < argc && a == "--connections") {
            connections = std::atoi(argv[++i]);
        } else if (i + 1 < argc && a == "--requests") {
            requests = std::atoi(argv[++i]);
        } else if (i + 1 < argc && a == "--max-seconds") {
            max_seconds = std::atoi(argv[++i]);
        } else {
            std::fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }

    try {
        ServerProcess server{server_args};
        const unsigned short port = server.read_port();
        if (port == 0) {
            std::printf("FAILED: the server printed no port\n");
            return 1;
        }
        const tcp::endpoint endpoint{asio::ip::make_address("127.0.0.1"), port};

        asio::io_context io;
        Totals totals;
        bool timed_out = false;
        asio::steady_timer deadline{io, std::chrono::seconds{max_seconds}};
        deadline.async_wait([&](std::error_code ec) {
            if (ec) return;
            timed_out = true;
            io.stop();
        });

        const auto start = std::chrono::steady_clock::now();
        std::string line_text, http_text;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                // Every client at once, then the metrics once they are all done.
                auto ex = co_await asio::this_coro::executor;
                int running = connections;
                asio::steady_timer all_done{ex, asio::steady_timer::time_point::max()};
                for (int c = 0; c < connections; ++c) {
                    asio::co_spawn(ex, client(endpoint, c, requests, totals), [&](std::exception_ptr) {
                        if (--running == 0) all_done.cancel();
                    });
                }
                if (running > 0) co_await all_done.async_wait(use_tuple);
                line_text = co_await line_metrics(endpoint);
                http_text = co_await http_metrics(endpoint);
                deadline.cancel();
            },
            asio::detached);
        io.run();
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

        int failures = 0;
        auto check = [&](bool ok, const std::string& what) {
            std::printf("%-64s %s\n", what.c_str(), ok ? "ok" : "FAILED");
            if (!ok) ++failures;
        };
        const std::uint64_t expected = static_cast<std::uint64_t>(connections) * static_cast<std::uint64_t>(requests);
        std::printf("%d connections x %d requests in %.2f s (%.0f requests/s)\n", connections, requests, seconds,
                    static_cast<double>(totals.sent) / seconds);
        check(!timed_out, "finished within --max-seconds " + std::to_string(max_seconds));
        check(totals.clients_done == connections && totals.clients_failed == 0, "every client finished");
        check(totals.ok == expected && totals.wrong == 0,
              "every reply matched (" + std::to_string(totals.ok) + "/" + std::to_string(expected) + ")");

        const double tasks = sample(line_text, "tandem_tasks_completed_total");
        const double batches = sample(line_text, "hash_server_batches_total");
        const double batched = sample(line_text, "hash_server_batched_requests_total");
        // With --inline the server hashes on its event loop: the engine sees no work.
        const bool inline_mode = std::find(server_args.begin(), server_args.end(), "--inline") != server_args.end();
        if (!inline_mode) {
            check(tasks >= static_cast<double>(totals.hash_requests),
                  "metrics: tandem_tasks_completed_total counts every hash");
            check(batched == static_cast<double>(totals.hash_requests),
                  "metrics: every hash request went through a batch");
        }
        if (batches > 0)
            std::printf("  %.0f batches, %.1f requests per batch on average\n", batches, batched / batches);
        check(http_text.starts_with("HTTP/1.1 200") &&
                  http_text.find("\ntandem_batches_completed_total ") != std::string::npos,
              "GET /metrics answers 200 with the engine's counters");
        check(http_text.find("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != std::string::npos,
              "GET /metrics says text/plain; version=0.0.4; charset=utf-8");
        check(http_text.find("# EOF") == std::string::npos && line_text.find("# EOF") == std::string::npos,
              "metrics: no OpenMetrics \"# EOF\" line in the 0.0.4 text");
        const auto body_at = http_text.find("\r\n\r\n");
        const std::string lint = promtool_check(body_at == std::string::npos ? "" : http_text.substr(body_at + 4));
        if (lint == "skipped") {
            std::printf("%-64s %s\n", "GET /metrics passes promtool check metrics", "skipped (no promtool)");
        } else {
            check(lint.empty(), "GET /metrics passes promtool check metrics" + (lint.empty() ? "" : ":\n" + lint));
        }
        check(server.terminate(10s), "the server exits 0 on SIGTERM");
        std::printf("%s\n", failures == 0 ? "load test passed" : "load test FAILED");
        return failures == 0 ? 0 : 1;
    } catch (const std::exception& e) {
        std::printf("FAILED: %s\n", e.what());
        return 1;
    }
}
