#include "split.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tandem::cluster_detail {

void LinearCost::take(double tasks, double ns, double keep) noexcept {
    w_ = w_ * keep + 1;
    x_ = x_ * keep + tasks;
    y_ = y_ * keep + ns;
    xx_ = xx_ * keep + tasks * tasks;
    xy_ = xy_ * keep + tasks * ns;
    ++samples_;
    refit();
}

void LinearCost::refit() noexcept {
    const double mx = x_ / w_, my = y_ / w_;
    const double var = xx_ / w_ - mx * mx;
    const double cov = xy_ / w_ - mx * my;
    // Sizes that barely vary say nothing about the fixed part: then the whole time is per task
    // (the split in proportion to speed, which is what the line gives for such sizes anyway).
    const double mean_rate = mx > 0 ? my / mx : 0;
    if (var > 1e-2 * mx * mx && cov > 0) {
        // The line goes through the mean point (where the samples are, the prediction is
        // right), with its slope held within half and one and a half times the mean time per
        // task: slices of a busy machine are noisy, and a slope fitted to noise would make a
        // large "fixed cost" that starves the rank of work, whose smaller slices then look
        // slower still.
        per_task_ = std::clamp(cov / var, 0.5 * mean_rate, 1.5 * mean_rate);
        fixed_ = std::max(0.0, my - per_task_ * mx);
    } else {
        fixed_ = 0;
        per_task_ = mean_rate;
    }
}

bool LinearCost::add(double tasks, double ns, const ModelConfig& config) noexcept {
    if (!(tasks > 0) || !(ns >= 0) || !std::isfinite(ns)) return false;
    const double keep = config.forgetting;
    if (calibrated(config)) {
        const double predicted = predict(tasks);
        const bool above = ns > predicted * config.outlier_factor;
        const bool below = ns * config.outlier_factor < predicted;
        if (above || below) {
            const int side = above ? 1 : -1;
            streak_ = (streak_ * side > 0) ? streak_ + side : side;
            const auto k = static_cast<std::size_t>(std::abs(streak_));
            if (k <= 16) {
                streak_x_[k - 1] = tasks;
                streak_y_[k - 1] = ns;
            }
            if (k >= config.outlier_streak) {
                // The rank has changed: start over from the streak.
                w_ = x_ = y_ = xx_ = xy_ = 0;
                samples_ = 0;
                for (std::size_t i = 0; i < std::min<std::size_t>(k, 16); ++i) take(streak_x_[i], streak_y_[i], keep);
                streak_ = 0;
                return true;
            }
            ++outliers_;
            return false;
        }
    }
    streak_ = 0;
    take(tasks, ns, keep);
    return true;
}

void LinkCost::add(double bytes, double extra_ns, double forgetting) noexcept {
    if (!(bytes >= 0) || !(extra_ns >= 0) || !std::isfinite(extra_ns)) return;
    ++samples_;
    if (bytes < min_bytes) {
        // Nearly all latency: a faster one is taken at once, a slower one followed with the
        // models' forgetting (a link that got slower, not one noisy slice).
        if (small_ == 0) {
            fixed_ = extra_ns;
            // A per-byte cost learned before any latency was known holds that latency too:
            // the next large slice sets it afresh, net of this one.
            large_ = 0;
        } else {
            fixed_ = std::min(extra_ns, forgetting * fixed_ + (1 - forgetting) * extra_ns);
        }
        ++small_;
        return;
    }
    // The latency cannot be more than a large slice's whole extra time.
    fixed_ = std::min(fixed_, extra_ns);
    const double sample = (extra_ns - fixed_) / bytes;
    per_byte_ = large_ == 0 ? sample : forgetting * per_byte_ + (1 - forgetting) * sample;
    ++large_;
}

std::vector<std::size_t> split(const std::vector<Lane>& lanes, std::size_t n, bool& explored) {
    const std::size_t l = lanes.size();
    std::vector<std::size_t> shares(l, 0);
    if (l == 0 || n == 0) return shares;
    explored = std::any_of(lanes.begin(), lanes.end(), [](const Lane& lane) { return !lane.calibrated; });
    if (explored) {
        for (std::size_t i = 0; i < l; ++i) shares[i] = n / l + (i < n % l ? 1 : 0);
        return shares;
    }
    // Water filling on straight lines: lane i finishing at T takes x_i = (T - q_i - a_i) / c_i,
    // with q its backlog, a its fixed cost and c its cost per task; lanes whose q + a is above
    // T take nothing. Start with every lane, drop the one with the highest q + a while T is
    // below it.
    std::vector<std::size_t> order(l);
    std::iota(order.begin(), order.end(), 0);
    auto start = [&](std::size_t i) { return lanes[i].backlog_ns + lanes[i].cost.fixed_ns() + lanes[i].link_fixed_ns; };
    auto slope = [&](std::size_t i) {
        const double c = lanes[i].cost.per_task_ns() + lanes[i].link_ns_per_byte * lanes[i].bytes_per_task;
        return std::max(c, 1e-6);
    };
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return start(a) < start(b); });
    std::size_t active = l;
    double finish = 0;
    while (active > 0) {
        double inv = 0, offset = 0;
        for (std::size_t k = 0; k < active; ++k) {
            inv += 1 / slope(order[k]);
            offset += start(order[k]) / slope(order[k]);
        }
        finish = (static_cast<double>(n) + offset) / inv;
        if (active == 1 || finish > start(order[active - 1])) break;
        --active;
    }
    std::size_t given = 0;
    std::vector<double> exact(l, 0);
    for (std::size_t k = 0; k < active; ++k) {
        const std::size_t i = order[k];
        exact[i] = std::max(0.0, (finish - start(i)) / slope(i));
        shares[i] = std::min<std::size_t>(n - given, static_cast<std::size_t>(exact[i]));
        given += shares[i];
    }
    // The rounding remainder, one task at a time, to the lanes that would finish earliest with it.
    while (given < n) {
        std::size_t best = order[0];
        double best_t = 0;
        bool first = true;
        for (std::size_t k = 0; k < active; ++k) {
            const std::size_t i = order[k];
            const double t = start(i) + slope(i) * static_cast<double>(shares[i] + 1);
            if (first || t < best_t) {
                best = i;
                best_t = t;
                first = false;
            }
        }
        // Many tasks left (rounding of huge shares cannot leave more than `active`): give them
        // in one go to the best lane.
        const std::size_t left = n - given;
        const std::size_t give = left > active ? left - active + 1 : 1;
        shares[best] += give;
        given += give;
    }
    return shares;
}

}  // namespace tandem::cluster_detail
