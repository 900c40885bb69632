// Learning one cost curve: see cost_model.hpp.
#include "cost_model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tandem::detail {

std::size_t size_bucket(double n) noexcept {
    if (!(n >= 2)) return 0;
    const int b = std::ilogb(n);
    return std::min<std::size_t>(static_cast<std::size_t>(b), size_buckets - 1);
}

std::size_t CostCurve::points() const noexcept {
    return static_cast<std::size_t>(std::count_if(x.begin(), x.end(), [](double v) { return v > 0; }));
}

double CostCurve::smallest() const noexcept {
    for (double v : x) {
        if (v > 0) return v;
    }
    return 0;
}

bool CostCurve::empty() const noexcept {
    return std::all_of(x.begin(), x.end(), [](double v) { return v <= 0; });
}

namespace {

/// The populated points around bucket `b`: the nearest at or below it and at or above it.
struct Around {
    int lo = -1, hi = -1;
};

Around around(const CostCurve& c, std::size_t b) noexcept {
    Around a;
    for (int i = static_cast<int>(b); i >= 0; --i) {
        if (c.x[static_cast<std::size_t>(i)] > 0) {
            a.lo = i;
            break;
        }
    }
    for (std::size_t i = b; i < size_buckets; ++i) {
        if (c.x[i] > 0) {
            a.hi = static_cast<int>(i);
            break;
        }
    }
    return a;
}

int next_above(const CostCurve& c, int i) noexcept {
    for (std::size_t j = static_cast<std::size_t>(i) + 1; j < size_buckets; ++j) {
        if (c.x[j] > 0) return static_cast<int>(j);
    }
    return -1;
}

int next_below(const CostCurve& c, int i) noexcept {
    for (int j = i - 1; j >= 0; --j) {
        if (c.x[static_cast<std::size_t>(j)] > 0) return j;
    }
    return -1;
}

/// The segment of the curve that holds n: two point indices (equal when the curve has one).
std::pair<int, int> segment(const CostCurve& c, double n) noexcept {
    const Around a = around(c, size_bucket(n));
    int i = a.lo, j = a.hi;
    if (i >= 0 && i == j) {  // n's own bucket: pair it with the neighbour on n's side
        const auto u = static_cast<std::size_t>(i);
        if (n >= c.x[u]) {
            j = next_above(c, i);
            if (j < 0) {
                j = i;
                i = next_below(c, j);
            }
        } else {
            i = next_below(c, j);
            if (i < 0) {
                i = j;
                j = next_above(c, i);
            }
        }
    } else if (i < 0 && j >= 0) {  // below every point: the first segment
        i = j;
        j = next_above(c, i);
    } else if (j < 0 && i >= 0) {  // above every point: the last segment
        j = i;
        i = next_below(c, j);
    }
    if (i < 0) i = j;
    if (j < 0) j = i;
    return {i, j};
}

}  // namespace

double CostCurve::slope(double n) const noexcept {
    const auto [i, j] = segment(*this, n);
    if (i < 0 || i == j) return j >= 0 ? y[static_cast<std::size_t>(j)] / x[static_cast<std::size_t>(j)] : 0;
    const auto a = static_cast<std::size_t>(i), b = static_cast<std::size_t>(j);
    return std::max(0.0, (y[b] - y[a]) / (x[b] - x[a]));
}

double CostCurve::predict(double n) const noexcept {
    const auto [i, j] = segment(*this, n);
    if (i < 0) return 0;
    // Below the smallest point: that point's time. A smaller batch costs no more, and how much
    // less is unknown (for a device, mostly its fixed cost): the cautious guess keeps batches
    // off a device until one of that size has been measured there.
    const Around first = around(*this, 0);
    const auto f = static_cast<std::size_t>(first.hi);
    if (n < x[f]) return proportional ? y[f] * n / x[f] : y[f];
    return straight(n);
}

