// The placement policy's cost curve (engine/src/cost_model.hpp), alone: what it predicts with
// no point, one point, between points, below and above them, and how it treats outliers,
// drift and a bad saved state. Internal code: this test sees the engine's private headers.
#define BOOST_TEST_MODULE cost_model
#include <boost/test/unit_test.hpp>

#include "cost_model.hpp"

#include <cmath>
#include <limits>

using tandem::detail::CostCurve;
using tandem::detail::CostLine;
using tandem::detail::size_bucket;

namespace {

tandem::ModelConfig config() { return tandem::ModelConfig{}; }

bool near(double value, double expected, double tolerance = 1e-9) {
    return std::abs(value - expected) <= tolerance * std::max(1.0, std::abs(expected));
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
