// The placement policy's cost curve (engine/src/cost_model.hpp), alone: what it predicts with
// no point, one point, between points, below and above them, and how it treats outliers,
// drift and a bad saved state, how it is inverted, and how a batch is split between lanes with
// such curves. Internal code: this test sees the engine's private headers.
#define BOOST_TEST_MODULE cost_model
#include <boost/test/unit_test.hpp>

#include "cost_model.hpp"
#include "placement.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

using tandem::detail::CostCurve;
using tandem::detail::CostLine;
using tandem::detail::size_bucket;

namespace {

tandem::ModelConfig config() { return tandem::ModelConfig{}; }

bool near(double value, double expected, double tolerance = 1e-9) {
    return std::abs(value - expected) <= tolerance * std::max(1.0, std::abs(expected));
}

/// A curve with the given points (one per size class).
CostCurve curve_of(std::initializer_list<std::pair<double, double>> points, bool proportional = false) {
    CostCurve c;
    c.proportional = proportional;
    for (auto [x, y] : points) {
        c.x[size_bucket(x)] = x;
        c.y[size_bucket(x)] = y;
    }
    return c;
}

/// A device line fed exact samples of fixed + per_task × n at the given sizes.
CostLine device_line(std::initializer_list<double> sizes, double fixed = 20000, double per_task = 2) {
    CostLine line;
    for (double n : sizes) line.add(n, fixed + per_task * n, config());
    return line;
}

}  // namespace

BOOST_AUTO_TEST_CASE(size_classes_are_powers_of_two_and_clamped) {
    BOOST_TEST(size_bucket(0) == 0u);
    BOOST_TEST(size_bucket(1) == 0u);
    BOOST_TEST(size_bucket(2) == 1u);
    BOOST_TEST(size_bucket(3) == 1u);
    BOOST_TEST(size_bucket(4096) == 12u);
    BOOST_TEST(size_bucket(1e30) == tandem::detail::size_buckets - 1);
    BOOST_TEST(size_bucket(std::numeric_limits<double>::quiet_NaN()) == 0u);
}

BOOST_AUTO_TEST_CASE(an_empty_curve_predicts_nothing_and_has_no_slope) {
    const CostCurve c;
    BOOST_TEST(c.empty());
    BOOST_TEST(c.predict(1000) == 0.0);
    BOOST_TEST(c.slope(1000) == 0.0);
}

BOOST_AUTO_TEST_CASE(one_point_is_flat_below_for_a_device_and_proportional_above) {
    const CostLine line = device_line({1000});
    BOOST_TEST(near(line.predict(1000), 22000));
    BOOST_TEST(near(line.predict(10), 22000));    // cautious: the fixed cost is unknown
    BOOST_TEST(near(line.predict(2000), 44000));  // one point: proportional above it
}

BOOST_AUTO_TEST_CASE(one_point_is_proportional_below_for_the_cpu) {
    CostLine line{true};
    line.add(1000, 50000, config());
    BOOST_TEST(near(line.predict(10), 500));
}

BOOST_AUTO_TEST_CASE(a_straight_cost_is_reproduced_between_beyond_and_at_the_points) {
    const CostLine line = device_line({100, 1000, 100000});
    for (double n : {100.0, 300.0, 1000.0, 5000.0, 100000.0, 1e7}) {
        BOOST_TEST(near(line.predict(n), 20000 + 2 * n, 1e-9), n << " tasks: " << line.predict(n));
    }
    BOOST_TEST(near(line.curve().slope(5000), 2));
    BOOST_TEST(near(line.predict(1), 20200));  // below the smallest point: that point's time
}

BOOST_AUTO_TEST_CASE(a_spike_at_a_measured_size_is_an_outlier_and_changes_nothing) {
    CostLine line = device_line({100, 1000, 100000});
    const double before = line.predict(1000);
    BOOST_TEST((line.add(1000, 100 * before, config()) == CostLine::Verdict::Outlier));
    BOOST_TEST(line.predict(1000) == before);
    BOOST_TEST(line.outliers() == 1u);
}

