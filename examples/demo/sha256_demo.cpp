// The main demo: SHA-256 of one million 64-byte messages as one batch.
//
//   1 M messages ──submit──► [scheduler] ──chunks──► [CPU workers × N] (OpenSSL SHA-256, EVP)
//                                     └──────────► [GPU streams] (when a GPU kernel is linked in)
//   BatchFuture ◄── results in task order + ExecStats
//
// It checks every digest against a serial pass of the same function and prints throughput and
// stats. Both hash through examples/common/openssl_sha256.hpp: OpenSSL 3's one-shot SHA256()
// looks the algorithm up on every call under shared locks, so two threads calling it hash
// barely faster than one.
// usage: sha256_demo [messages] [cpu_workers] [--trace FILE]
//   --trace FILE: writes the run's trace (Trace Event Format JSON; open it in ui.perfetto.dev)
#include <tandem/tandem.hpp>

#include "sha256_op.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using demo::Digest;
using demo::Message;
using demo::sha256;

int main(int argc, char** argv) {
    std::string trace_file;
    if (argc > 2 && std::string{argv[argc - 2]} == "--trace") {
        trace_file = argv[argc - 1];
        argc -= 2;
    }
    const std::size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
    tandem::EngineConfig config;
    if (argc > 2) config.cpu_workers = std::strtoull(argv[2], nullptr, 10);
    config.trace.enabled = !trace_file.empty();
    tandem::Engine engine{config};

    std::mt19937_64 rng{2026};
    tandem::Batch<Message> batch{engine.pinned_memory()};
    batch.reserve(n);
    for (std::uint64_t i = 0; i < n; ++i) {
        Message m;
        for (std::size_t k = 0; k < m.size(); k += 8) {
            const std::uint64_t v = rng();
            std::memcpy(m.data() + k, &v, 8);
        }
        batch.push({i, m, 1});
    }
    std::vector<Message> copy(batch.payloads().begin(), batch.payloads().end());

    tandem::Op<Message, Digest> op{"sha256", sha256};
    const auto t0 = std::chrono::steady_clock::now();
    auto [results, stats] = engine.submit(op, std::move(batch)).get();
    const double engine_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!trace_file.empty()) engine.save_trace(trace_file);

    const auto t1 = std::chrono::steady_clock::now();
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < n; ++i) mismatches += sha256(copy[i]) != results[i].output;
    const double serial_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();

    std::printf("SHA-256 of %zu 64-byte messages\n", n);
    std::printf("  engine : %8.1f ms  %8.2f M msg/s  (%zu CPU workers, %zu GPUs)\n", engine_s * 1e3,
                static_cast<double>(n) / engine_s / 1e6, engine.cpu_workers(), engine.gpu_count());
    std::printf("  serial : %8.1f ms  %8.2f M msg/s  (one thread, same function, includes the compare)\n",
                serial_s * 1e3, static_cast<double>(n) / serial_s / 1e6);
    std::printf("  stats  : device=%s cpu_tasks=%llu gpu_tasks=%llu fallback_tasks=%llu cpu_chunks=%u gpu_chunks=%u\n",
                tandem::to_string(stats.device), static_cast<unsigned long long>(stats.cpu_tasks),
                static_cast<unsigned long long>(stats.gpu_tasks), static_cast<unsigned long long>(stats.fallback_tasks),
                stats.cpu_chunks, stats.gpu_chunks);
    std::printf("           queue_wait=%.1f us cpu_time=%.1f ms wall_time=%.1f ms\n",
                static_cast<double>(stats.queue_wait.count()) / 1e3, static_cast<double>(stats.cpu_time.count()) / 1e6,
                static_cast<double>(stats.wall_time.count()) / 1e6);
    std::printf("  digest[0] = ");
    for (auto b : results[0].output) std::printf("%02x", b);
    std::printf("\n  %s: %zu of %zu digests match a serial OpenSSL pass\n", mismatches ? "FAIL" : "OK", n - mismatches, n);
    return mismatches ? 1 : 0;
}
