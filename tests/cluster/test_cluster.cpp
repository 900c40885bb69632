// The MPI cluster (cluster/): run under `mpirun -np 3` (tests/meson.build). Every rank runs
// every case; each case builds an engine and a cluster of its own with the configuration it
// needs (a slowed rank, a stalling rank, an op missing on one rank), and the leader (rank 0)
// checks what the cluster did. No timing is asserted: shares are checked against the speed
// ratio with a wide tolerance, and the deadline cases only check that every future completes.
#define BOOST_TEST_MODULE cluster
#include "cluster_main.hpp"
#include "../support.hpp"

#include <tandem/cluster.hpp>
#include <tandem/tandem.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

/// A bit-exact integer mix; `rounds` sets the work per task.
struct Mix {
    int rounds = 1;
    std::uint64_t operator()(const std::uint64_t& x) const noexcept {
        std::uint64_t z = x;
        for (int r = 0; r < rounds; ++r) {
            z += 0x9e3779b97f4a7c15ull;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
        }
        return z;
    }
};

tandem::Op<std::uint64_t, std::uint64_t> mix_op(int rounds = 1) { return {"mix", Mix{rounds}}; }

/// Engines of one CPU worker: three ranks share this machine's cores.
tandem::EngineConfig engine_config() {
    tandem::EngineConfig c;
    c.cpu_workers = 1;
    c.idle_spin = std::chrono::nanoseconds{0};
    return c;
}

tandem::ClusterConfig cluster_config() {
    tandem::ClusterConfig c;
    c.piece_bytes = 64 << 10;  // many pieces per slice, even for modest batches
    c.deadline = 20s;          // generous: a loaded CI machine must not fail a rank by accident
    c.shutdown_grace = 10s;
    return c;
}

int world_rank() {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

std::vector<std::uint64_t> random_values(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng{seed};
    std::vector<std::uint64_t> v(n);
    for (auto& x : v) x = rng();
    return v;
}

tandem::testing::Spawned sum_outputs(tandem::Cluster& cluster, tandem::Op<std::uint64_t, std::uint64_t> op,
                    tandem::Batch<std::uint64_t> batch, std::promise<std::uint64_t>& out) {
    try {
        tandem::BatchResult<std::uint64_t> r = co_await cluster.submit(op, std::move(batch));
        std::uint64_t sum = 0;
        for (std::uint64_t v : r.results.outputs()) sum += v;
        out.set_value(sum);
    } catch (...) {
        out.set_exception(std::current_exception());
    }
}

/// The config of a test in which rank 2 fails: a short deadline, and on rank 2 the test
/// hooks `hooks` sets.
template <class Hooks>
tandem::ClusterConfig rank_2_fails(Hooks hooks) {
    tandem::ClusterConfig config = cluster_config();
    config.deadline = 1s;
    config.heartbeat = 50ms;
    if (world_rank() == 2) hooks(config.test_hooks);
    return config;
}

/// A batch whose slice on rank 2 was rerun elsewhere: every output right, rank 2 failed.
void expect_rerun_without_rank_2(tandem::Cluster& cluster, const std::vector<std::uint64_t>& values,
                                 const tandem::BatchResult<std::uint64_t>& r) {
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (r.results[i].output != Mix{}(values[i])) {
            BOOST_TEST(false, "task " << i << " wrong after the rerun");
            break;
        }
    }
    bool rank2_failed = false;
    for (const auto& s : r.stats.ranks) rank2_failed |= s.rank == 2 && s.failed;
    BOOST_TEST(rank2_failed);
    BOOST_TEST(!cluster.ranks().at(2).up);
}

/// Shuts the cluster down (collectively: ranks other than the leader wait here for the
/// leader's goodbye) and checks, on every rank, that it is closed: leader-mode submits and
/// gathers fail with ShutDown.
void finish(tandem::Cluster& cluster) {
    cluster.shutdown();
    auto late = cluster.submit(mix_op(), tandem::Batch<std::uint64_t>::dense(std::vector<std::uint64_t>{1}));
    BOOST_TEST((late.error() == tandem::ExecError::ShutDown));
    BOOST_CHECK_THROW(cluster.gather(tandem::BatchResult<std::uint64_t>{}).get(), tandem::Error);
}

}  // namespace

