// Responsiveness of an event loop under heavy work: the latency of a cheap request (a ping)
// while heavy hash requests keep the machine busy, for the same server hashing on its event
// loop (the baseline, `hash_server --inline`) and offloading to the engine (`hash_server`).
//
//   this process                                   hash_server (child, 127.0.0.1, port 0)
//   ------------                                   --------------------------------------
//   H heavy clients, closed loop:                  offload: loop gathers -> engine workers hash
//     "hashn R <text>" -> digest (checked once)     inline:  loop hashes each request itself
//   1 ping client, every --interval-us:
//     "ping" -> "pong", round trip timed  <-------- answered by the loop: between heavy
//                                                  requests (inline) or at once (offload)
//
// Modes, each a fresh server process:
//   engine, W workers          the figure (W = hardware threads - 1: the loop keeps a core)
//   asio::thread_pool, W       `--pool`: the same offload to a plain thread pool, so the figure
//                              isolates what the engine adds over any thread pool
//   inline on the loop         `--inline`: the baseline that does not offload at all
//   engine, every core busy    W = hardware threads, default priority, then `--priority low`
//                              (SCHED_BATCH, nice +10) and the pool likewise: what lowering
//                              the workers' priority buys the loop when no core is left for it
// Prints p50 / p90 / p99 / max of the ping round trip in each mode, the heavy throughput, and
// the ratios. Loopback only; bounded by --pings and --max-seconds per mode.
//
// Usage: server_responsiveness [--server PATH] [--heavy-clients H] [--rounds R] [--pings N]
//                              [--interval-us U] [--workers W] [--max-seconds S] [--server-arg A]...
//                              [--json FILE]   (the RESULT lines and every mode's percentiles as JSON,
//                                               bench/json_out.hpp; bench/plot.py draws them)
// Defaults: 4 heavy clients, hashn 2000, 500 pings 1 ms apart, workers = hardware threads - 1.

#include <asio.hpp>

#include <openssl/sha.h>

#include "../json_out.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#ifndef TANDEM_HASH_SERVER
#define TANDEM_HASH_SERVER "hash_server"
#endif

extern char** environ;

using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

struct Options {
    std::string server = TANDEM_HASH_SERVER;
    int heavy_clients = 4;
    unsigned rounds = 2000;
    int pings = 500;
    int interval_us = 1000;
    // Leave the event loop a core: workers = hardware threads - 1 (at least 1).
    int workers = static_cast<int>(std::max(2u, std::thread::hardware_concurrency())) - 1;
    int max_seconds = 60;
    std::vector<std::string> server_args;
    std::string json;  // --json FILE
};

std::string hex_sha256_rounds(std::string_view text, unsigned rounds) {
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

/// The server as a child process; its first stdout line carries the port.
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
            throw std::runtime_error{"cannot start " + argv[0] + ": " + std::strerror(rc)};
        }
        out_ = fdopen(fds[0], "r");
        char line[512];
        if (!std::fgets(line, sizeof line, out_)) throw std::runtime_error{"the server printed nothing"};
        const char* at = std::strstr(line, "127.0.0.1:");
        if (!at) throw std::runtime_error{std::string{"unexpected server output: "} + line};
        port_ = static_cast<unsigned short>(std::atoi(at + 10));
    }
    ServerProcess(const ServerProcess&) = delete;
    ~ServerProcess() {
        if (pid_ > 0) {
            kill(pid_, SIGTERM);
            const auto give_up = Clock::now() + 5s;
            while (waitpid(pid_, nullptr, WNOHANG) == 0) {
                if (Clock::now() > give_up) {
                    kill(pid_, SIGKILL);
                    waitpid(pid_, nullptr, 0);
                    break;
                }
                std::this_thread::sleep_for(5ms);
            }
        }
        if (out_) fclose(out_);
    }
    unsigned short port() const { return port_; }

private:
    pid_t pid_ = -1;
    FILE* out_ = nullptr;
    unsigned short port_ = 0;
};

/// Sends one line and reads one reply line, giving up at `deadline` (a reply that never comes
/// ends the mode as unfinished instead of hanging the benchmark: one run hung 300 s waiting).
/// Callers give the read 10 s past --max-seconds, so a request in flight then still completes.
std::string round_trip(asio::io_context& io, tcp::socket& socket, std::string& buffer, const std::string& request,
                       Clock::time_point deadline) {
    asio::write(socket, asio::buffer(request));
    std::error_code error = asio::error::timed_out;
    std::size_t n = 0;
    asio::async_read_until(socket, asio::dynamic_buffer(buffer), '\n', [&](std::error_code ec, std::size_t got) {
        error = ec;
        n = got;
    });
    io.restart();
    io.run_until(deadline);
    if (!io.stopped()) {  // the deadline passed first
        socket.cancel();
        io.restart();
        io.run();  // the read completes with operation_aborted
        throw std::runtime_error{"no reply before --max-seconds"};
    }
    if (error) throw std::system_error{error};
    std::string reply = buffer.substr(0, n - 1);
    buffer.erase(0, n);
    return reply;
}