BOOST_AUTO_TEST_CASE(a_sample_at_a_size_never_measured_is_never_an_outlier) {
    // A curve fitted on small batches has no say on a large one.
    CostLine line = device_line({100, 200, 400});
    BOOST_TEST((line.add(1e6, 5e6, config()) == CostLine::Verdict::Taken));
    BOOST_TEST(near(line.predict(1e6), 5e6));
}

BOOST_AUTO_TEST_CASE(a_streak_of_outliers_on_one_side_restarts_the_curve_from_them) {
    CostLine line = device_line({100, 1000, 100000});
    const auto cfg = config();
    CostLine::Verdict last = CostLine::Verdict::Taken;
    for (std::size_t i = 0; i < cfg.outlier_streak; ++i) last = line.add(1000, 10 * 22000, cfg);
    BOOST_TEST((last == CostLine::Verdict::Restarted));
    BOOST_TEST(near(line.predict(1000), 220000));
}

// The other size classes are carried over a restart, scaled by the change, until their own
// next sample: before, they were dropped, and a device's curve with one point at 1000 tasks
// priced 100 000 tasks at 100 times that point (22 ms) where the device takes 2.2 ms.
BOOST_AUTO_TEST_CASE(a_restart_carries_the_other_sizes_over_scaled_until_their_next_sample) {
    CostLine line = device_line({100, 1000, 100000});
    const auto cfg = config();
    for (std::size_t i = 0; i < cfg.outlier_streak; ++i) line.add(1000, 10 * 22000, cfg);
    BOOST_TEST(near(line.predict(1000), 220000));
    BOOST_TEST(near(line.predict(100000), 10 * 220000.0, 1e-6), line.predict(100000));
    BOOST_TEST(near(line.predict(100), 10 * 20200.0, 1e-6), line.predict(100));
    // A size that did not change: its first sample replaces the estimate, and is no outlier.
    BOOST_TEST((line.add(100000, 220000, cfg) == CostLine::Verdict::Taken));
    BOOST_TEST(near(line.predict(100000), 220000));
    // Its next samples are checked again.
    BOOST_TEST((line.add(100000, 100 * 220000.0, cfg) == CostLine::Verdict::Outlier));
}

// A carried class's first sample far slower than its estimate (a spike: a first batch that also
// paid a one-off cost) waits for a second opinion, as a class never measured does. Taken, it
// made the normal samples after it restart the whole curve, scaled by the spike's inverse
// (220 µs at 1000 tasks, just measured, fell to 11 µs).
BOOST_AUTO_TEST_CASE(a_spike_as_a_carried_classs_first_sample_does_not_restart_the_curve_again) {
    CostLine line = device_line({100, 1000, 100000});
    const auto cfg = config();
    for (std::size_t i = 0; i < cfg.outlier_streak; ++i) line.add(1000, 10 * 22000, cfg);
    BOOST_TEST((line.add(100000, 20 * 2200000.0, cfg) == CostLine::Verdict::Outlier));
    for (int i = 0; i < 3; ++i) BOOST_TEST((line.add(100000, 2200000, cfg) == CostLine::Verdict::Taken));
    BOOST_TEST(near(line.predict(1000), 220000));
    BOOST_TEST(near(line.predict(100000), 2200000));
}

// Carried classes survive a save and restore as carried: the restored line takes the next
// sample of a size that did not change (before, it refused it as an outlier for good).
BOOST_AUTO_TEST_CASE(carried_classes_stay_carried_through_the_model_state) {
    CostLine line = device_line({100, 1000, 100000});
    const auto cfg = config();
    for (std::size_t i = 0; i < cfg.outlier_streak; ++i) line.add(1000, 10 * 22000, cfg);
    CostLine restored;
    BOOST_REQUIRE(restored.restore(line.state()));
    BOOST_TEST((restored.add(100000, 220000, cfg) == CostLine::Verdict::Taken));
    BOOST_TEST(near(restored.predict(100000), 220000));
    // A carried flag on an empty class is not a valid state.
    CostLine::State bad = line.state();
    bad.carried[size_bucket(1e9)] = 1;
    BOOST_TEST(!CostLine{}.restore(bad));
}