BOOST_AUTO_TEST_CASE(cluster_results_are_bit_identical_to_one_engine_from_one_task_to_millions) {
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, cluster_config()};
    BOOST_TEST(cluster.size() == 3);
    const auto op = mix_op();
    cluster.add(op);
    cluster.start();
    if (cluster.is_leader()) {
        bool remote_bytes = false;
        for (std::size_t n : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{1001}, std::size_t{65537},
                              std::size_t{3'000'001}}) {
            BOOST_TEST_CONTEXT("n=" << n) {
                const auto values = random_values(n, n);
                auto reference = engine.submit(op, tandem::Batch<std::uint64_t>::dense(values, 7)).get();
                auto [results, stats] = cluster.submit(op, tandem::Batch<std::uint64_t>::dense(values, 7)).get();
                BOOST_REQUIRE(results.size() == n);
                BOOST_TEST(std::equal(results.outputs().begin(), results.outputs().end(),
                                      reference.results.outputs().begin()));
                BOOST_TEST(results.ids()[0] == 7u);
                BOOST_TEST(results.ids()[n - 1] == 7u + n - 1);
                BOOST_TEST(results.all_ok());
                BOOST_TEST(stats.tasks == n);
                std::uint64_t by_ranks = 0;
                for (const auto& r : stats.ranks) by_ranks += r.tasks;
                BOOST_TEST(by_ranks == n);
                BOOST_TEST(stats.cpu_tasks == n);
                if (n == 3) BOOST_TEST(stats.ranks.size() == 3u);  // exploring: equal shares
                // Remote ranks got payloads and sent results back: the figures say so.
                for (const auto& rank : stats.ranks) {
                    remote_bytes |= rank.rank != 0 && rank.bytes_sent == rank.tasks * 8 && rank.bytes_received == rank.tasks * 8 &&
                                    rank.tasks > 0 && rank.pieces > 0;
                }
            }
        }
        // Ids that follow no pattern come back in task order too.
        tandem::Batch<std::uint64_t> shuffled;
        std::vector<std::uint64_t> ids;
        for (std::uint64_t i = 0; i < 5000; ++i) ids.push_back(i * 7919 % 10007);
        for (std::size_t i = 0; i < ids.size(); ++i) shuffled.push(ids[i], ids[i] * 3);
        auto r = cluster.submit(op, std::move(shuffled)).get();
        for (std::size_t i = 0; i < ids.size(); ++i) {
            if (r.results[i].id != ids[i] || r.results[i].output != Mix{}(ids[i] * 3)) {
                BOOST_TEST(false, "task " << i << " out of place");
                break;
            }
        }
        BOOST_TEST(remote_bytes);
    }
    finish(cluster);
}

BOOST_AUTO_TEST_CASE(task_failures_on_any_rank_come_back_at_their_positions_with_the_rank_named) {
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, cluster_config()};
    tandem::Op<std::uint64_t, std::uint64_t> picky{"picky", [](const std::uint64_t& x) -> std::uint64_t {
        if (x % 1000 == 999) throw std::runtime_error{"no " + std::to_string(x)};
        return x + 1;
    }};
    cluster.add(picky);
    cluster.start();
    if (cluster.is_leader()) {
        std::vector<std::uint64_t> values(30000);
        for (std::size_t i = 0; i < values.size(); ++i) values[i] = i;
        auto [results, stats] = cluster.submit(picky, tandem::Batch<std::uint64_t>::dense(values)).get();
        BOOST_TEST(results.errors().size() == 30u);
        BOOST_TEST(stats.failed_tasks == 30u);
        for (const auto& e : results.errors()) BOOST_TEST(e.index % 1000 == 999u);
        BOOST_TEST(results[29999].error != nullptr);
        BOOST_TEST(results[29999].error->message == "rank 2: no 29999");  // the last third ran on rank 2
        BOOST_TEST(results[998].output == 999u);
    }
    finish(cluster);
}

