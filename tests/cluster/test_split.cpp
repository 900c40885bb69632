// The cluster's split policy (cluster/src/split.hpp) on its own: no MPI, no engine. How a
// batch is cut between ranks from their learned compute lines and links.
#define BOOST_TEST_MODULE cluster_split
#include <boost/test/unit_test.hpp>

#include "split.hpp"

#include <cstddef>
#include <numeric>
#include <vector>

namespace {

using tandem::cluster_detail::Lane;
using tandem::cluster_detail::LinearCost;
using tandem::cluster_detail::LinkCost;

tandem::ModelConfig model_config() { return tandem::ModelConfig{}; }

/// A compute line that has learned `per_task_ns` from slices of several sizes.
LinearCost compute_line(double per_task_ns) {
    LinearCost c;
    for (double n : {1e5, 1e6, 4e6, 1e7}) c.add(n, n * per_task_ns, model_config());
    return c;
}

Lane lane(double per_task_ns, const LinkCost* link, double bytes_per_task) {
    Lane l;
    l.cost = compute_line(per_task_ns);
    l.calibrated = true;
    if (link) {
        l.link_fixed_ns = link->fixed_ns();
        l.link_ns_per_byte = link->per_byte_ns();
    }
    l.bytes_per_task = bytes_per_task;
    return l;
}

std::vector<std::size_t> split(const std::vector<Lane>& lanes, std::size_t n) {
    bool explored = true;
    auto shares = tandem::cluster_detail::split(lanes, n, explored);
    BOOST_TEST(!explored);
    BOOST_TEST(std::accumulate(shares.begin(), shares.end(), std::size_t{0}) == n);
    return shares;
}

}  // namespace

// The defect measured on a 2 x H200 host: after a few small batches, whose round trips are
// nearly all latency, the second rank's link looked so slow per byte that a large batch went
// almost all to the leader (5.2 M of 33.5 M tasks), and nothing ever corrected it.
BOOST_AUTO_TEST_CASE(a_link_measured_on_small_slices_does_not_starve_a_rank_of_a_large_batch) {
    LinkCost link;
    for (int i = 0; i < 10; ++i) link.add(4096, 200e3, model_config().forgetting);  // 4 KiB slices, 200 us extra
    BOOST_TEST(link.fixed_ns() == 200e3);
    BOOST_TEST(link.per_byte_ns() == 0.0);  // nothing large measured yet: no per-byte cost assumed

    // Two ranks of equal speed (10 ns a task), 8 bytes moved per task, a 32 Mi-task batch.
    const std::size_t n = std::size_t{32} << 20;
    const auto shares = split({lane(10, nullptr, 8), lane(10, &link, 8)}, n);
    // The remote rank starts 200 us late: it takes a little less than half, not a few per cent.
    BOOST_TEST(shares[1] > n * 45 / 100);
    BOOST_TEST(shares[1] < n / 2);
}

BOOST_AUTO_TEST_CASE(the_per_byte_cost_of_a_link_is_learned_from_large_slices_net_of_its_latency) {
    LinkCost link;
    const double f = model_config().forgetting;
    link.add(4096, 100e3, f);  // latency 100 us
    // 64 MiB slices that take 100 us + 0.1 ns a byte more than the rank's own time.
    const double bytes = double(64 << 20);
    for (int i = 0; i < 5; ++i) link.add(bytes, 100e3 + 0.1 * bytes, f);
    BOOST_TEST(link.fixed_ns() == 100e3);
    BOOST_TEST(link.per_byte_ns() == 0.1, boost::test_tools::tolerance(1e-9));

    // With that link, a rank as fast as the leader takes less than half of a large batch, by
    // as much as its bytes cost: equal finish when 10 x0 = 100e3 + (10 + 0.8) x1.
    const std::size_t n = std::size_t{32} << 20;
    const auto shares = split({lane(10, nullptr, 8), lane(10, &link, 8)}, n);
    const double x1 = (10.0 * double(n) - 100e3) / (10.0 + 10.8);
    BOOST_TEST(double(shares[1]) == x1, boost::test_tools::tolerance(0.001));
}

BOOST_AUTO_TEST_CASE(a_batch_too_small_to_be_worth_its_latency_stays_on_the_leader) {
    LinkCost link;
    link.add(4096, 200e3, model_config().forgetting);
    // 1000 tasks of 10 ns: 10 us on the leader, far less than one round trip.
    const auto shares = split({lane(10, nullptr, 8), lane(10, &link, 8)}, 1000);
    BOOST_TEST(shares[0] == 1000u);
    BOOST_TEST(shares[1] == 0u);
}

BOOST_AUTO_TEST_CASE(ranks_of_unequal_speed_get_shares_in_proportion_to_their_speed) {
    LinkCost none;  // an idealised free link: the split is the compute lines' alone
    const std::size_t n = std::size_t{12} << 20;
    const auto shares = split({lane(10, nullptr, 8), lane(30, &none, 8), lane(10, &none, 8)}, n);
    BOOST_TEST(double(shares[0]) == 3.0 * double(shares[1]), boost::test_tools::tolerance(0.001));
    BOOST_TEST(double(shares[2]) == double(shares[0]), boost::test_tools::tolerance(0.001));
}

BOOST_AUTO_TEST_CASE(a_link_that_slows_down_is_followed) {
    LinkCost link;
    const double f = model_config().forgetting;
    const double bytes = double(16 << 20);
    link.add(4096, 50e3, f);
    for (int i = 0; i < 5; ++i) link.add(bytes, 50e3 + 0.05 * bytes, f);
    const double before = link.per_byte_ns();
    for (int i = 0; i < 60; ++i) link.add(bytes, 50e3 + 0.5 * bytes, f);
    BOOST_TEST(before == 0.05, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(link.per_byte_ns() > 0.45);
}

BOOST_AUTO_TEST_CASE(a_latency_learned_after_large_slices_is_not_counted_twice) {
    LinkCost link;
    const double f = model_config().forgetting;
    const double bytes = double(16 << 20);
    // Large slices first: with no latency known, the per-byte cost holds it.
    for (int i = 0; i < 3; ++i) link.add(bytes, 100e3 + 0.1 * bytes, f);
    BOOST_TEST(link.per_byte_ns() > 0.1);
    link.add(4096, 100e3, f);  // now the latency is known
    link.add(bytes, 100e3 + 0.1 * bytes, f);
    BOOST_TEST(link.fixed_ns() == 100e3);
    BOOST_TEST(link.per_byte_ns() == 0.1, boost::test_tools::tolerance(1e-9));
}