// A streak of samples of 0 ns tells no change: nothing is carried over at a made-up scale.
BOOST_AUTO_TEST_CASE(a_streak_of_zero_samples_carries_nothing_over) {
    CostLine line = device_line({100, 1000, 100000});
    const auto cfg = config();
    CostLine::Verdict last = CostLine::Verdict::Taken;
    for (std::size_t i = 0; i < cfg.outlier_streak; ++i) last = line.add(1000, 0, cfg);
    BOOST_TEST((last == CostLine::Verdict::Restarted));
    for (const auto c : line.state().carried) BOOST_TEST(c == 0);
}

BOOST_AUTO_TEST_CASE(a_clear_move_of_one_size_class_carries_the_others_along) {
    CostLine line = device_line({100, 1000, 100000});
    for (int i = 0; i < 30; ++i) line.add(100000, 2 * (20000 + 2 * 100000.0), config());
    BOOST_TEST(near(line.predict(100000), 2 * 220000, 0.01));
    BOOST_TEST(near(line.predict(1000), 2 * 22000, 0.05), line.predict(1000));  // never ran again
}

BOOST_AUTO_TEST_CASE(noise_within_a_size_class_is_not_read_as_drift) {
    CostLine line = device_line({100, 1000, 100000});
    for (int i = 0; i < 500; ++i) {
        const double n = 2100 + (i * 37) % 1900;
        line.add(n, 20000 + 2 * n, config());
    }
    BOOST_TEST(near(line.predict(100000), 220000, 0.02), line.predict(100000));
    BOOST_TEST(near(line.predict(100), 20200, 0.02), line.predict(100));
}

BOOST_AUTO_TEST_CASE(invalid_samples_and_saved_states_are_refused) {
    CostLine line;
    BOOST_TEST((line.add(0, 1, config()) == CostLine::Verdict::Invalid));
    BOOST_TEST((line.add(10, -1, config()) == CostLine::Verdict::Invalid));
    BOOST_TEST((line.add(10, std::numeric_limits<double>::infinity(), config()) == CostLine::Verdict::Invalid));
    CostLine::State s;
    s.samples = 3;  // samples but no point
    BOOST_TEST(!line.restore(s));
    s.buckets[3] = CostLine::Bucket{1, 100, 5};  // average size 100 is not in class 3 (8..15)
    BOOST_TEST(!line.restore(s));
    s.buckets[3] = CostLine::Bucket{1, 10, 5};
    BOOST_TEST(line.restore(s));
    BOOST_TEST(near(line.predict(10), 5));
}

BOOST_AUTO_TEST_CASE(inverting_a_curve_gives_the_largest_size_a_deadline_allows_everywhere_on_it) {
    // A device: flat below its first point (its fixed cost), kinks between points, the last
    // segment extended.
    const CostCurve device = curve_of({{100, 20000}, {1000, 22000}, {100000, 300000}, {1000000, 4000000}});
    for (double n : {100.0, 500.0, 1000.0, 5000.0, 100000.0, 400000.0, 1000000.0, 3000000.0}) {
        BOOST_TEST(near(device.invert(device.predict(n)), n, 1e-9), n << " -> " << device.invert(device.predict(n)));
    }
    BOOST_TEST(device.invert(19999) == 0.0);  // not even one batch by then: the fixed cost
    // The CPU: proportional below its first point.
    const CostCurve cpu = curve_of({{16, 16000}, {4096, 4096000}}, true);
    BOOST_TEST(near(cpu.invert(8000), 8));
    BOOST_TEST(near(cpu.invert(1e9), 1e6));
    // Flat beyond the last point (a slope clamped at 0), and an empty curve: no limit. A last
    // point cheaper than the one before: the curve stays at the one before's time everywhere
    // (before, invert took the last point's time for the level beyond it: +infinity at 4500).
    const CostCurve falling = curve_of({{100, 5000}, {1000, 4000}});
    BOOST_TEST(falling.invert(6000) == std::numeric_limits<double>::infinity());
    BOOST_TEST(falling.predict(2000) == 5000.0);
    BOOST_TEST(falling.invert(4500) == 0.0);
    BOOST_TEST(CostCurve{}.invert(1) == std::numeric_limits<double>::infinity());
}