BOOST_AUTO_TEST_CASE(a_rank_slowed_three_times_gets_about_a_third_of_the_share_of_the_others) {
    // Tasks that sleep a millisecond, on engines of 4 workers each: what a rank measures is
    // then its own speed and not how the three processes happen to share this machine's
    // cores (a CPU-bound op here measures the scheduler).
    tandem::EngineConfig ec = engine_config();
    ec.cpu_workers = 4;
    tandem::Engine engine{ec};
    tandem::ClusterConfig config = cluster_config();
    if (world_rank() == 2) config.slowdown = 3;
    tandem::Cluster cluster{engine, config};
    tandem::Op<std::uint64_t, std::uint64_t> op{"nap", [](const std::uint64_t& x) {
        std::this_thread::sleep_for(1ms);
        return x + 1;
    }};
    cluster.add(op);
    cluster.start();
    if (cluster.is_leader()) {
        const auto values = random_values(1400, 1);
        double fast = 0, slow = 0;
        for (int round = 0; round < 9; ++round) {
            auto r = cluster.submit(op, tandem::Batch<std::uint64_t>::dense(values)).get();
            BOOST_REQUIRE(r.stats.ranks.size() == 3u);
            BOOST_TEST_MESSAGE("shares: " << r.stats.ranks[0].tasks << " " << r.stats.ranks[1].tasks << " "
                                          << r.stats.ranks[2].tasks);
            if (round >= 6) {  // calibrated (3 samples) long before: the last three rounds
                fast += static_cast<double>(r.stats.ranks[0].tasks + r.stats.ranks[1].tasks) / 2;
                slow += static_cast<double>(r.stats.ranks[2].tasks);
            }
        }
        // Three times slower: a third of the others' share (an equal split, 1.0, fails).
        BOOST_TEST(slow / fast > 0.2);
        BOOST_TEST(slow / fast < 0.5);
        // The learned lines say the same: rank 2 predicted slower for a slice of any size here.
        const auto info = cluster.ranks();
        BOOST_REQUIRE(info.size() == 3u);
        BOOST_TEST(info[2].ops.at(0).calibrated);
        auto predict = [](const tandem::CostModelInfo& m, double n) { return m.fixed_ns + m.per_task_ns * n; };
        BOOST_TEST(predict(info[2].ops.at(0), 40000) > 1.5 * predict(info[1].ops.at(0), 40000));
    }
    finish(cluster);
}

BOOST_AUTO_TEST_CASE(a_rank_that_stalls_past_the_deadline_has_its_slice_rerun_and_every_future_completes_once) {
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, rank_2_fails([](tandem::ClusterTestHooks& h) {
                                h.stall_after_slices = 1;
                                h.stall_for = 4s;
                            })};
    const auto op = mix_op();
    cluster.add(op);
    cluster.start();
    if (cluster.is_leader()) {
        const auto values = random_values(200000, 3);
        std::atomic<int> calls{0};
        std::promise<tandem::BatchResult<std::uint64_t>> got;
        cluster.submit(op, tandem::Batch<std::uint64_t>::dense(values))
            .then([&](std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
                calls.fetch_add(1);
                if (ec) {
                    got.set_exception(std::make_exception_ptr(tandem::Error{ec}));
                } else {
                    got.set_value(std::move(r));
                }
            });
        auto r = got.get_future().get();  // the leader does not hang: the deadline fails rank 2
        expect_rerun_without_rank_2(cluster, values, r);
        // Later batches leave the failed rank out.
        auto again = cluster.submit(op, tandem::Batch<std::uint64_t>::dense(values)).get();
        for (const auto& s : again.stats.ranks) BOOST_TEST(s.rank != 2);
        cluster.shutdown();  // rank 2 wakes meanwhile; its late results are taken and dropped
        BOOST_TEST(calls.load() == 1);
    }
    finish(cluster);
}

// Heartbeats say the rank is alive; its engine does nothing. Before, nothing failed such a
// rank: the leader waited for its slice as long as the engine hung.
BOOST_AUTO_TEST_CASE(a_rank_whose_engine_hangs_while_it_answers_heartbeats_is_failed_and_its_slice_rerun) {
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, rank_2_fails([](tandem::ClusterTestHooks& h) { h.hang_engine_after_slices = 1; })};
    const auto op = mix_op();
    cluster.add(op);
    cluster.start();
    if (cluster.is_leader()) {
        const auto values = random_values(200000, 4);
        auto f = cluster.submit(op, tandem::Batch<std::uint64_t>::dense(values));
        BOOST_REQUIRE_MESSAGE(f.wait_for(30s) == std::future_status::ready, "the leader waited for a rank whose engine hangs");
        auto r = f.get();
        expect_rerun_without_rank_2(cluster, values, r);
        BOOST_TEST(cluster.ranks().at(1).up);  // the rank that made progress is not failed
    }
    finish(cluster);
}