double CostCurve::invert(double t) const noexcept {
    // From the top down (a deadline is mostly met by a large share: few segments are looked at).
    int last = -1;
    for (int b = static_cast<int>(size_buckets) - 1; b >= 0 && last < 0; --b) {
        if (x[static_cast<std::size_t>(b)] > 0) last = b;
    }
    const double inf = std::numeric_limits<double>::infinity();
    if (last < 0) return inf;
    if (!(t >= 0)) return 0;
    const auto l = static_cast<std::size_t>(last);
    int below = next_below(*this, last);
    // Above the last point: its segment extended (proportional with one point), as `straight`.
    const double s_last = below < 0 ? y[l] / x[l]
                                    : std::max(0.0, (y[l] - y[static_cast<std::size_t>(below)]) /
                                                        (x[l] - x[static_cast<std::size_t>(below)]));
    // (Where the last segment's slope clamps to 0, `predict` beyond its lower point stays at
    // that point's time, not the last point's.)
    const double y_end = below < 0 ? y[l] : y[static_cast<std::size_t>(below)] +
                                               s_last * (x[l] - x[static_cast<std::size_t>(below)]);
    if (t >= y_end) return s_last > 0 ? x[l] + (t - y_end) / s_last : inf;
    // Between points: the first segment from the top that reaches below t holds the largest
    // size at or under it (a segment whose slope clamps to 0 stays at its left end).
    int upper = last;
    while (below >= 0) {
        const auto a = static_cast<std::size_t>(below), b = static_cast<std::size_t>(upper);
        const double s = std::max(0.0, (y[b] - y[a]) / (x[b] - x[a]));
        if (t >= y[a] + s * (x[b] - x[a])) return x[b];
        if (t >= y[a]) return s > 0 ? x[a] + (t - y[a]) / s : x[b];
        upper = below;
        below = next_below(*this, below);
    }
    // Below the first point: proportional, or flat at its time.
    const auto f = static_cast<std::size_t>(upper);
    return proportional && y[f] > 0 ? x[f] * t / y[f] : 0;
}

double CostCurve::straight(double n) const noexcept {
    const auto [i, j] = segment(*this, n);
    if (i < 0) return 0;
    const auto a = static_cast<std::size_t>(i);
    if (i == j) return y[a] * n / x[a];  // one point: proportional above it
    return std::max(0.0, y[a] + slope(n) * (n - x[a]));
}

CostLine::Verdict CostLine::add(double tasks, double ns, const ModelConfig& config) noexcept {
    if (!(tasks > 0) || !(ns >= 0) || !std::isfinite(tasks) || !std::isfinite(ns)) return Verdict::Invalid;
    const std::size_t own_class = size_bucket(tasks);
    // A class carried over a restart holds an estimate, not a measurement: its first sample
    // since replaces it, checked only as a class never measured is (a sample far slower than
    // the estimate waits for a second opinion: a spike taken there would make the normal
    // samples after it restart the whole curve again).
    const bool carried = state_.carried[own_class] != 0;
    if (carried) {
        const double estimate = curve_.predict(tasks);
        if (estimate > 0 && ns / estimate > config.outlier_factor && ++new_rejects_[own_class] < config.outlier_streak) {
            ++state_.outliers;
            return Verdict::Outlier;
        }
        state_.buckets[own_class] = Bucket{};
        state_.carried[own_class] = 0;
        new_rejects_[own_class] = 0;
    }
    const bool seen_size = state_.buckets[own_class].w > 0;
    // A size class without samples yet, above the smallest measured size: its first sample is
    // checked against the straight lines through the others (a first batch of a new size
    // that also paid a one-off cost, e.g. page-locking fresh memory, took 35 ms where 2 ms
    // was usual on an H200 host, and a curve that believes it keeps batches of that size off
    // the device, so no later sample corrects it). Only a sample slower than the lines is
    // suspect there (below the smallest size a device's fixed cost makes any line too fast),
    // and the class's own count decides, whatever other sizes come in between: after
    // `outlier_streak` such samples the size is taken as that slow. It never touches the
    // streak of the sizes already known (which restarts the whole curve).
    if (!carried && !seen_size && state_.samples >= config.min_samples && curve_.points() >= 2 &&
        tasks > curve_.smallest()) {
        const double lines = curve_.straight(tasks);
        if (lines > 0 && ns / lines > config.outlier_factor && ++new_rejects_[own_class] < config.outlier_streak) {
            ++state_.outliers;
            return Verdict::Outlier;
        }
    }
    if (state_.samples >= config.min_samples && seen_size) {
        const double predicted = predict(tasks);
        if (predicted > 0) {
            const double ratio = ns / predicted;
            if (ratio > config.outlier_factor || ratio * config.outlier_factor < 1) {
                const int side = ratio > 1 ? 1 : -1;
                streak_ = streak_ * side > 0 ? streak_ + side : side;
                const auto length = static_cast<std::size_t>(std::abs(streak_));
                pending_[(length - 1) % pending_.size()] = {tasks, ns};
                if (length < std::min(config.outlier_streak, pending_.size())) {
                    ++state_.outliers;
                    return Verdict::Outlier;
                }
                // Not a spike: the device changed. Start over from the streak; every other size
                // class is carried over, scaled by the streak's change (the geometric mean of
                // its ratios to the old curve), until its own next sample replaces it. Dropping
                // them left a device's curve with only the streak's size: a device's curve is
                // flat below its smallest point, so after a streak at 4 M tasks on an H200 host
                // every smaller share was priced at the 4 M time and 1 M-task SHA-256 batches
                // ran on the GPU alone, 1.26-1.49x the best split.
                // (Samples of 0 ns, or where the old curve said 0, tell no change: a streak
                // of only those carries nothing over.)
                const std::size_t kept = std::min(length, pending_.size());
                double log_change = 0;
                std::size_t used = 0;
                for (std::size_t i = 0; i < kept; ++i) {
                    const double before = predict(pending_[i].first);
                    if (before > 0 && pending_[i].second > 0) {
                        log_change += std::log(pending_[i].second / before);
                        ++used;
                    }
                }
                const double change = used != 0 ? std::exp(log_change / static_cast<double>(used)) : 0;
                const State old = state_;
                state_ = State{};
                state_.outliers = old.outliers;
                new_rejects_.fill(0);
                for (std::size_t i = 0; i < kept; ++i) take(pending_[i].first, pending_[i].second, config.forgetting);
                for (std::size_t b = 0; b < size_buckets && std::isfinite(change) && change > 0; ++b) {
                    if (state_.buckets[b].w > 0 || !(old.buckets[b].w > 0)) continue;
                    const double y = old.buckets[b].y * change;
                    if (!std::isfinite(y)) continue;
                    state_.buckets[b] = old.buckets[b];
                    state_.buckets[b].y = y;
                    state_.carried[b] = 1;
                }
                streak_ = 0;
                drift_ = 1;
                refresh();
                return Verdict::Restarted;
            }
        }
    }
    streak_ = 0;
    const std::size_t own = size_bucket(tasks);
    const CostCurve before = curve_;
    take(tasks, ns, config.forgetting);
    refresh();
    if (seen_size) {
        // Drift: where this size class's point moved, against where the old curve (straight
        // lines, without the caution below its smallest point) put that size. A device that
        // slows down does so at every size: moves in one direction, accumulated, carry the
        // other size classes along in proportion once they add up to 3%. Noise changes
        // direction (and with the default forgetting a sample weighs a fifth of its class: 10%
        // noise moves a point by 2%), so it rarely adds up.
        const double expected = before.straight(curve_.x[own]);
        const double factor = expected > 0 ? curve_.y[own] / expected : 1;
        if (std::isfinite(factor) && factor > 0) {
            drift_ = (factor - 1) * (drift_ - 1) < 0 ? factor : drift_ * factor;
            if (std::abs(drift_ - 1) > 0.03) {
                for (std::size_t b = 0; b < size_buckets; ++b) {
                    if (b != own) state_.buckets[b].y *= drift_;
                }
                drift_ = 1;
                refresh();
            }
        }
    }
    return Verdict::Taken;
}

