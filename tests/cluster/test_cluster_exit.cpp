// A rank that exits (crashes) in the middle of a slice: run under `mpirun --enable-recovery
// --mca orte_abort_on_non_zero_status 0 -np 3` (tests/meson.build), without which Open MPI's
// launcher kills the whole job when a rank exits without MPI_Finalize. Its own program: the
// exiting rank writes no report, and the others finish with one rank gone.
#define BOOST_TEST_MODULE cluster_exit
#include "cluster_main.hpp"

#include <tandem/cluster.hpp>
#include <tandem/tandem.hpp>

#include <chrono>
#include <cstdint>
#include <vector>

using namespace std::chrono_literals;

BOOST_AUTO_TEST_CASE(a_rank_that_exits_mid_slice_has_its_slice_rerun_and_the_cluster_shuts_down) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    tandem::EngineConfig ec;
    ec.cpu_workers = 1;
    tandem::Engine engine{ec};
    tandem::ClusterConfig config;
    config.deadline = 1s;
    config.heartbeat = 50ms;
    config.shutdown_grace = 2s;
    config.piece_bytes = 64 << 10;
    if (rank == 2) config.test_hooks.exit_after_slices = 1;  // std::_Exit(0) on its first slice
    tandem::Cluster cluster{engine, config};
    tandem::Op<std::uint64_t, std::uint64_t> twice{"twice", [](const std::uint64_t& x) { return 2 * x + 1; }};
    cluster.add(twice);
    cluster.start();
    if (cluster.is_leader()) {
        std::vector<std::uint64_t> values(300000);
        for (std::size_t i = 0; i < values.size(); ++i) values[i] = i;
        auto [results, stats] = cluster.submit(twice, tandem::Batch<std::uint64_t>::dense(values)).get();
        bool right = true;
        for (std::size_t i = 0; i < values.size(); ++i) right &= results[i].output == 2 * values[i] + 1;
        BOOST_TEST(right);
        bool rank2_failed = false;
        for (const auto& s : stats.ranks) rank2_failed |= s.rank == 2 && s.failed;
        BOOST_TEST(rank2_failed);
        BOOST_TEST(!cluster.ranks().at(2).up);
        auto again = cluster.submit(twice, tandem::Batch<std::uint64_t>::dense(values)).get();
        BOOST_TEST(again.results[299999].output == 599999u);
    }
    cluster.shutdown();  // waits `shutdown_grace` for the gone rank's goodbye
    // Every rank left has seen rank 2 go (the leader from its slice, the other from its
    // heartbeats); MPI is then not finalised (cluster_main.hpp).
    for (const auto& info : cluster.ranks()) cluster_tests::rank_lost |= info.rank == 2 && !info.up;
    BOOST_TEST(cluster_tests::rank_lost);
    // Every rank left standing gets here, its cluster closed.
    auto late = cluster.submit(twice, tandem::Batch<std::uint64_t>::dense(std::vector<std::uint64_t>{1}));
    BOOST_TEST((late.error() == tandem::ExecError::ShutDown));
}