// A rank whose engine failed pieces (their results sent as zeros, the failure said at the
// slice's end) and that then fails before that end: the zeros must not stand as results.
BOOST_AUTO_TEST_CASE(pieces_a_failed_rank_sent_as_failed_do_not_stand_as_results) {
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, rank_2_fails([](tandem::ClusterTestHooks& h) {
                                h.fail_pieces_then_stall_after_slices = 1;
                                h.stall_for = 3s;
                            })};
    // Every thousandth task fails: its error must come back once, from whichever rank ran it.
    tandem::Op<std::uint64_t, std::uint64_t> picky{"picky_mix", [](const std::uint64_t& x) -> std::uint64_t {
                                                        if (x % 1000 == 999) throw std::runtime_error{"no"};
                                                        return Mix{}(x);
                                                    }};
    cluster.add(picky);
    cluster.start();
    if (cluster.is_leader()) {
        std::vector<std::uint64_t> values(200000);
        std::iota(values.begin(), values.end(), 0);
        auto f = cluster.submit(picky, tandem::Batch<std::uint64_t>::dense(values));
        BOOST_REQUIRE(f.wait_for(30s) == std::future_status::ready);
        auto r = f.get();
        std::size_t wrong = 0;
        for (std::size_t i = 0; i < values.size(); ++i) {
            if (i % 1000 != 999) wrong += r.results[i].output != Mix{}(values[i]);
        }
        BOOST_TEST(wrong == 0u);
        std::set<std::size_t> failed;
        for (const auto& e : r.results.errors()) BOOST_TEST(failed.insert(e.index).second);  // once each
        BOOST_TEST(failed.size() == values.size() / 1000);
        for (std::size_t i : failed) BOOST_TEST(i % 1000 == 999u);
        bool rank2_failed = false, zeros_arrived = false;
        for (const auto& s : r.stats.ranks) {
            rank2_failed |= s.rank == 2 && s.failed;
            zeros_arrived |= s.rank == 2 && s.bytes_received > 0;  // the case under test happened
        }
        BOOST_TEST(rank2_failed);
        BOOST_TEST(zeros_arrived);
    }
    finish(cluster);
}

BOOST_AUTO_TEST_CASE(ops_added_in_another_order_on_a_rank_fail_at_submit_instead_of_running_the_wrong_op) {
    // Slices name an op by its place in the table: with "a, b" on the leader and "b, a" on
    // the other ranks, a batch of "a" ran "b" there (2000 of 3000 results wrong, no error).
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, cluster_config()};
    tandem::Op<std::uint64_t, std::uint64_t> a{"a", [](const std::uint64_t& x) { return x + 1; }};
    tandem::Op<std::uint64_t, std::uint64_t> b{"b", [](const std::uint64_t& x) { return x * 3; }};
    if (world_rank() == 0) {
        cluster.add(a);
        cluster.add(b);
    } else {
        cluster.add(b);
        cluster.add(a);
    }
    cluster.start();
    if (cluster.is_leader()) {
        auto f = cluster.submit(a, tandem::Batch<std::uint64_t>::dense(random_values(3000, 9)));
        BOOST_TEST((f.error() == tandem::ClusterError::OpTypeMismatch));
        BOOST_TEST(cluster.describe_op("a").find("same order") != std::string::npos, cluster.describe_op("a"));
    }
    cluster.shutdown();
}

