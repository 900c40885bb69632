#pragma once
// Internal (scheduling policy): the cost of one op on one device, learned from samples.

#include <tandem/config.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace tandem::detail {

/// Batch sizes are grouped by their power of two: bucket b holds sizes [2^b, 2^(b+1)).
constexpr std::size_t size_buckets = 48;

/// The learned cost of n tasks as placement reads it: one point per size bucket that has
/// samples (the bucket's average size and time), joined by straight lines; beyond the
/// smallest and largest points, the line through the two outermost points (never below zero,
/// never rising as the size falls). A device's cost is far from a straight line over seven
/// orders of magnitude (a fixed launch cost, then copies that speed up with size), so a single
/// line fitted to every size predicts none of them well; neighbouring sizes predict each other.
struct CostCurve {
    std::array<double, size_buckets> x{}, y{};  // x = 0: the bucket has no samples
    /// Below its smallest point the curve stays at that point's time (a device: its fixed
    /// cost is unknown until a batch that small ran there), or, when `proportional`, falls in
    /// proportion to the size (the CPU workers: their time is the sum of their tasks' times).
    bool proportional = false;
    double predict(double n) const noexcept;
    /// The straight lines through the points, extended past the first and the last (the curve
    /// without its caution below the smallest point).
    double straight(double n) const noexcept;
    /// d(time)/d(tasks) around n (0 when the curve has fewer than two points).
    double slope(double n) const noexcept;
    /// Points (size classes with samples), and the smallest point's size (0: none).
    std::size_t points() const noexcept;
    double smallest() const noexcept;
    /// The largest size whose `predict` is at most `t` nanoseconds: 0 when even the smallest
    /// costs more, +infinity when the curve never rises that high (it is flat beyond its last
    /// point, or empty). What a lane can finish by a deadline.
    double invert(double t) const noexcept;
    bool empty() const noexcept;
};

/// One op on one device (or on the CPU workers). Each bucket keeps an average of its
/// samples with forgetting (`ModelConfig::forgetting` per sample of that bucket), so a size
/// that is rarely seen is not forgotten because others are frequent, and a size that changes
/// is followed; moves of one size class in one direction that add up to 3% move the others in
/// proportion (a device that slows down does so at every size). Robust: once `min_samples` are in, a sample in a bucket that has samples and
/// more than `outlier_factor` from the prediction is ignored, unless `outlier_streak` such
/// samples come in a row on the same side; then the device has changed and the curve starts
/// over from them, the other size classes scaled by the same change until their own next
/// sample replaces them. Not thread-safe (its owner locks).
class CostLine {
public:
    enum class Verdict { Taken, Outlier, Restarted, Invalid };

    /// `proportional`: see `CostCurve::proportional`.
    explicit CostLine(bool proportional = false) noexcept { curve_.proportional = proportional; }

    struct Bucket {
        double w = 0, x = 0, y = 0;  // sums with forgetting: weight, tasks, time
    };
    /// What the model file stores.
    struct State {
        std::array<Bucket, size_buckets> buckets{};
        std::uint64_t samples = 0, outliers = 0;
        /// 1: the class was carried over a restart, scaled; its next sample replaces it.
        std::array<std::uint8_t, size_buckets> carried{};
    };

    Verdict add(double tasks, double ns, const ModelConfig& config) noexcept;

    std::uint64_t samples() const noexcept { return state_.samples; }
    std::uint64_t outliers() const noexcept { return state_.outliers; }
    const CostCurve& curve() const noexcept { return curve_; }
    double predict(double tasks) const noexcept { return curve_.predict(tasks); }

    const State& state() const noexcept { return state_; }
    /// Replaces the state (from a model file). False, changing nothing, when it is not valid.
    bool restore(const State& s) noexcept;

private:
    void take(double tasks, double ns, double forgetting) noexcept;
    void refresh() noexcept;

    State state_;
    CostCurve curve_;
    int streak_ = 0;  // consecutive outliers: > 0 above the prediction, < 0 below
    std::array<std::uint8_t, size_buckets> new_rejects_{};  // first samples of a class refused
    double drift_ = 1;  // moves in one direction not yet carried to the other size classes
    std::array<std::pair<double, double>, 16> pending_{};  // the streak's samples
};

/// Size bucket of n tasks.
std::size_t size_bucket(double n) noexcept;

/// A cost line with its curve published for lock-free readers (placement reads it on
/// submitting threads while a completing thread refits). A reader may see a mix of two
/// consecutive curves: one slightly-off plan, nothing worse.
struct PublishedCost {
    explicit PublishedCost(bool proportional = false) noexcept : line{proportional} {}
    CostLine line;  // under the owner's lock
    std::array<std::atomic<double>, size_buckets> x{}, y{};
    std::atomic<std::uint64_t> samples{0};
    /// The cost of one task (what any share costs at least), and the smallest size measured
    /// (0: none): what the placement of a small batch needs, without reading the curve.
    std::atomic<double> one_task_ns{0}, smallest{0};

    void publish() noexcept {
        const CostCurve& c = line.curve();
        double first = 0;
        for (std::size_t b = 0; b < size_buckets; ++b) {
            x[b].store(c.x[b], std::memory_order_relaxed);
            y[b].store(c.y[b], std::memory_order_relaxed);
            if (first == 0 && c.x[b] > 0) first = c.x[b];
        }
        one_task_ns.store(c.predict(1), std::memory_order_relaxed);
        smallest.store(first, std::memory_order_relaxed);
        samples.store(line.samples(), std::memory_order_release);
    }
    CostCurve read() const noexcept {
        CostCurve c;
        c.proportional = line.curve().proportional;  // fixed at construction
        for (std::size_t b = 0; b < size_buckets; ++b) {
            c.x[b] = x[b].load(std::memory_order_relaxed);
            c.y[b] = y[b].load(std::memory_order_relaxed);
        }
        return c;
    }
    bool calibrated(std::size_t min_samples) const noexcept {
        return samples.load(std::memory_order_acquire) >= min_samples;
    }
};

}  // namespace tandem::detail