void CostLine::take(double tasks, double ns, double forgetting) noexcept {
    Bucket& b = state_.buckets[size_bucket(tasks)];
    b.w = b.w * forgetting + 1;
    b.x = b.x * forgetting + tasks;
    b.y = b.y * forgetting + ns;
    ++state_.samples;
}

void CostLine::refresh() noexcept {
    for (std::size_t i = 0; i < size_buckets; ++i) {
        const Bucket& b = state_.buckets[i];
        const bool used = b.w > 0 && b.x > 0;
        curve_.x[i] = used ? b.x / b.w : 0;
        curve_.y[i] = used ? b.y / b.w : 0;
    }
}

bool CostLine::restore(const State& s) noexcept {
    bool any = false;
    for (std::size_t i = 0; i < size_buckets; ++i) {
        const Bucket& b = s.buckets[i];
        for (double v : {b.w, b.x, b.y}) {
            if (!std::isfinite(v) || v < 0) return false;
        }
        if ((b.w > 0) != (b.x > 0)) return false;
        if (b.w > 0) {
            // The bucket's average size must lie in its size class, and its time be finite.
            const double x = b.x / b.w, y = b.y / b.w;
            if (!std::isfinite(x) || !std::isfinite(y) || size_bucket(x) != i) return false;
            any = true;
        }
    }
    if (!any && s.samples != 0) return false;
    for (std::size_t i = 0; i < size_buckets; ++i) {
        if (s.carried[i] > 1 || (s.carried[i] != 0 && !(s.buckets[i].w > 0))) return false;
    }
    state_ = s;
    new_rejects_.fill(0);
    streak_ = 0;
    drift_ = 1;
    refresh();
    return true;
}

}  // namespace tandem::detail