BOOST_AUTO_TEST_CASE(an_op_missing_on_a_rank_or_with_other_types_fails_at_submit_with_a_clear_error) {
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, cluster_config()};
    tandem::Op<std::uint64_t, std::uint64_t> only_some{"only_some", Mix{}};
    tandem::Op<std::uint64_t, std::uint64_t> wide{"typed", Mix{}};
    tandem::Op<std::uint32_t, std::uint32_t> narrow{"typed", [](const std::uint32_t& x) { return x + 1; }};
    cluster.add(mix_op());
    if (world_rank() != 2) cluster.add(only_some);
    if (world_rank() == 2) {
        cluster.add(narrow);
    } else {
        cluster.add(wide);
    }
    cluster.start();
    const auto values = random_values(100, 5);
    if (cluster.is_leader()) {
        auto missing = cluster.submit(only_some, tandem::Batch<std::uint64_t>::dense(values));
        BOOST_TEST((missing.error() == tandem::ClusterError::OpNotRegistered));
        BOOST_TEST(cluster.describe_op("only_some").find("rank 2") != std::string::npos);
        auto mismatched = cluster.submit(wide, tandem::Batch<std::uint64_t>::dense(values));
        BOOST_TEST((mismatched.error() == tandem::ClusterError::OpTypeMismatch));
        BOOST_TEST(cluster.describe_op("typed").find("rank 2") != std::string::npos);
        BOOST_CHECK_THROW(mismatched.get(), tandem::Error);
        // The leader's own table is checked too: an op it never registered, or other types.
        tandem::Op<std::uint64_t, std::uint64_t> unknown{"unknown", Mix{}};
        BOOST_TEST((cluster.submit(unknown, tandem::Batch<std::uint64_t>::dense(values)).error() ==
                    tandem::ClusterError::OpNotRegistered));
        tandem::Op<std::uint32_t, std::uint32_t> wrong{"mix", [](const std::uint32_t& x) { return x; }};
        BOOST_TEST((cluster.submit(wrong, tandem::Batch<std::uint32_t>::dense(std::vector<std::uint32_t>{1, 2})).error() ==
                    tandem::ClusterError::OpTypeMismatch));
        BOOST_TEST((cluster.submit(mix_op(), tandem::Batch<std::uint64_t>{}).error() == tandem::ExecError::EmptyBatch));
        BOOST_TEST((cluster.submit(mix_op(), tandem::Batch<std::uint64_t>{{1, 1}, {1, 2}}).error() ==
                    tandem::ExecError::DuplicateTaskId));
        // The good op still runs everywhere.
        auto ok = cluster.submit(mix_op(), tandem::Batch<std::uint64_t>::dense(values)).get();
        BOOST_TEST(ok.results[99].output == Mix{}(values[99]));
    } else {
        // Leader mode belongs to the leader.
        auto f = cluster.submit(mix_op(), tandem::Batch<std::uint64_t>::dense(values));
        BOOST_TEST((f.error() == tandem::ClusterError::NotLeader));
    }
    BOOST_CHECK_THROW(cluster.add(tandem::Op<int, int>{"late", [](const int& x) { return x; }}), tandem::Error);
    finish(cluster);
}

BOOST_AUTO_TEST_CASE(shutting_down_with_batches_in_flight_completes_every_future_exactly_once) {
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, cluster_config()};
    const auto op = mix_op(32);
    cluster.add(op);
    cluster.start();
    if (cluster.is_leader()) {
        const auto values = random_values(100000, 9);
        constexpr int batches = 12;
        std::atomic<int> calls{0}, ok{0}, shut{0}, other{0};
        for (int i = 0; i < batches; ++i) {
            cluster.submit(op, tandem::Batch<std::uint64_t>::dense(values))
                .then([&](std::error_code ec, tandem::BatchResult<std::uint64_t>) {
                    calls.fetch_add(1);
                    if (!ec) {
                        ok.fetch_add(1);
                    } else if (ec == tandem::ExecError::ShutDown) {
                        shut.fetch_add(1);
                    } else {
                        other.fetch_add(1);
                    }
                });
        }
        cluster.shutdown();
        BOOST_TEST(calls.load() == batches);
        BOOST_TEST(ok.load() + shut.load() == batches);
        BOOST_TEST(other.load() == 0);
        // After shutdown: refused at once.
        auto late = cluster.submit(op, tandem::Batch<std::uint64_t>::dense(values));
        BOOST_TEST((late.error() == tandem::ExecError::ShutDown));
        std::this_thread::sleep_for(50ms);
        BOOST_TEST(calls.load() == batches);  // and nothing ran twice
    }
    finish(cluster);
}