namespace {

/// The finish of the best split of n between a CPU lane and devices, by brute force over the
/// CPU's share (one device) or both shares (two devices), on a fine grid.
double brute_force_finish(const tandem::detail::LaneCost& cpu, const std::vector<tandem::detail::LaneCost>& devices,
                          std::size_t workers, double n, double task_cost = 1) {
    auto device_time = [](const tandem::detail::LaneCost& d, double x) { return x <= 0 ? 0 : d.queued + d.curve.predict(x); };
    auto cpu_time = [&](double x) {
        if (x <= 0) return 0.0;
        const double w = static_cast<double>(workers);
        const double k = std::clamp(std::ceil(x / task_cost), 1.0, w);  // a worker per task at most
        // The stretch, in proportion to the workers engaged (none on one worker).
        const double stretch = workers > 1 ? 1 + (cpu.stretch - 1) * (k - 1) / (w - 1) : 1.0;
        return cpu.queued / w + cpu.curve.predict(x) / k * stretch + cpu.dispatch_ns * (k + 1) / 2;
    };
    double best = std::numeric_limits<double>::infinity();
    constexpr int steps = 2000;
    for (int i = 0; i <= steps; ++i) {
        const double c = n * i / steps;
        if (devices.size() == 1) {
            best = std::min(best, std::max(cpu_time(c), device_time(devices[0], n - c)));
        } else {
            for (int j = 0; j <= steps - i; j += 4) {
                const double d0 = n * j / steps;
                best = std::min(best, std::max({cpu_time(c), device_time(devices[0], d0), device_time(devices[1], n - c - d0)}));
            }
        }
    }
    return best;
}

}  // namespace

// Linearizing each lane's curve at its share and water-filling the lines (the split before)
// finished this 4 M batch at 98.0 ms against 85.1 ms for the best split (15% off): the device's
// last segment is steeper than its average, and the lines never settled.
BOOST_AUTO_TEST_CASE(a_split_over_curves_with_kinks_finishes_where_the_best_split_does) {
    using tandem::detail::LaneCost;
    const CostCurve cpu = curve_of({{16, 16 * 1150.0}, {4000, 4000 * 1150.0}, {150000, 150000 * 1150.0},
                                    {700000, 700000 * 1150.0}}, true);
    const CostCurve gpu = curve_of({{16, 30000}, {250, 35000}, {4000, 80000}, {62000, 680000}, {900000, 13.5e6},
                                    {3.3e6, 13.5e6 + 2.4e6 * 36}});
    const CostCurve other = curve_of({{16, 50000}, {4000, 150000}, {100000, 2e6}, {2e6, 60e6}});
    const LaneCost c{0, cpu, 2000};
    for (double n : {100000.0, 1e6, 4e6}) {
        BOOST_TEST_CONTEXT(n << " tasks") {
            std::vector<double> shares;
            const std::vector<LaneCost> one{LaneCost{0, gpu, 0}};
            const double finish = tandem::detail::fill_curves(&c, one, 15, n, 1.0, shares);
            BOOST_TEST(near(shares[0] + shares[1], n, 1e-9));
            BOOST_TEST(near(finish, brute_force_finish(c, one, 15, n), 0.005), "one device: " << finish);
            const std::vector<LaneCost> two{LaneCost{0, gpu, 0}, LaneCost{50000, other, 0}};
            const double finish2 = tandem::detail::fill_curves(&c, two, 15, n, 1.0, shares);
            BOOST_TEST(near(shares[0] + shares[1] + shares[2], n, 1e-9));
            BOOST_TEST(finish2 <= brute_force_finish(c, two, 15, n) * 1.005, "two devices: " << finish2);
        }
    }
}

