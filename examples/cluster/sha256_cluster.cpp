// The SHA-256 demo over a cluster of engines: one engine per MPI rank, the leader (rank 0)
// splits each batch across every rank in proportion to its measured speed.
//
//   rank 0: submit(sha256, 1 M messages) ──► [transport] ──slices──► rank 1, rank 2, ... (MPI)
//            │   └─ its own slice ──► rank 0's engine                     │ each on its engine
//            ▼                                                             ▼
//   BatchFuture ◄── digests in task order, ExecStats::ranks ◄── result pieces, per rank
//
// The op is the demo's (examples/demo/sha256_op.hpp); the other ranks only register it and
// serve. Every digest is checked against a serial OpenSSL pass on the leader.
//
//   mpirun -np 3 ./build/examples/cluster/sha256_cluster [messages] [batches] [cpu_workers]
//
// (as root: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; README, "Cluster (MPI)").
#include <tandem/cluster.hpp>
#include <tandem/tandem.hpp>

#include "../demo/sha256_op.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

int main(int argc, char** argv) {
    const std::size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
    const int batches = argc > 2 ? std::atoi(argv[2]) : 5;
    tandem::EngineConfig config;
    if (argc > 3) config.cpu_workers = std::strtoull(argv[3], nullptr, 10);
    // One GPU per rank on hosts with several (rank i of a host takes GPU i).
    config.gpu.first_device = static_cast<std::size_t>(tandem::local_rank());
    config.gpu.max_devices = 1;
    tandem::Engine engine{config};
    tandem::Cluster cluster{engine};
    const tandem::Op<demo::Message, demo::Digest> op{"sha256", demo::sha256};
    cluster.add(op);
    cluster.start();
    if (!cluster.is_leader()) {
        cluster.shutdown();  // serves the leader's slices until the leader shuts down
        return 0;
    }

    std::mt19937_64 rng{2026};
    std::vector<demo::Message> messages(n);
    for (auto& m : messages) {
        for (std::size_t k = 0; k < m.size(); k += 8) {
            const std::uint64_t v = rng();
            std::memcpy(m.data() + k, &v, 8);
        }
    }
    std::printf("SHA-256 of %zu 64-byte messages on %d ranks, %d batches\n", n, cluster.size(), batches);
    int failures = 0;
    for (int b = 0; b < batches; ++b) {
        const auto t0 = std::chrono::steady_clock::now();
        auto [results, stats] = cluster.submit(op, tandem::Batch<demo::Message>::dense(messages)).get();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::size_t mismatches = 0;
        for (std::size_t i = 0; i < n; ++i) mismatches += demo::sha256(messages[i]) != results[i].output;
        failures += mismatches != 0;
        std::printf("batch %d: %8.1f ms %8.2f M msg/s  %s\n", b, s * 1e3, static_cast<double>(n) / s / 1e6,
                    mismatches ? "MISMATCH" : "all digests match");
        for (const tandem::RankStats& r : stats.ranks) {
            std::printf("   rank %d: %8llu tasks (%llu on GPUs)  %7.1f ms on the rank  %7.1f ms round trip  %6.1f MB sent%s\n",
                        r.rank, static_cast<unsigned long long>(r.tasks), static_cast<unsigned long long>(r.gpu_tasks),
                        static_cast<double>(r.time.count()) / 1e6, static_cast<double>(r.round_trip.count()) / 1e6,
                        static_cast<double>(r.bytes_sent) / 1e6, r.failed ? "  FAILED" : "");
        }
    }
    cluster.shutdown();
    std::printf("%s\n", failures ? "FAIL" : "OK: every digest matches a serial OpenSSL pass");
    return failures ? 1 : 0;
}