// The leader's engine writes the outputs of the leader's own slice in place: a batch that is
// cancelled (or fails, or is shut down) may complete only once that engine batch stopped
// running, or its outputs would change after its future is ready.
BOOST_AUTO_TEST_CASE(a_cancelled_batch_completes_only_after_the_leaders_own_slice_stopped_running) {
    static std::atomic<long> ran{0};  // tasks this process ran
    tandem::Op<std::uint64_t, std::uint64_t> slow{"slow_count", [](const std::uint64_t& x) {
                                                       std::this_thread::sleep_for(20us);
                                                       ran.fetch_add(1);
                                                       return x + 1;
                                                   }};
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, cluster_config()};
    cluster.add(slow);
    cluster.start();
    if (cluster.is_leader()) {
        auto f = cluster.submit(slow, tandem::Batch<std::uint64_t>::dense(random_values(30000, 5)));
        const auto give_up = std::chrono::steady_clock::now() + 20s;
        while (ran.load() == 0 && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(1ms);
        BOOST_REQUIRE(ran.load() > 0);  // the leader's engine is running its slice
        f.cancel();
        f.wait();
        BOOST_TEST((f.error() == tandem::ExecError::Cancelled));
        const long at_ready = ran.load();
        std::this_thread::sleep_for(200ms);
        BOOST_TEST(ran.load() == at_ready);  // nothing ran on the leader after the future was ready
    }
    finish(cluster);
}

BOOST_AUTO_TEST_CASE(spmd_gather_collects_every_ranks_results_on_the_root_in_rank_order) {
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, cluster_config()};
    const auto op = mix_op();
    cluster.add(op);
    cluster.start();
    const int me = cluster.rank();
    // Rank r runs 1000 * (r + 1) + 1 tasks with ids from 1'000'000 * r.
    const std::size_t mine = 1000 * static_cast<std::size_t>(me + 1) + 1;
    const auto values = random_values(mine, 100 + static_cast<std::uint64_t>(me));
    auto local = engine.submit(op, tandem::Batch<std::uint64_t>::dense(values, 1'000'000ull * static_cast<std::uint64_t>(me))).get();
    for (int root : {0, 1}) {
        BOOST_TEST_CONTEXT("root " << root) {
            auto local_copy = engine.submit(op, tandem::Batch<std::uint64_t>::dense(values, 1'000'000ull * static_cast<std::uint64_t>(me))).get();
            auto gathered = cluster.gather(std::move(local_copy), root).get();
            if (me == root) {
                BOOST_REQUIRE(gathered.results.size() == 1001u + 2001u + 3001u);
                BOOST_REQUIRE(gathered.stats.ranks.size() == 3u);
                std::size_t at = 0;
                for (int r = 0; r < 3; ++r) {
                    const auto theirs = random_values(1000 * static_cast<std::size_t>(r + 1) + 1, 100 + static_cast<std::uint64_t>(r));
                    BOOST_TEST(gathered.stats.ranks[static_cast<std::size_t>(r)].tasks == theirs.size());
                    BOOST_TEST(gathered.results[at].id == 1'000'000ull * static_cast<std::uint64_t>(r));
                    bool same = true;
                    for (std::size_t i = 0; i < theirs.size(); ++i) same &= gathered.results[at + i].output == Mix{}(theirs[i]);
                    BOOST_TEST(same);
                    at += theirs.size();
                }
            } else {
                BOOST_TEST(gathered.results.size() == 0u);
            }
        }
    }
    BOOST_TEST(local.results.size() == mine);
    finish(cluster);
}

BOOST_AUTO_TEST_CASE(cluster_futures_work_with_co_await_and_then) {
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, cluster_config()};
    const auto op = mix_op();
    cluster.add(op);
    cluster.start();
    if (cluster.is_leader()) {
        const auto values = random_values(50000, 11);
        std::uint64_t expected = 0;
        for (auto v : values) expected += Mix{}(v);
        std::promise<std::uint64_t> sum;
        sum_outputs(cluster, op, tandem::Batch<std::uint64_t>::dense(values), sum);
        BOOST_TEST(sum.get_future().get() == expected);

        std::promise<std::uint64_t> via_then;
        cluster.submit(op, tandem::Batch<std::uint64_t>::dense(values))
            .then([&](std::error_code ec, tandem::BatchResult<std::uint64_t> r) {
                std::uint64_t s = 0;
                if (!ec) {
                    for (auto v : r.results.outputs()) s += v;
                }
                via_then.set_value(s);
            });
        BOOST_TEST(via_then.get_future().get() == expected);

        // A cancelled batch reports Cancelled.
        auto big = cluster.submit(mix_op(), tandem::Batch<std::uint64_t>::dense(random_values(2'000'000, 12)));
        big.cancel();
        big.wait();
        BOOST_TEST(((big.error() == tandem::ExecError::Cancelled) || !big.error()));
    }
    finish(cluster);
}