struct ModeResult {
    std::vector<double> ping_us;  // sorted
    double heavy_per_second = 0;
    bool digests_ok = true;
    bool pings_ok = true;
    bool finished = true;
};

double percentile(const std::vector<double>& sorted, double p) {
    if (sorted.empty()) return 0;
    const auto i = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
    return sorted[std::min(i, sorted.size() - 1)];
}

struct Mode {
    std::string name;
    int workers = 1;
    std::vector<std::string> args;  // --inline, --pool, --priority low
};

ModeResult measure(const Options& o, const Mode& mode) {
    std::vector<std::string> argv{o.server, "--port", "0", "--workers", std::to_string(mode.workers)};
    argv.insert(argv.end(), mode.args.begin(), mode.args.end());
    argv.insert(argv.end(), o.server_args.begin(), o.server_args.end());
    ServerProcess server{argv};
    const tcp::endpoint endpoint{asio::ip::make_address("127.0.0.1"), server.port()};
    const auto deadline = Clock::now() + std::chrono::seconds{o.max_seconds};

    ModeResult result;
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> heavy_done{0};
    std::atomic<int> heavy_ready{0};
    std::atomic<bool> digest_bad{false};

    // Heavy clients: each keeps one expensive request outstanding, back to back.
    std::vector<std::thread> heavy;
    for (int c = 0; c < o.heavy_clients; ++c) {
        heavy.emplace_back([&, c] {
            try {
                asio::io_context io;
                tcp::socket socket{io};
                socket.connect(endpoint);
                socket.set_option(tcp::no_delay{true});
                std::string buffer;
                const std::string text = "heavy client " + std::to_string(c);
                const std::string request = "hashn " + std::to_string(o.rounds) + ' ' + text + '\n';
                bool first = true;
                while (!stop.load(std::memory_order_relaxed) && Clock::now() < deadline) {
                    const std::string reply = round_trip(io, socket, buffer, request, deadline + 10s);
                    if (first) {
                        if (reply != hex_sha256_rounds(text, o.rounds)) digest_bad = true;
                        heavy_ready.fetch_add(1);
                        first = false;
                    }
                    heavy_done.fetch_add(1, std::memory_order_relaxed);
                }
            } catch (const std::exception& e) {
                std::fprintf(stderr, "heavy client %d: %s\n", c, e.what());
                digest_bad = true;
                heavy_ready.fetch_add(1);
            }
        });
    }

    // Measure only once every heavy client has had a reply: the server is saturated.
    while (heavy_ready.load() < o.heavy_clients && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
    const std::uint64_t heavy_before = heavy_done.load();
    const auto start = Clock::now();
    try {
        asio::io_context io;
        tcp::socket socket{io};
        socket.connect(endpoint);
        socket.set_option(tcp::no_delay{true});
        std::string buffer;
        const std::string ping = "ping\n";
        for (int i = 0; i < o.pings && Clock::now() < deadline; ++i) {
            std::this_thread::sleep_for(std::chrono::microseconds{o.interval_us});
            const auto t0 = Clock::now();
            const std::string reply = round_trip(io, socket, buffer, ping, deadline + 10s);
            const auto t1 = Clock::now();
            if (reply != "pong") result.pings_ok = false;
            result.ping_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ping client: %s\n", e.what());
        result.pings_ok = false;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    result.heavy_per_second = static_cast<double>(heavy_done.load() - heavy_before) / seconds;
    result.finished = static_cast<int>(result.ping_us.size()) == o.pings;
    stop = true;
    for (auto& t : heavy) t.join();
    result.digests_ok = !digest_bad.load();
    std::sort(result.ping_us.begin(), result.ping_us.end());
    return result;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string_view a = argv[i];
        const std::string v = argv[i + 1];
        if (a == "--server")
            o.server = v;
        else if (a == "--heavy-clients")
            o.heavy_clients = std::max(1, std::stoi(v));
        else if (a == "--rounds")
            o.rounds = static_cast<unsigned>(std::max(1, std::stoi(v)));
        else if (a == "--pings")
            o.pings = std::max(1, std::stoi(v));
        else if (a == "--interval-us")
            o.interval_us = std::max(0, std::stoi(v));
        else if (a == "--workers")
            o.workers = std::max(0, std::stoi(v));
        else if (a == "--max-seconds")
            o.max_seconds = std::max(1, std::stoi(v));
        else if (a == "--server-arg")
            o.server_args.push_back(v);
        else if (a == "--json")
            o.json = v;
        else {
            std::fprintf(stderr,
                         "usage: %s [--server PATH] [--heavy-clients H] [--rounds R] [--pings N] [--interval-us U] "
                         "[--workers W] [--max-seconds S] [--server-arg A]... [--json FILE]\n",
                         argv[0]);
            return 2;
        }
    }
    std::printf(
        "server %s; %d heavy clients (hashn %u), %d pings every %d us, %d engine workers, %u hardware threads\n",
        o.server.c_str(), o.heavy_clients, o.rounds, o.pings, o.interval_us, o.workers,
        std::thread::hardware_concurrency());

    try {
        const int all = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        const std::vector<Mode> modes{
            {"engine, " + std::to_string(o.workers) + " workers", o.workers, {}},
            {"asio::thread_pool(" + std::to_string(o.workers) + ") (--pool)", o.workers, {"--pool"}},
            {"inline on the loop (--inline)", o.workers, {"--inline"}},
            {"engine, " + std::to_string(all) + " workers (every core)", all, {}},
            {"engine, " + std::to_string(all) + " workers, --priority low", all, {"--priority", "low"}},
            {"asio::thread_pool(" + std::to_string(all) + "), every core", all, {"--pool"}},
            {"asio::thread_pool(" + std::to_string(all) + "), --priority low", all, {"--pool", "--priority", "low"}},
        };
        std::vector<ModeResult> r;
        for (const Mode& m : modes) {
            r.push_back(measure(o, m));
            const ModeResult& x = r.back();
            std::printf("measured: %-44s ping p99 %.0f us, %zu pings%s\n", m.name.c_str(), percentile(x.ping_us, 0.99),
                        x.ping_us.size(), x.finished ? "" : " (stopped at --max-seconds)");
            std::fflush(stdout);
        }
        std::printf("%-44s %10s %10s %10s %10s %12s\n", "mode", "ping p50", "ping p90", "ping p99", "ping max",
                    "heavy req/s");
        for (std::size_t i = 0; i < modes.size(); ++i) {
            const ModeResult& x = r[i];
            std::printf("%-44s %7.0f us %7.0f us %7.0f us %7.0f us %12.1f\n", modes[i].name.c_str(),
                        percentile(x.ping_us, 0.50), percentile(x.ping_us, 0.90), percentile(x.ping_us, 0.99),
                        x.ping_us.empty() ? 0.0 : x.ping_us.back(), x.heavy_per_second);
        }
        auto ratio = [&](std::size_t num, std::size_t den, double p) {
            return percentile(r[num].ping_us, p) / percentile(r[den].ping_us, p);
        };
        std::printf("ratio inline / engine: ping p50 %.1fx, p99 %.1fx (higher: offloading keeps the loop responsive)\n",
                    ratio(2, 0, 0.50), ratio(2, 0, 0.99));
        std::printf("ratio thread pool / engine: ping p50 %.2fx, p99 %.2fx (what the engine adds over a plain pool)\n",
                    ratio(1, 0, 0.50), ratio(1, 0, 0.99));
        std::printf("every core busy, default / low priority: engine ping p99 %.1fx, pool ping p99 %.1fx "
                    "(target >= 5x on 2 cores)\n",
                    ratio(3, 4, 0.99), ratio(5, 6, 0.99));
        std::printf("RESULT name=server_ping_p99_low_priority tandem=%.4gus baseline=%.4gus ratio=%.3f target=<=0.2 "
                    "met=%s\n",
                    percentile(r[4].ping_us, 0.99), percentile(r[3].ping_us, 0.99), 1.0 / ratio(3, 4, 0.99),
                    ratio(3, 4, 0.99) >= 5.0 ? "yes" : "no");
        std::printf("RESULT name=server_ping_p99_vs_pool tandem=%.4gus baseline=%.4gus ratio=%.3f target=none met=n/a\n",
                    percentile(r[0].ping_us, 0.99), percentile(r[1].ping_us, 0.99), 1.0 / ratio(1, 0, 0.99));
        if (!o.json.empty()) {
            bench::json::Report report{"server_responsiveness"};
            report.set_command(argc, argv);
            report.add({"server_ping_p99_low_priority", percentile(r[4].ping_us, 0.99), percentile(r[3].ping_us, 0.99),
                        "us", 1.0 / ratio(3, 4, 0.99), "<=", 0.2, ratio(3, 4, 0.99) >= 5.0});
            report.add({"server_ping_p99_vs_pool", percentile(r[0].ping_us, 0.99), percentile(r[1].ping_us, 0.99), "us",
                        1.0 / ratio(1, 0, 0.99), "", 0, false});
            report.extra("modes", [&](bench::json::Writer& w) {
                w.begin_array();
                for (std::size_t i = 0; i < modes.size(); ++i) {
                    const ModeResult& x = r[i];
                    w.begin_object().member("mode", modes[i].name).member("workers", modes[i].workers);
                    w.member("ping_p50_us", percentile(x.ping_us, 0.50)).member("ping_p90_us", percentile(x.ping_us, 0.90));
                    w.member("ping_p99_us", percentile(x.ping_us, 0.99));
                    w.member("ping_max_us", x.ping_us.empty() ? 0.0 : x.ping_us.back());
                    w.member("pings", x.ping_us.size()).member("heavy_per_s", x.heavy_per_second);
                    w.member("finished", x.finished).end_object();
                }
                w.end_array();
            });
            if (!report.write(o.json)) return 1;
        }
        bool ok = true;
        for (const ModeResult& x : r) ok = ok && x.digests_ok && x.pings_ok && x.finished;
        if (!ok) std::printf("FAILED: a reply was wrong or a mode hit --max-seconds\n");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::printf("FAILED: %s\n", e.what());
        return 1;
    }
}