// A few costly tasks: a CPU share of 2 tasks runs on 2 workers, not spread over 15. Counting
// every worker, the split gave the CPU too little (99 µs against a best of 55 µs).
BOOST_AUTO_TEST_CASE(a_split_of_a_few_costly_tasks_counts_one_worker_per_task) {
    using tandem::detail::LaneCost;
    const double task_cost = 1e5;  // 8 tasks of cost 1e5 each, 1 ns per cost unit on a worker
    const CostCurve cpu = curve_of({{1e5, 1e5}, {1e6, 1e6}}, true);
    const CostCurve gpu = curve_of({{1e4, 20000}, {1e6, 60000}});
    const LaneCost c{0, cpu, 2000};
    const std::vector<LaneCost> one{LaneCost{0, gpu, 0}};
    const double n = 8 * task_cost;
    std::vector<double> shares;
    const double finish = tandem::detail::fill_curves(&c, one, 15, n, task_cost, shares);
    BOOST_TEST(near(finish, brute_force_finish(c, one, 15, n, task_cost), 0.01), finish);
}

// Fewer tasks than workers, with a dispatch cost: a share of k tasks pays k dispatches.
// Counting a fixed worker count per share missed the best split by up to 1.58x (12 tasks of
// 500 ns against a 5 µs + 1 µs/task device: 17.0 µs against 11.0 µs).
BOOST_AUTO_TEST_CASE(a_split_of_fewer_tasks_than_workers_is_as_good_as_the_best_by_brute_force) {
    using tandem::detail::LaneCost;
    std::uint64_t seed = 12345;
    auto next = [&seed] {  // a fixed sequence (splitmix64), the same on every run
        seed += 0x9e3779b97f4a7c15ull;
        std::uint64_t z = seed;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return static_cast<double>((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
    };
    for (int i = 0; i < 300; ++i) {
        const double per_task = 100 + 900 * next(), dispatch = 5000 * next();
        const double fixed = 20000 * next(), device_per_task = 2000 * next();
        const double tasks = i == 0 ? 12 : std::floor(1 + 40 * next());
        const LaneCost c{0, i == 0 ? curve_of({{1, 500}, {1000, 500000}}, true) : curve_of({{1, per_task}, {1000, 1000 * per_task}}, true),
                         i == 0 ? 3000 : dispatch};
        const std::vector<LaneCost> one{i == 0 ? LaneCost{0, curve_of({{1, 6000}, {1000, 1005000}}), 0}
                                               : LaneCost{0, curve_of({{1, fixed + device_per_task}, {1000, fixed + 1000 * device_per_task}}), 0}};
        std::vector<double> shares;
        const double finish = tandem::detail::fill_curves(&c, one, 15, tasks, 1.0, shares);
        const double best = brute_force_finish(c, one, 15, tasks);
        BOOST_TEST_CONTEXT("case " << i << ": " << tasks << " tasks") {
            BOOST_TEST(finish <= best * 1.01, finish << " against " << best);
        }
    }
}

// The CPU's stretch: its workers take 1.25x their worker time / 15 for a batch spread over all
// of them (measured on an H200 host for SHA-256: 1 M tasks in 85 ms where the worker time / 15
// was 68 ms). Counting worker time only, the split gave the CPU a share it finished 25% after
// the device; with the stretch counted, both finish together at the best split's time.
BOOST_AUTO_TEST_CASE(a_split_counts_the_cpus_stretch_and_gives_it_the_share_it_finishes_in_time) {
    using tandem::detail::LaneCost;
    const CostCurve cpu = curve_of({{1000, 1000 * 1000.0}, {1e6, 1e6 * 1000.0}}, true);  // 1 µs per task
    const CostCurve gpu = curve_of({{1000, 25000 + 1000 * 20.0}, {4e6, 25000 + 4e6 * 20}});
    const std::vector<LaneCost> one{LaneCost{0, gpu, 0}};
    const double n = 4e6, stretch = 1.25;
    std::vector<double> naive, counted;
    const LaneCost plain{0, cpu, 2000};
    tandem::detail::fill_curves(&plain, one, 15, n, 1.0, naive);
    const LaneCost stretched{0, cpu, 2000, stretch};
    const double finish = tandem::detail::fill_curves(&stretched, one, 15, n, 1.0, counted);
    BOOST_TEST(near(counted[0] + counted[1], n, 1e-9));
    BOOST_TEST(near(finish, brute_force_finish(stretched, one, 15, n), 0.005), finish);
    // What each side really takes for its share: the CPU stretched, the device by its curve.
    auto cpu_real = [&](double x) { return x * 1000.0 / 15 * stretch + 2000 * 8; };
    auto gpu_real = [&](double x) { return 25000 + x * 20; };
    BOOST_TEST(near(cpu_real(counted[0]), gpu_real(counted[1]), 0.01), cpu_real(counted[0]) << " against " << gpu_real(counted[1]));
    BOOST_TEST(cpu_real(naive[0]) > 1.2 * gpu_real(naive[1]), "the split without the stretch: " << cpu_real(naive[0]));
    // A CPU share on fewer workers than there are (a few costly tasks) is stretched in
    // proportion to the workers it engages: still the best split by brute force.
    const std::vector<LaneCost> slow{LaneCost{0, curve_of({{1e4, 20000}, {1e6, 60000}}), 0}};
    std::vector<double> few;
    const double few_finish = tandem::detail::fill_curves(&stretched, slow, 15, 8e5, 1e5, few);
    BOOST_TEST(near(few_finish, brute_force_finish(stretched, slow, 15, 8e5, 1e5), 0.01), few_finish);
}

BOOST_AUTO_TEST_CASE(the_cpus_stretch_starts_from_a_capped_first_sample_then_averages_clamped_samples) {
    const tandem::ModelConfig c;
    tandem::detail::OpModel m{"op", 0, c, std::make_shared<tandem::detail::QueuedWork>(0), 4, true};
    BOOST_TEST(m.cpu_stretch() == 1.0);  // nothing learned: worker time / workers
    m.learn_stretch(3);  // the first sample counts as at most 1.5
    BOOST_TEST(m.cpu_stretch() == 1.5);
    m.learn_stretch(0.5);  // a span shorter than worker time / workers (a helping caller): 1
    BOOST_TEST(near(m.cpu_stretch(), 1.5 + (1.0 - 1.5) / 8));
    for (int i = 0; i < 200; ++i) m.learn_stretch(1e6);  // a stalled worker counts as 1 + 0.9 · 3 at most
    BOOST_TEST(near(m.cpu_stretch(), 3.7, 1e-6));
    m.learn_stretch(std::numeric_limits<double>::quiet_NaN());
    BOOST_TEST(near(m.cpu_stretch(), 3.7, 1e-6));
    // Off: not counted, even when set (from a model file).
    tandem::detail::OpModel off{"op", 0, c, std::make_shared<tandem::detail::QueuedWork>(0), 4, false};
    off.restore_stretch(2);
    BOOST_TEST(off.cpu_stretch() == 1.0);
    BOOST_TEST(off.stretch_state() == 2.0);
}

BOOST_AUTO_TEST_CASE(a_devices_start_delay_is_the_least_of_its_first_samples_then_an_average_that_spikes_barely_move) {
    tandem::detail::QueuedWork q{1};
    BOOST_TEST(q.start_of(0) == 0.0);  // none yet
    for (double ns : {40000.0, 15000.0, 30000.0, 20000.0}) q.learn_start(0, ns);
    BOOST_TEST(q.start_of(0) == 15000.0);  // one slow first start is not what the device does
    q.learn_start(0, 15e6);  // a descheduled thread: counted as twice the average
    BOOST_TEST(near(q.start_of(0), 15000 + 15000.0 / 8));
    for (int i = 0; i < 200; ++i) q.learn_start(0, 20000);
    BOOST_TEST(near(q.start_of(0), 20000, 0.001));
    // An average of 0 still rises (a sample counts as at most 1 µs above it, then twice it).
    tandem::detail::QueuedWork z{1};
    for (int i = 0; i < 4; ++i) z.learn_start(0, 0);
    for (int i = 0; i < 300; ++i) z.learn_start(0, 20000);
    BOOST_TEST(near(z.start_of(0), 20000, 0.01), z.start_of(0));
}

// Before, two completions racing on the first samples could store 0 over the first sample,
// and 0 then held for good (a sample is capped at twice the average).
BOOST_AUTO_TEST_CASE(racing_first_samples_never_pin_a_start_delay_at_zero) {
    for (int round = 0; round < 200; ++round) {
        tandem::detail::QueuedWork q{1};
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t) {
            threads.emplace_back([&q] {
                for (int i = 0; i < 8; ++i) q.learn_start(0, 10000);
            });
        }
        for (auto& t : threads) t.join();
        BOOST_REQUIRE(near(q.start_of(0), 10000));
    }
}

// The first batch of a new, larger size that also paid a one-off cost (page-locking fresh
// memory: 35 ms where 2 ms was usual, seen on an H200 host) was taken as that size's cost, and
// placement then kept batches of that size off the device, so nothing corrected it. Now such
// a first sample is checked against the lines through the other sizes; a size that really
// costs that much is learned after `outlier_streak` samples, keeping the other sizes.
BOOST_AUTO_TEST_CASE(a_first_sample_of_a_new_size_far_slower_than_the_others_suggest_waits_for_a_second_opinion) {
    CostLine line = device_line({100, 1000, 100000});
    const double usual = 20000 + 2 * 1e6;
    BOOST_TEST((line.add(1e6, 17.5 * usual, config()) == CostLine::Verdict::Outlier));
    BOOST_TEST(near(line.predict(1e6), usual, 0.01), line.predict(1e6));
    BOOST_TEST((line.add(1e6, usual, config()) == CostLine::Verdict::Taken));  // the usual cost: taken
    BOOST_TEST(near(line.predict(1e6), usual, 0.01));
    // A size that does cost ten times more is learned at its `outlier_streak`-th sample, even
    // with other sizes in between, and the rest of the curve is kept.
    const double cliff = 10 * (20000 + 2 * 4e6);
    CostLine steep = device_line({100, 1000, 100000});
    BOOST_TEST((steep.add(4e6, cliff, config()) == CostLine::Verdict::Outlier));
    steep.add(1000, 22000, config());
    BOOST_TEST((steep.add(4e6, cliff, config()) == CostLine::Verdict::Outlier));
    steep.add(100000, 220000, config());
    BOOST_TEST((steep.add(4e6, cliff, config()) == CostLine::Verdict::Taken));
    BOOST_TEST(near(steep.predict(4e6), cliff, 0.01), steep.predict(4e6));
    BOOST_TEST(near(steep.predict(1000), 22000, 0.01), steep.predict(1000));
    // Refused first samples of a new size never join the known sizes' streak: a spike at a
    // known size after them is one spike, not a restart of the whole curve.
    CostLine mixed = device_line({100, 1000, 100000, 1000000});
    mixed.add(16e6, 10 * (20000 + 2 * 16e6), config());
    mixed.add(16e6, 10 * (20000 + 2 * 16e6), config());
    BOOST_TEST((mixed.add(1000, 220000, config()) == CostLine::Verdict::Outlier));
    BOOST_TEST(near(mixed.predict(1000), 22000, 0.01), mixed.predict(1000));
    BOOST_TEST(near(mixed.predict(1e6), usual, 0.01), mixed.predict(1e6));
    // Below the smallest measured size, a first sample is taken as it comes (a device's fixed
    // cost makes it far slower than the lines through larger sizes).
    CostLine small = device_line({10000, 100000}, 20000, 2);
    BOOST_TEST((small.add(16, 20000, config()) == CostLine::Verdict::Taken));
    BOOST_TEST(near(small.predict(16), 20000, 0.01), small.predict(16));
}