BOOST_AUTO_TEST_CASE(a_cluster_configuration_out_of_range_is_refused_naming_the_field) {
    tandem::Engine engine{engine_config()};
    tandem::ClusterConfig c = cluster_config();
    c.slowdown = 0.5;
    try {
        tandem::Cluster cluster{engine, c};
        BOOST_TEST(false, "no exception");
    } catch (const std::invalid_argument& e) {
        BOOST_TEST(std::string{e.what()}.find("slowdown") != std::string::npos);
    }
    c = cluster_config();
    c.heartbeat = c.deadline;
    BOOST_CHECK_THROW((tandem::Cluster{engine, c}), std::invalid_argument);
}

// A gather part whose data is still arriving when the root's shutdown grace runs out: the
// receives MPI could not cancel are left to it, and the memory they write into must outlive
// the gather (before, it was freed with it, and the late data landed in freed memory: the
// address sanitizer build reported a heap-use-after-free). Rank 1 sends its part's header,
// stalls past the root's grace, then sends the data; the root keeps MPI progressing
// meanwhile, as a process that goes on using MPI would.
BOOST_AUTO_TEST_CASE(a_gather_part_still_arriving_after_the_shutdown_grace_lands_in_memory_kept_for_it) {
    tandem::Engine engine{engine_config()};
    tandem::ClusterConfig config = cluster_config();
    config.shutdown_grace = 200ms;
    const int me = world_rank();
    std::atomic<long> left_to_mpi{0}, posted{0};
    if (me == 0) {
        config.test_hooks.gather_receives_uncancellable = true;
        config.test_hooks.gather_receives_left = &left_to_mpi;
        config.test_hooks.gather_receives_posted = &posted;
    }
    if (me == 1) {
        // Long past the root's grace (200 ms) and the half second it then gives MPI, so that
        // a loaded machine cannot close the gap.
        config.test_hooks.stall_before_gather_data = true;
        config.test_hooks.stall_for = 5s;
    }
    tandem::Cluster cluster{engine, config};
    const auto op = mix_op();
    cluster.add(op);
    cluster.start();
    // Small parts: each travels in one eager message, copied into the receive's buffer by the
    // receiving process whenever it progresses MPI.
    auto local = engine.submit(op, tandem::Batch<std::uint64_t>::dense(random_values(64, 200 + static_cast<std::uint64_t>(me)))).get();
    auto gathered = cluster.gather(std::move(local), 0);
    if (me == 0) {
        // Rank 1's header is in once the receives into its part (and rank 2's) are posted.
        const auto give_up = std::chrono::steady_clock::now() + 30s;
        while (posted.load() < 4 && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(1ms);
        BOOST_REQUIRE(posted.load() >= 4);
        cluster.shutdown();
        try {
            gathered.get();
            BOOST_TEST(false, "the gather completed without rank 1's part");
        } catch (const tandem::Error& e) {
            BOOST_TEST((e.code() == tandem::ExecError::ShutDown));
        }
        // The case this test is about happened: receives into rank 1's part were still open
        // when the grace ran out, and were left to MPI.
        BOOST_TEST(left_to_mpi.load() > 0);
        // Rank 1 sends its data about 5 s after the gather; progress MPI until well after.
        const auto until = std::chrono::steady_clock::now() + 6s;
        while (std::chrono::steady_clock::now() < until) {
            int flag = 0;
            MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
            std::this_thread::sleep_for(1ms);
        }
    } else {
        BOOST_CHECK_NO_THROW(gathered.get());  // its part was sent (the root did not take it in)
    }
    finish(cluster);
}

BOOST_AUTO_TEST_CASE(shutdown_called_from_a_continuation_on_the_transport_thread_does_not_deadlock) {
    tandem::Engine engine{engine_config()};
    tandem::Cluster cluster{engine, cluster_config()};
    const auto op = mix_op();
    cluster.add(op);
    cluster.start();
    if (cluster.is_leader()) {
        std::promise<std::error_code> seen;
        cluster.submit(op, tandem::Batch<std::uint64_t>::dense(random_values(10000, 13)))
            .then([&](std::error_code ec, tandem::BatchResult<std::uint64_t>) {
                cluster.shutdown();  // on the transport thread: starts the shutdown, returns
                seen.set_value(ec);
            });
        BOOST_TEST(!seen.get_future().get());
    }
    finish(cluster);  // from this thread: waits for the shutdown to end
}
