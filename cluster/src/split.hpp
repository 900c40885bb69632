#pragma once
// Internal (cluster policy): how fast each rank runs each op, and how a batch is split across
// the ranks so that they finish together. Policy apart from mechanism: the transport only
// feeds samples in and carries the split out; nothing here knows MPI.
#include <tandem/config.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tandem::cluster_detail {

/// A rank's time for one op as a straight line, `fixed + tasks × per_task` (nanoseconds),
/// fitted to its slices by least squares with forgetting. A straight line suits slices: they
/// are large (a rank's share of a batch), where the engine's piecewise curve (built for seven
/// orders of magnitude of GPU batch sizes, engine/src/cost_model.hpp) would spend its buckets
/// on sizes a cluster never sends. Borrowed from that model: a minimum of samples before it is
/// trusted, forgetting to follow drift, and outliers ignored unless a streak of them says the
/// rank has changed (then it starts over from them).
class LinearCost {
public:
    /// Adds a slice of `tasks` tasks that took `ns`. False when ignored as an outlier.
    bool add(double tasks, double ns, const ModelConfig& config) noexcept;
    double predict(double tasks) const noexcept { return tasks <= 0 ? 0 : fixed_ + per_task_ * tasks; }
    double fixed_ns() const noexcept { return fixed_; }
    double per_task_ns() const noexcept { return per_task_; }
    std::uint64_t samples() const noexcept { return samples_; }
    std::uint64_t outliers() const noexcept { return outliers_; }
    bool calibrated(const ModelConfig& config) const noexcept { return samples_ >= config.min_samples; }

private:
    void take(double tasks, double ns, double keep) noexcept;
    void refit() noexcept;
    // Sums with forgetting: weight, tasks, time, tasks², tasks × time.
    double w_ = 0, x_ = 0, y_ = 0, xx_ = 0, xy_ = 0;
    double fixed_ = 0, per_task_ = 0;
    std::uint64_t samples_ = 0, outliers_ = 0;
    int streak_ = 0;  // consecutive outliers: > 0 above the prediction, < 0 below
    double streak_x_[16]{}, streak_y_[16]{};
};

/// What sending a slice to a rank and getting its results back adds to the rank's own time:
/// a fixed latency per slice plus a cost per byte moved. The two are learned apart. A slice's
/// extra time (round trip less the rank's time) is nearly all latency when the slice is
/// small, so a per-byte rate taken from it would be huge, make the rank look slow for every
/// later batch and, once it got nothing, never be corrected (measured on a 2 x H200 host: 5.2 M
/// of 33.5 M tasks to the second rank). So the latency is learned from slices that move less
/// than `min_bytes` (and is never more than a large slice's extra time), and the per-byte cost
/// only from slices that move at least that, net of the latency. Until such a slice came back
/// the per-byte cost is 0: a rank is given its full share by speed, and so measured.
class LinkCost {
public:
    static constexpr double min_bytes = double(1 << 20);
    void add(double bytes, double extra_ns, double forgetting) noexcept;
    double fixed_ns() const noexcept { return fixed_; }
    double per_byte_ns() const noexcept { return per_byte_; }
    std::uint64_t samples() const noexcept { return samples_; }

private:
    double fixed_ = 0, per_byte_ = 0;
    std::uint64_t samples_ = 0, small_ = 0, large_ = 0;
};

/// One rank as the split sees it.
struct Lane {
    /// Time a share of `tasks` costs there: its compute line plus the bytes it moves.
    LinearCost cost;
    /// Interconnect cost the transfers add: per slice, and per byte (0 for the leader itself).
    double link_fixed_ns = 0;
    double link_ns_per_byte = 0;
    /// Bytes a task moves (payload out, result back).
    double bytes_per_task = 0;
    /// Predicted time of the slices already queued there.
    double backlog_ns = 0;
    bool calibrated = false;
    /// Time until a share of `tasks` is back: the rank's busy time plus the link's latency.
    double predict(double tasks) const noexcept { return tasks <= 0 ? 0 : busy(tasks) + link_fixed_ns; }
    /// The part of it that occupies the rank (what a later slice waits behind): its compute
    /// and the bytes it moves, not the latency (slices in flight at once each pay it).
    double busy(double tasks) const noexcept {
        return tasks <= 0 ? 0 : cost.predict(tasks) + link_ns_per_byte * bytes_per_task * tasks;
    }
};

/// How many of `n` tasks each lane takes (the sum is `n`). While any lane is not calibrated:
/// equal shares (the remainder to the first lanes), to measure every lane. Then the shares
/// that make the lanes finish together, counting each one's backlog and fixed cost: a lane
/// whose backlog and fixed cost alone exceed that common finish takes nothing (so a small
/// batch stays on the leader, lane 0, when sending it costs more than running it).
/// `explored` is set when the split was the equal one.
std::vector<std::size_t> split(const std::vector<Lane>& lanes, std::size_t n, bool& explored);

}  // namespace tandem::cluster_detail
