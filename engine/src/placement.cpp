// The placement policy: see placement.hpp.
#include "placement.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>

#include <unistd.h>

namespace tandem::detail {
namespace {

/// Largest CPU chunk: 64 Ki tasks keeps a trivial map's chunk (in + out) inside L2, and a
/// claim (one atomic add on a shared line) per chunk costs nothing next to its work.
constexpr std::size_t max_cpu_chunk = std::size_t{1} << 16;
/// Chunks per worker a CPU-only batch is cut into at least: enough that a slow worker's last
/// chunk does not leave the others idle for long.
constexpr std::size_t chunks_per_worker = 8;
/// Batches at least this large explore with a share for every participant; smaller ones
/// explore one participant at a time.
constexpr std::size_t explore_size = 4096;
/// A device's start delay is learned from shares of at most this many share units.
constexpr std::uint64_t start_sample_units = 65536;

double nonneg(double v) noexcept { return v > 0 ? v : 0; }

/// What a batch waits for before device `d` starts its share: the work queued there, or, on an
/// idle device, its start delay (a device with work queued is awake: its actor takes the
/// batch as the queue drains).
double device_wait(const QueuedWork& q, std::size_t d) noexcept {
    return std::max(nonneg(q.device_ns[d].load(std::memory_order_relaxed)), q.start_of(d));
}

/// The CPU workers as placement sees them for `model`'s op.
LaneCost cpu_lane_of(const OpModel& model, const QueuedWork& queued, const EngineConfig& config) {
    return LaneCost{queued.cpu_ns.load(std::memory_order_relaxed), model.cpu().read(),
                    static_cast<double>(config.gpu.model.cpu_dispatch_cost.count()), model.cpu_stretch()};
}

/// The CPU's stretch (`OpModel::cpu_stretch`, measured over every one of `workers` workers)
/// for a batch spread over `k` of them: none on one worker, growing in proportion to the
/// workers engaged (the more workers, the more of them idle as the last chunks end). A step at
/// `k = workers` would make one worker fewer look faster than all of them.
double stretch_at(double k, std::size_t workers, double stretch) {
    if (workers <= 1 || !(stretch > 1)) return 1.0;
    return 1 + (stretch - 1) * (std::clamp(k, 1.0, static_cast<double>(workers)) - 1) / static_cast<double>(workers - 1);
}

/// The CPU workers' time for `work` worker-nanoseconds over `k` of them: the i-th engaged
/// worker starts after i dispatches (a parked one is woken by the thread that hands out the
/// batch, one after another) and, the batch being cut into several chunks per worker, the
/// early ones take more: k·T − dispatch·k(k+1)/2 = work; the work stretched by `stretch_at`.
double spread_time(double work, double k, double dispatch_ns, std::size_t workers, double stretch) {
    return work / k * stretch_at(k, workers, stretch) + dispatch_ns * (k + 1) / 2;
}

/// How many workers a CPU batch of `x` tasks and `work` worker-nanoseconds is spread over: the
/// count that minimizes `spread_time` (about √(2·work / dispatch)), at most one per task and
/// at most `workers`. A batch of a few microseconds of work runs on one worker: waking fifteen
/// would cost more than the work (measured on a 16-core host: 256 one-nanosecond tasks took
/// 27 µs spread over 15 workers, 4 µs on one).
///
/// With the CPU's stretch (`stretch_at`: work / k · (1 + c·(k − 1)), c = (stretch − 1) /
/// (workers − 1)) the time is work · (c + (1 − c) / k) + dispatch · (k + 1) / 2, least at
/// about √(2·work·(1 − c) / dispatch); with no dispatch cost, every worker unless c ≥ 1 (then
/// more workers never finish sooner).
double cpu_width(double work, std::size_t workers, double dispatch_ns, double x, double stretch = 1) {
    const double cap = std::min(static_cast<double>(workers), std::max(1.0, std::ceil(x)));
    if (!(dispatch_ns > 0)) return cap;  // a hybrid share: sent to every worker
    const double c = workers > 1 && stretch > 1 ? (stretch - 1) / static_cast<double>(workers - 1) : 0.0;
    if (c >= 1) return 1;
    const double k = std::clamp(std::floor(std::sqrt(2 * nonneg(work) * (1 - c) / dispatch_ns)), 1.0, cap);
    return k < cap && spread_time(work, k + 1, dispatch_ns, workers, stretch) < spread_time(work, k, dispatch_ns, workers, stretch)
               ? k + 1
               : k;
}

/// The CPU workers' wall time for `x` cost units (tasks when every task costs 1; `task_cost`:
/// the batch's average cost per task): the queue shared among all workers, then the work
/// shared among the workers the batch is spread over (`cpu_width`), with their dispatch.
double cpu_time(const LaneCost& c, std::size_t workers, double x, double task_cost, bool every_worker = false) {
    if (x <= 0) return 0;
    const double work = c.curve.predict(x);
    const double tasks = x / task_cost;
    // `every_worker`: a CPU share of a batch that devices share too is sent to every worker
    // (the width without a dispatch cost).
    const double k = cpu_width(work, workers, every_worker ? 0.0 : c.dispatch_ns, tasks, c.stretch);
    return nonneg(c.queued) / static_cast<double>(workers) + spread_time(work, k, c.dispatch_ns, workers, c.stretch);
}

/// One batch on the CPU workers as placement sees it: the work queued ahead, the batch's own
/// work (worker-nanoseconds, from the op's CPU curve), the workers it pays to engage
/// (`cpu_width`), the cost of engaging one, and its time as `cpu_time` counts it.
struct CpuWork {
    double queued = 0;
    double work = 0;
    double width = 0;
    double dispatch_ns = 0;
    double time = 0;
};

/// `cost` units (`tasks` tasks) of `model`'s op on `workers` CPU workers. A batch no larger
/// than the smallest size the CPU curve has measured costs `cost` times the curve's one-task
/// time (the curve is proportional below its first point; a cost is at least 1, so a first
/// point below one task, which only a model file can give, never takes this path): two
/// published numbers instead of the whole curve, as a 1-task batch's placement is on its
/// round trip (0.45 µs of 1.5 µs before, on 2 cores).
CpuWork cpu_work_of(const OpModel& model, const QueuedWork& queued, const EngineConfig& config, double cost,
                    double tasks, std::size_t workers) {
    CpuWork w;
    w.queued = queued.cpu_ns.load(std::memory_order_relaxed);
    w.dispatch_ns = static_cast<double>(config.gpu.model.cpu_dispatch_cost.count());
    const PublishedCost& cpu = model.cpu();
    const double smallest = cpu.smallest.load(std::memory_order_relaxed);
    w.work = smallest > 0 && cost <= smallest ? cpu.one_task_ns.load(std::memory_order_relaxed) * cost
                                              : cpu.read().predict(cost);
    const double stretch = model.cpu_stretch();
    w.width = cpu_width(w.work, workers, w.dispatch_ns, tasks, stretch);
    w.time = tasks <= 0 ? 0
                        : nonneg(w.queued) / static_cast<double>(workers) +
                              spread_time(w.work, w.width, w.dispatch_ns, workers, stretch);
    return w;
}

/// A device's time for `x` tasks after its queue.
double device_time(const LaneCost& d, double x) { return x <= 0 ? 0 : nonneg(d.queued) + d.curve.predict(x); }

/// What the models predict for the three ways a batch can run.
struct Choice {
    double t_cpu = std::numeric_limits<double>::infinity();
    double t_devices = std::numeric_limits<double>::infinity();
    double finish = std::numeric_limits<double>::infinity();
    /// Lane 0: the CPU, then the devices.
    std::vector<double> shares;
};

Choice choose(const LaneCost& cpu, const std::vector<LaneCost>& devices, std::size_t workers, double n,
              double task_cost, bool cpu_alone_allowed, bool hybrid_allowed, double min_hybrid_gain) {
    Choice c;
    c.shares.assign(devices.size() + 1, 0);
    if (cpu_alone_allowed) {
        c.t_cpu = cpu_time(cpu, workers, n, task_cost);
        c.finish = c.t_cpu;
        c.shares[0] = n;
    }
    if (!devices.empty()) {
        std::vector<double> dev_shares;
        c.t_devices = fill_curves(nullptr, devices, workers, n, task_cost, dev_shares);
        if (c.t_devices < c.finish) {
            c.finish = c.t_devices;
            c.shares[0] = 0;
            std::copy(dev_shares.begin(), dev_shares.end(), c.shares.begin() + 1);
        }
        // The most a split can gain over the best plan without one (both sides running at
        // their full speeds together): with the CPU alone allowed, the slower side's part of
        // the two sides' throughput; otherwise (a fixed threshold) over the devices alone.
        bool split_pays = hybrid_allowed;
        if (split_pays && min_hybrid_gain > 0) {
            const double t_cpu = cpu_alone_allowed ? c.t_cpu : cpu_time(cpu, workers, n, task_cost);
            const double together = t_cpu * c.t_devices / (t_cpu + c.t_devices);
            split_pays = !(1 - together / c.finish < min_hybrid_gain);
        }
        if (split_pays) {
            std::vector<double> shares;
            const double t = fill_curves(&cpu, devices, workers, n, task_cost, shares);
            if (shares[0] >= 1 && t < c.finish * (1 - 1e-9)) {
                c.finish = t;
                c.shares = shares;
            }
        }
    }
    return c;
}

/// Whole counts that add up to `n`: floors of `shares` / `scale`, the remainder to the largest
/// share. (Placement computes shares in cost; a job counts them in share units, each worth
/// `JobCore::cost_per_share_unit()`.)
std::vector<std::size_t> whole(const std::vector<double>& shares, std::size_t n, double scale = 1) {
    std::vector<std::size_t> out(shares.size(), 0);
    std::size_t given = 0;
    for (std::size_t i = 0; i < shares.size(); ++i) {
        const double units = std::floor(nonneg(shares[i]) / scale);
        out[i] = units >= static_cast<double>(n - given) ? n - given : static_cast<std::size_t>(units);
        given += out[i];
    }
    if (given < n) {
        const auto biggest = static_cast<std::size_t>(std::max_element(shares.begin(), shares.end()) - shares.begin());
        out[biggest] += n - given;
    }
    return out;
}

/// `shares` (in cost) as whole share units of `job`.
std::vector<std::size_t> whole(const std::vector<double>& shares, const JobCore& job) {
    return whole(shares, job.share_units(), job.cost_per_share_unit());
}

/// About how many tasks `units` share units of `job` hold (its average task).
std::size_t tasks_in(const JobCore& job, std::uint64_t units) noexcept {
    if (!job.weighted()) return units;
    const double t = static_cast<double>(units) / static_cast<double>(job.share_units()) * static_cast<double>(job.size());
    return std::min<std::size_t>(job.size(), static_cast<std::size_t>(std::llround(t)));
}

}  // namespace

double fill_curves(const LaneCost* cpu, const std::vector<LaneCost>& devices, std::size_t workers, double n,
                   double task_cost, std::vector<double>& shares) {
    const std::size_t lanes = devices.size() + (cpu ? 1 : 0);
    shares.assign(lanes, 0);
    if (lanes == 0 || !(n > 0)) return 0;
    const double w = static_cast<double>(std::max<std::size_t>(workers, 1));
    const bool every_worker = !devices.empty();
    auto time_of = [&](std::size_t i, double x) {
        return cpu && i == 0 ? cpu_time(*cpu, workers, x, task_cost, every_worker)
                             : device_time(devices[i - (cpu ? 1 : 0)], x);
    };
    // What lane i finishes by `t`: its curve inverted (the CPU's worker time shared by every
    // worker after their dispatch, as `cpu_time` counts a hybrid share).
    auto capacity = [&](std::size_t i, double t) {
        double x = 0;
        if (cpu && i == 0) {
            // Spread over every worker, or one per task when fewer (`cpu_time`'s width): the
            // most it finishes by `t` on k workers, for a share that needs k of them (more
            // than k - 1 tasks; at most k tasks below every worker). From the most workers
            // down, the first k that fits gives the most (any smaller k is capped below it).
            const double tc = std::max(task_cost, 1e-300);
            const double most = std::clamp(std::ceil(n / tc), 1.0, w);
            for (double k = most; k >= 1; --k) {
                const double work =
                    (t - nonneg(cpu->queued) / w - cpu->dispatch_ns * (k + 1) / 2) * k / stretch_at(k, workers, cpu->stretch);
                if (!(work > 0)) continue;
                double xk = cpu->curve.invert(work);
                if (k < w) xk = std::min(xk, k * tc);
                if (k > 1 && !(xk > (k - 1) * tc)) continue;  // needs fewer workers: counted there
                x = xk;
                break;
            }
        } else {
            const LaneCost& d = devices[i - (cpu ? 1 : 0)];
            const double left = t - nonneg(d.queued);
            x = left > 0 ? d.curve.invert(left) : 0;
        }
        return std::min(x, n);
    };
    // The finish time: the least t by which the lanes together finish n (bisection; no later
    // than the fastest lane alone), each lane's share what it finishes by then.
    if (lanes == 1) {
        shares[0] = n;
        return time_of(0, n);
    }
    double lo = 0, hi = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < lanes; ++i) hi = std::min(hi, time_of(i, n));
    if (!std::isfinite(hi)) return hi;
    std::vector<double> cap(lanes);
    for (int round = 0; round < 48 && hi - lo > 1e-4 * hi; ++round) {
        const double mid = (lo + hi) / 2;
        double total = 0;
        for (std::size_t i = 0; i < lanes; ++i) total += capacity(i, mid);
        (total >= n ? hi : lo) = mid;
    }
    double total = 0;
    for (std::size_t i = 0; i < lanes; ++i) total += cap[i] = capacity(i, hi);
    if (!(total > 0)) {  // (rounding: the fastest lane alone)
        std::size_t best = 0;
        for (std::size_t i = 1; i < lanes; ++i) best = time_of(i, n) < time_of(best, n) ? i : best;
        shares[best] = n;
        return time_of(best, n);
    }
    // What the lanes could do beyond n by then comes off each in proportion.
    double finish = 0;
    for (std::size_t i = 0; i < lanes; ++i) {
        shares[i] = cap[i] * (n / total);
        if (shares[i] > 0) finish = std::max(finish, time_of(i, shares[i]));
    }
    return finish;
}

void QueuedWork::learn_start(std::size_t d, double ns) noexcept {
    if (d >= devices || !(ns >= 0)) return;
    // (The count stops at 4: it only tells the first samples apart.)
    const std::uint32_t seen = start_samples[d].load(std::memory_order_relaxed);
    if (seen < 4) start_samples[d].fetch_add(1, std::memory_order_relaxed);
    double now = start_ns[d].load(std::memory_order_relaxed);
    for (;;) {
        // A sample counts as at most twice the average, or 1 µs above it (an average of 0, or
        // of a few hundred ns, can still rise).
        const double next = now < 0 ? ns
                            : seen < 4 ? std::min(now, ns)
                                       : now + (std::min(ns, std::max(2 * now, now + 1000)) - now) / 8;
        if (start_ns[d].compare_exchange_weak(now, next, std::memory_order_relaxed)) return;
    }
}

// ---- OpModel -----------------------------------------------------------------------------

OpModel::OpModel(std::string name, std::size_t devices, const ModelConfig& config, std::shared_ptr<QueuedWork> queued,
                 std::size_t workers, bool learn_stretch)
    : name_{std::move(name)}, devices_{devices}, config_{config}, queued_{std::move(queued)},
      workers_{std::max<std::size_t>(workers, 1)}, learn_stretch_{learn_stretch},
      gpu_{new PublishedCost[devices * 2]}, failures_{new std::atomic<std::uint32_t>[devices * 2]} {
    for (std::size_t i = 0; i < devices * 2; ++i) failures_[i].store(0, std::memory_order_relaxed);
}

void OpModel::on_share_done(const JobCore& job, std::size_t lane) noexcept {
    if (lane == 0) {
        const double b = job.plan().cpu_backlog_ns;
        if (b != 0) queued_->cpu_ns.fetch_sub(b, std::memory_order_relaxed);
    } else if (lane - 1 < std::min(job.device_share_count(), devices_)) {
        const double b = job.device_share(lane - 1).backlog_ns;
        if (b != 0) queued_->device_ns[lane - 1].fetch_sub(b, std::memory_order_relaxed);
    }
}

void OpModel::learn_stretch(double ratio) noexcept {
    if (!(ratio > 0)) return;
    const double r = std::clamp(ratio, 1.0, most_stretch());
    // 0: no sample yet (read as 1). The first sample counts as at most 1.5: one batch that
    // also paid a one-off cost (cold workers, fresh memory) does not set it alone.
    double now = stretch_.load(std::memory_order_relaxed);
    for (;;) {
        const double next = now == 0 ? std::min(r, std::min(1.5, most_stretch())) : now + (r - now) / 8;
        if (stretch_.compare_exchange_weak(now, next, std::memory_order_relaxed)) return;
    }
}

void OpModel::restore_stretch(double stretch) noexcept {
    if (std::isfinite(stretch) && stretch >= 1 && stretch <= most_stretch()) stretch_.store(stretch, std::memory_order_relaxed);
}

void Placement::note_stretch_probe(JobCore& job, const OpModel& model) const noexcept {
    // A batch whose CPU share is predicted to keep every worker busy for at least 250 µs, with
    // no other batch running: its completion tells the stretch if still none came meanwhile
    // (any batch of the engine, CPU-only ops' included: their chunks would run inside its span).
    PlanRecord& plan = job.plan();
    if (!model.learns_stretch() || !plan.cpu_runs || workers_ <= 1) return;
    if (plan.cpu_backlog_ns < 250e3 * static_cast<double>(workers_)) return;
    // Every batch handed over before this one has completed (the in-flight count would not
    // do: a completed batch leaves it only after its waiter is woken, who may submit first).
    const std::uint64_t submitted = job.engine_batches_submitted();
    if (submitted == 0 || job.engine_batches_completed() != submitted - 1) return;
    plan.stretch_probe = true;
    plan.batches_before = submitted;
}

void OpModel::on_complete(const JobCore& job, const ExecStats& stats) noexcept {
    const PlanRecord& plan = job.plan();
    const std::size_t shares = std::min(job.device_share_count(), devices_);
    if (stats.skipped_tasks != 0) return;  // cut short: its times say nothing about its size
    // The stretch, from a batch planned as a probe (`Placement::note_stretch_probe`) that ran
    // alone: none was running as it was planned, none came after it, it was spread over every
    // worker in at least two chunks each (a share planned in fewer chunks engages fewer
    // workers), nothing fell back, and its worker time divided among the workers is at least
    // 250 µs. Its span less the staggered start that placement counts as dispatch, over that.
    if (plan.stretch_probe && learn_stretch_ && job.cpu_width() == 0 && job.cpu_chunks_planned() >= 2 * workers_ &&
        stats.cpu_chunks >= 2 * workers_ && stats.cpu_span.count() > 0 && stats.fallback_tasks == 0 &&
        job.engine_batches_submitted() == plan.batches_before) {
        const double w = static_cast<double>(workers_);
        const double ideal = static_cast<double>(stats.cpu_time.count()) / w;
        // (The first chunk starts one dispatch after the hand-over: the span holds w - 1.)
        const double stagger = static_cast<double>(config_.cpu_dispatch_cost.count()) * (w - 1) / 2;
        if (ideal >= 250e3) learn_stretch((static_cast<double>(stats.cpu_span.count()) - stagger) / ideal);
    }
    if (stats.cpu_tasks != 0 && stats.cpu_time.count() > 0) {
        // Small batches carry little news once the curve is known, and each sample takes the
        // op's lock on the completing thread, on the batch's round trip: one in eight.
        const bool small = stats.cpu_tasks < 4096 && plan.info.reason != PlacementReason::Exploring &&
                           cpu_.calibrated(config_.min_samples);
        if (!small || cpu_sample_tick.fetch_add(1, std::memory_order_relaxed) % 8 == 0) {
            // A sample's size is its cost (its task count when every task costs 1): one op's
            // batches of any costs then fall on one curve.
            add_cpu(static_cast<double>(stats.cpu_cost), static_cast<double>(stats.cpu_time.count()));
        }
    }
    for (std::size_t d = 0; d < shares; ++d) {
        if ((plan.devices >> d & 1) == 0) continue;
        const DeviceShare& s = job.device_share(d);
        const std::uint64_t units = s.units.load(std::memory_order_relaxed);
        const std::int64_t first = s.first_ns.load(std::memory_order_relaxed);
        const std::int64_t last = s.last_ns.load(std::memory_order_relaxed);
        if (units == 0) {
            // The device ran none of its share: it fell back (or others took it all).
            if (stats.fallback_tasks != 0) failures(d, plan.pinned).fetch_add(1, std::memory_order_relaxed);
        } else if (last > first && !s.contended.load(std::memory_order_relaxed)) {
            // How long the device, idle as the share arrived (it reports nothing otherwise),
            // took to start it, from shares small enough for it to matter (a large one gains
            // nothing from a closer estimate).
            const std::int64_t waited = s.waited_ns.load(std::memory_order_relaxed);
            if (units <= start_sample_units && waited != std::numeric_limits<std::int64_t>::max()) {
                queued_->learn_start(d, static_cast<double>(waited));
            }
            const bool small = units < 4096 && plan.info.reason != PlacementReason::Exploring &&
                               device(d, plan.pinned).calibrated(config_.min_samples);
            if (!small || device_sample_tick.fetch_add(1, std::memory_order_relaxed) % 4 == 0) {
                add_device(d, plan.pinned, static_cast<double>(units) * job.cost_per_share_unit(),
                           static_cast<double>(last - first));
            }
        }
    }
}

void OpModel::add_cpu(double tasks, double worker_ns) noexcept {
    std::lock_guard lock{mutex_};
    cpu_.line.add(tasks, worker_ns, config_);
    cpu_.publish();
}

void OpModel::add_device(std::size_t d, bool pinned, double tasks, double ns) noexcept {
    if (d >= devices_) return;
    std::lock_guard lock{mutex_};
    PublishedCost& c = device(d, pinned);
    c.line.add(tasks, ns, config_);
    c.publish();
}

std::vector<CostLine::State> OpModel::states() const {
    std::lock_guard lock{mutex_};
    std::vector<CostLine::State> out;
    out.push_back(cpu_.line.state());
    for (std::size_t i = 0; i < devices_ * 2; ++i) out.push_back(gpu_[i].line.state());
    return out;
}

bool OpModel::restore(std::size_t line, const CostLine::State& s) {
    std::lock_guard lock{mutex_};
    if (line > devices_ * 2) return true;  // a device this machine does not have: ignored
    PublishedCost& c = line == 0 ? cpu_ : gpu_[line - 1];
    if (!c.line.restore(s)) return false;
    c.publish();
    return true;
}

OpModelInfo OpModel::info(const std::vector<DeviceInfo>& devices) const {
    std::lock_guard lock{mutex_};
    OpModelInfo info;
    info.op = name_;
    info.cpu_stretch = cpu_stretch();
    auto line = [&](std::string device, bool pinned, const CostLine& l) {
        CostModelInfo c;
        c.device = std::move(device);
        c.pinned = pinned;
        const CostCurve& k = l.curve();
        for (std::size_t b = 0; b < size_buckets; ++b) {
            if (k.x[b] > 0) c.points.emplace_back(k.x[b], k.y[b]);
        }
        if (!c.points.empty()) {
            // The first segment's intercept, and the last segment's slope.
            const double first = c.points.front().first;
            c.fixed_ns = std::max(0.0, k.predict(first) - k.slope(first) * first);
            c.per_task_ns = k.slope(c.points.back().first);
        }
        c.samples = l.samples();
        c.outliers = l.outliers();
        c.calibrated = l.samples() >= config_.min_samples;
        info.costs.push_back(std::move(c));
    };
    line("cpu", false, cpu_.line);
    for (std::size_t d = 0; d < devices_; ++d) {
        const std::string name = "gpu " + std::to_string(d) + (d < devices.size() ? ": " + devices[d].name : "");
        line(name, false, gpu_[d * 2].line);
        line(name, true, gpu_[d * 2 + 1].line);
        if (d < queued_->devices) {
            for (std::size_t k = info.costs.size() - 2; k < info.costs.size(); ++k) info.costs[k].start_delay_ns = queued_->start_of(d);
        }
    }
    return info;
}

// ---- Placement ---------------------------------------------------------------------------

Placement::Placement(const EngineConfig& config, std::size_t workers, DeviceBackend* backend)
    : config_{config}, workers_{std::max<std::size_t>(workers, 1)}, backend_{backend},
      queued_{std::make_shared<QueuedWork>(backend ? backend->size() : 0)},
      pinned_memory_{backend ? backend->pinned_memory().get() : nullptr}, id_{[] {
          static std::atomic<std::uint64_t> next{1};
          return next.fetch_add(1, std::memory_order_relaxed);
      }()} {}

std::shared_ptr<OpModel> Placement::cached_model_for(const JobCore& job) {
    // The op a thread submits is usually the one it submitted last: a hit costs a compare
    // and a reference count, no lock. Keyed by engine, op and name (an op's address can be
    // reused by another op after the first is gone).
    struct Last {
        std::uint64_t placement = 0;  // an id, not an address: engines come and go
        const void* op = nullptr;
        std::weak_ptr<OpModel> model;
    };
    thread_local Last last;
    if (last.placement == id_ && last.op == job.op_key()) {
        if (auto m = last.model.lock(); m && m->name() == job.op_name()) return m;
    }
    auto m = model_for(job.op_name());
    last = Last{id_, job.op_key(), m};
    return m;
}

bool Placement::devices_possible(JobCore& job) const noexcept {
    return backend_ != nullptr && backend_->device_count() > 0 && job.gpu_view().launcher != nullptr;
}

std::shared_ptr<OpModel> Placement::model_for(const std::string& op_name) {
    {
        std::shared_lock lock{models_mutex_};
        auto it = models_.find(op_name);
        if (it != models_.end()) return it->second;
    }
    std::unique_lock lock{models_mutex_};
    auto& slot = models_[op_name];
    if (!slot) {
        slot = std::make_shared<OpModel>(op_name, queued_->devices, config_.gpu.model, queued_, workers_,
                                         config_.gpu.model.learn_cpu_stretch && !config_.test_hooks.simulate_cpu_cost);
    }
    return slot;
}

std::size_t Placement::cpu_chunk_for(std::size_t n) const noexcept {
    if (config_.cpu_chunk != 0) return config_.cpu_chunk;
    return std::clamp<std::size_t>(n / (workers_ * chunks_per_worker), 1, max_cpu_chunk);
}

void Placement::set_cpu_plan(JobCore& job, std::uint64_t share) noexcept {
    PlanRecord& plan = job.plan();
    plan.cpu_share = share;
    plan.info.planned_cpu_tasks = tasks_in(job, share);
    plan.info.planned_cpu_cost = job.cost_count(share);
}

void Placement::plan_cpu_only(JobCore& job) noexcept {
    set_cpu_plan(job, job.share_units());
    job.set_cpu_chunk(cpu_chunk_for(job.size()));
}

std::size_t Placement::gpu_chunk_for(std::size_t share, std::size_t in_size) const noexcept {
    in_size = std::max<std::size_t>(in_size, 1);
    if (config_.gpu.chunk_bytes != 0) return std::max<std::size_t>(config_.gpu.chunk_bytes / in_size, 1);
    // About 32 chunks per device, each between 1 MiB (where a PCIe copy reaches ~45 GB/s) and
    // 8 MiB (~54 GB/s): the pipeline's fill and drain cost a few percent, and copies run near
    // their best rate (measured, H100 and H200: a balanced 256 MiB batch in 8 MiB chunks beat
    // 4 MiB chunks by ~5%). share * in_size cannot overflow: share < 2^44.
    const std::size_t bytes = share / 32 * in_size;
    return std::max<std::size_t>(std::clamp<std::size_t>(bytes, std::size_t{1} << 20, std::size_t{8} << 20) / in_size, 1);
}

void Placement::place(JobCore& job) {
    PlanRecord& plan = job.plan();
    plan.decided = true;
    // Reused by each thread: a small batch's placement allocates nothing here.
    thread_local std::vector<std::size_t> devices;
    devices.clear();
    if (backend_ != nullptr && job.gpu_view().launcher != nullptr) {
        for (std::size_t d = 0; d < backend_->size(); ++d) {
            if (backend_->healthy(d)) devices.push_back(d);
        }
    }
    if (devices.empty()) {
        place_on_cpu(job, nullptr, PlacementReason::NoDevice);
        return;
    }
    const GpuView view = job.gpu_view();
    const bool pinned = view.payload_memory != nullptr && view.payload_memory == pinned_memory_;
    plan.pinned = pinned;
    const std::size_t n = job.size();
    const std::size_t min_samples = config_.gpu.model.min_samples;
    std::shared_ptr<OpModel> model = cached_model_for(job);
    job.set_observer(model);
    // Whatever path the plan takes below (a throw included: the plan is then not used).
    struct Probe {
        const Placement& p;
        JobCore& job;
        const OpModel& model;
        ~Probe() { p.note_stretch_probe(job, model); }
    } probe{*this, job, *model};
    // A fixed CPU share is the user's split: nobody steals from it.
    job.set_steal(config_.gpu.model.steal && config_.gpu.cpu_share < 0);
    // A device on which this op only ever fell back is not offered it again.
    std::erase_if(devices, [&](std::size_t d) { return model->unusable(d, pinned, min_samples); });
    if (devices.empty()) {
        place_on_cpu(job, model.get(), PlacementReason::NoDevice);
        return;
    }
    bool devices_known = true;
    for (std::size_t d : devices) devices_known = devices_known && model->device(d, pinned).calibrated(min_samples);
    const bool cpu_known = model->cpu().calibrated(min_samples);

    if (!job.has_cpu()) {
        if (devices_known) {
            place_by_model(job, *model, pinned, devices, PlacementReason::DevicesOnly, false, false);
        } else {
            place_exploring(job, *model, pinned, devices, false);
            plan.info.reason = PlacementReason::DevicesOnly;
        }
        return;
    }
    const std::size_t threshold = config_.gpu.threshold_tasks;
    if (threshold != GpuConfig::learned) {
        if (n < threshold) {
            place_on_cpu(job, model.get(), PlacementReason::Threshold);
        } else if (devices_known && (cpu_known || !config_.gpu.cpu_helps) && config_.gpu.cpu_share < 0) {
            place_by_model(job, *model, pinned, devices, PlacementReason::Threshold, false, config_.gpu.cpu_helps);
        } else if (config_.gpu.cpu_share >= 0) {
            place_freely(job, *model, pinned, devices, config_.gpu.cpu_helps, PlacementReason::Threshold);
        } else {
            place_exploring(job, *model, pinned, devices, config_.gpu.cpu_helps);
            plan.info.reason = PlacementReason::Threshold;
        }
        return;
    }
    if (cpu_known && devices_known) {
        place_by_model(job, *model, pinned, devices, PlacementReason::Model, true, config_.gpu.cpu_helps);
        if (plan.devices == 0 && n < explore_size) {
            // Kept on the CPU, but a device has never run a batch this small: its curve only
            // guesses (cautiously) below its smallest measured size. One batch of each smaller
            // size class goes there to measure it, so the learned threshold can move down.
            // Only to an idle device (a busy one would make the batch wait and its span would
            // measure the others), and a bounded number of times per op.
            for (std::size_t d : devices) {
                if (model->device(d, pinned).smallest.load(std::memory_order_relaxed) > 2.0 * job.cost() &&
                    queued_->device_ns[d].load(std::memory_order_relaxed) < 1.0 &&
                    model->redirects.fetch_add(1, std::memory_order_relaxed) < 2 * size_buckets) {
                    undo_cpu_plan(job);
                    place_exploring(job, *model, pinned, {d}, false);
                    return;
                }
            }
        }
        return;
    }
    // Exploring. A large batch gives every participant a share (a probe for the unknown ones);
    // a small one goes to the CPU until the CPU is known, then every other one to the devices
    // not yet known.
    if (n >= explore_size) {
        if (config_.gpu.cpu_share >= 0 && config_.gpu.cpu_helps) {
            place_freely(job, *model, pinned, devices, true, PlacementReason::Exploring);  // the fixed share
        } else {
            place_exploring(job, *model, pinned, devices, config_.gpu.cpu_helps);
        }
        return;
    }
    if (!cpu_known || model->explore_tick.fetch_add(1, std::memory_order_relaxed) % 2 == 1) {
        place_on_cpu(job, model.get(), PlacementReason::Exploring);
        return;
    }
    std::vector<std::size_t> unknown;
    for (std::size_t d : devices) {
        if (!model->device(d, pinned).calibrated(min_samples)) unknown.push_back(d);
    }
    place_exploring(job, *model, pinned, unknown, false);
}

void Placement::undo_cpu_plan(JobCore& job) noexcept {
    PlanRecord& plan = job.plan();
    if (plan.cpu_backlog_ns != 0) queued_->cpu_ns.fetch_sub(plan.cpu_backlog_ns, std::memory_order_relaxed);
    plan.cpu_backlog_ns = 0;
    plan.info = PlacementInfo{};
    job.set_cpu_width(0);
}

void Placement::narrow_cpu(JobCore& job, const void* cpu_work) const noexcept {
    const CpuWork& c = *static_cast<const CpuWork*>(cpu_work);
    // The dispatch cost is that of waking parked workers; with work queued on the CPU they are
    // busy, not parked, and a narrow batch would wait behind one worker's queue: spread it.
    // (Under a microsecond of queued work: what the plans' additions and removals in floating
    // point leave when nothing is queued.)
    if (c.queued >= 1000.0) return;
    if (!(c.width < static_cast<double>(workers_))) return;
    // Sent to as many workers as pays, in chunks as for that many workers: a batch of a few
    // microseconds' work stays on one worker instead of waking every one.
    const auto k = static_cast<std::size_t>(c.width);
    const std::size_t n = job.size();
    job.set_cpu_width(k);
    if (config_.cpu_chunk == 0) {
        // One worker: one chunk (nothing to balance); more: several chunks each.
        job.set_cpu_chunk(k == 1 ? std::min(n, max_cpu_chunk)
                                 : std::clamp<std::size_t>(n / (k * chunks_per_worker), 1, max_cpu_chunk));
    }
}

void Placement::place_on_cpu(JobCore& job, OpModel* model, PlacementReason reason, const void* cpu_work) {
    PlanRecord& plan = job.plan();
    plan.cpu_runs = true;
    plan.devices = 0;
    plan.info.reason = reason;
    plan_cpu_only(job);
    if (model != nullptr && model->cpu().calibrated(config_.gpu.model.min_samples)) {
        const CpuWork c = cpu_work != nullptr ? *static_cast<const CpuWork*>(cpu_work)
                                              : cpu_work_of(*model, *queued_, config_, job.cost(),
                                                            static_cast<double>(job.size()), workers_);
        const double t = c.time;
        narrow_cpu(job, &c);
        plan.info.predicted_cpu = plan.info.predicted = std::chrono::nanoseconds{static_cast<std::int64_t>(std::min(t, 9e18))};
        plan.cpu_backlog_ns = c.work;
        queued_->cpu_ns.fetch_add(plan.cpu_backlog_ns, std::memory_order_relaxed);
    }
}

void Placement::place_by_model(JobCore& job, OpModel& model, bool pinned, const std::vector<std::size_t>& devices,
                               PlacementReason reason, bool cpu_alone, bool hybrid) {
    // In cost: the models' sizes are costs (task counts when every task costs 1).
    const double n = job.cost();
    const double task_cost = n / static_cast<double>(job.size());
    auto ns = [](double t) {
        return std::isfinite(t) && t < 9e18 ? std::chrono::nanoseconds{static_cast<std::int64_t>(t)}
                                            : std::chrono::nanoseconds{0};
    };
    if (cpu_alone) {
        // The common case, cheap (a small batch's placement is on its round trip): when the
        // CPU alone is done before any device could finish even one task after its queue, no
        // plan with a device is faster.
        const CpuWork w = cpu_work_of(model, *queued_, config_, n, static_cast<double>(job.size()), workers_);
        const double t_cpu = w.time;
        double soonest = std::numeric_limits<double>::infinity();
        for (std::size_t d : devices) {
            soonest = std::min(soonest, device_wait(*queued_, d) + model.device(d, pinned).one_task_ns.load(std::memory_order_relaxed));
        }
        if (t_cpu <= soonest) {
            place_on_cpu(job, &model, reason, &w);
            job.plan().info.calibrated = true;
            job.plan().info.predicted_devices = ns(soonest);  // at least
            return;
        }
    }
    const LaneCost c = cpu_lane_of(model, *queued_, config_);
    std::vector<LaneCost> lanes;
    for (std::size_t d : devices) lanes.push_back(LaneCost{device_wait(*queued_, d), model.device(d, pinned).read()});
    if (!cpu_alone && !hybrid && lanes.size() == 1) {
        // One device takes it all: nothing to choose (a GPU round trip is on this path).
        PlanRecord& plan = job.plan();
        plan.info.reason = reason;
        plan.info.calibrated = true;
        plan.info.predicted_devices = plan.info.predicted = ns(device_time(lanes[0], n));
        apply_shares(job, model, pinned, devices, {0, job.share_units()});
        return;
    }
    Choice choice = choose(c, lanes, workers_, n, task_cost, cpu_alone, hybrid, config_.gpu.model.min_hybrid_gain);
    if (config_.gpu.cpu_share >= 0 && hybrid && choice.shares[0] < n) {
        // A fixed CPU share: the devices split the rest by their models.
        const double cpu_part = std::floor(n * config_.gpu.cpu_share);
        std::vector<double> dev_shares;
        const double t = fill_curves(nullptr, lanes, workers_, n - cpu_part, task_cost, dev_shares);
        choice.shares[0] = cpu_part;
        std::copy(dev_shares.begin(), dev_shares.end(), choice.shares.begin() + 1);
        choice.finish = std::max(t, cpu_time(c, workers_, cpu_part, task_cost));
    }
    PlanRecord& plan = job.plan();
    plan.info.reason = reason;
    plan.info.calibrated = true;
    plan.info.predicted_cpu =
        ns(job.has_cpu() ? cpu_time(c, workers_, n, task_cost) : std::numeric_limits<double>::infinity());
    plan.info.predicted_devices = ns(choice.t_devices);
    plan.info.predicted = ns(choice.finish);
    apply_shares(job, model, pinned, devices, whole(choice.shares, job));
}

void Placement::place_exploring(JobCore& job, OpModel& model, bool pinned, const std::vector<std::size_t>& devices,
                                bool cpu) {
    const std::size_t n = job.size();
    const std::size_t min_samples = config_.gpu.model.min_samples;
    // Lane 0 is the CPU (if it takes part), then the devices.
    std::vector<bool> known;
    known.push_back(!cpu || model.cpu().calibrated(min_samples));
    std::size_t unknown = cpu && !known[0] ? 1 : 0;
    for (std::size_t d : devices) {
        known.push_back(model.device(d, pinned).calibrated(min_samples));
        unknown += known.back() ? 0 : 1;
    }
    const std::size_t participants = devices.size() + (cpu ? 1 : 0);
    std::vector<double> shares(devices.size() + 1, 0);
    // In cost (tasks when every task costs 1); a probe is at least one share unit.
    const double total = job.cost();
    const double unit = job.cost_per_share_unit();
    // An unknown CPU gets a small probe (a sixty-fourth): where a device is many times faster,
    // a large CPU share would make this batch many times slower, while a device that turns out
    // slower loses little (the CPU takes over its unclaimed tasks when stealing is on). An
    // unknown device gets an eighth (shared among the unknown devices).
    const double cpu_probe = std::max(unit, std::floor(total / 64.0));
    if (unknown == participants) {
        const double cpu_part = cpu && devices.size() > 0 ? cpu_probe : (cpu ? total : 0);
        shares[0] = cpu_part;
        for (std::size_t i = 1; i < shares.size(); ++i) shares[i] = (total - cpu_part) / static_cast<double>(devices.size());
    } else {
        // Probes for the unknown, the rest by the models of the known.
        const double probe = std::max(unit, std::floor(total / (8.0 * static_cast<double>(unknown))));
        double rest = total;
        std::optional<LaneCost> cpu_lane;
        std::vector<LaneCost> device_lanes;
        std::vector<std::size_t> device_lane_of;
        for (std::size_t i = 0; i < shares.size(); ++i) {
            if (i == 0 && !cpu) continue;
            if (!known[i]) {
                shares[i] = std::min(i == 0 ? cpu_probe : probe, rest);
                rest -= shares[i];
            } else if (i == 0) {
                cpu_lane = cpu_lane_of(model, *queued_, config_);
            } else {
                const std::size_t d = devices[i - 1];
                device_lanes.push_back(LaneCost{device_wait(*queued_, d), model.device(d, pinned).read()});
                device_lane_of.push_back(i);
            }
        }
        std::vector<double> fill;
        const double task_cost = total / static_cast<double>(n);
        fill_curves(cpu_lane ? &*cpu_lane : nullptr, device_lanes, workers_, rest, task_cost, fill);
        std::size_t k = 0;
        if (cpu_lane) shares[0] = fill[k++];
        for (std::size_t i : device_lane_of) shares[i] = fill[k++];
    }
    PlanRecord& plan = job.plan();
    plan.info.reason = PlacementReason::Exploring;
    apply_shares(job, model, pinned, devices, whole(shares, job));
}

void Placement::place_freely(JobCore& job, OpModel& model, bool pinned, const std::vector<std::size_t>& devices,
                             bool cpu, PlacementReason reason) {
    PlanRecord& plan = job.plan();
    const std::size_t n = job.size();
    plan.info.reason = reason;
    if (cpu && config_.gpu.cpu_share >= 0) {
        // A fixed CPU share (of the cost): the devices split the rest evenly (caps on both
        // sides: a device claiming freely could take the CPU's share before a worker wakes).
        const double total = job.cost();
        std::vector<double> shares(devices.size() + 1, 0);
        shares[0] = std::floor(total * config_.gpu.cpu_share);
        for (std::size_t i = 1; i < shares.size(); ++i) {
            shares[i] = (total - shares[0]) / static_cast<double>(devices.size());
        }
        apply_shares(job, model, pinned, devices, whole(shares, job));
        return;
    }
    plan.pinned = pinned;
    job.set_device_shares(backend_->size());
    job.note_handed_over();
    const std::size_t in_size = job.gpu_view().in_size;
    for (std::size_t d : devices) {
        plan.devices |= std::uint64_t{1} << d;
        job.set_device_chunk(d, gpu_chunk_for(n / devices.size(), in_size));
    }
    plan.cpu_runs = cpu;
    if (!cpu) {
        job.set_cpu_quota(0);
        set_cpu_plan(job, 0);
        return;
    }
    // Both sides claim freely and the split follows their speeds; small CPU chunks keep the
    // CPU's tail short.
    set_cpu_plan(job, job.share_units());
    job.set_cpu_chunk(config_.cpu_chunk != 0 ? config_.cpu_chunk
                                             : std::clamp<std::size_t>(n / (workers_ * 64), 1, max_cpu_chunk));
}

void Placement::apply_shares(JobCore& job, OpModel& model, bool pinned, const std::vector<std::size_t>& devices,
                             const std::vector<std::size_t>& planned) {
    PlanRecord& plan = job.plan();
    const std::size_t n = job.size();
    const std::size_t in_size = job.gpu_view().in_size;
    std::vector<std::size_t> shares = planned;
    if (!job.has_cpu() && shares[0] != 0 && shares.size() > 1) {  // rounding's remainder: not to a CPU it lacks
        shares[1] += shares[0];
        shares[0] = 0;
    }
    std::size_t used = 0;
    for (std::size_t i = 1; i < shares.size(); ++i) used += shares[i] != 0;
    if (used != 0) {
        job.set_device_shares(backend_->size());
        job.note_handed_over();  // the plan with devices is made: from here on they are waited for
    }
    // Shares, quotas and backlogs in share units (tasks, or cost where costs differ); the
    // models count cost; chunk sizes count the tasks a share holds on average.
    const double unit = job.cost_per_share_unit();
    for (std::size_t i = 1; i < shares.size(); ++i) {
        if (shares[i] == 0) continue;
        const std::size_t d = devices[i - 1];
        DeviceShare& s = job.device_share(d);
        s.quota = shares[i];
        job.set_device_chunk(d, gpu_chunk_for(tasks_in(job, shares[i]), in_size));
        plan.devices |= std::uint64_t{1} << d;
        const PublishedCost& m = model.device(d, pinned);
        if (m.calibrated(config_.gpu.model.min_samples)) {
            s.backlog_ns = m.read().predict(static_cast<double>(shares[i]) * unit);
            queued_->device_ns[d].fetch_add(s.backlog_ns, std::memory_order_relaxed);
        }
    }
    const std::size_t cpu = shares[0];
    plan.cpu_runs = cpu != 0;
    set_cpu_plan(job, cpu);
    job.set_cpu_quota(cpu);
    if (plan.devices == 0) {
        job.set_cpu_chunk(cpu_chunk_for(n));
        if (model.cpu().calibrated(config_.gpu.model.min_samples)) {
            const CpuWork c = cpu_work_of(model, *queued_, config_, job.cost(), static_cast<double>(job.size()), workers_);
            narrow_cpu(job, &c);  // as place_on_cpu: the models chose the CPU alone
        }
    } else if (config_.cpu_chunk != 0) {
        job.set_cpu_chunk(config_.cpu_chunk);
    } else {
        // Sixteen chunks per worker: the CPU's last chunk ends within a few percent of its
        // share's time, and the devices do not wait for it.
        job.set_cpu_chunk(std::clamp<std::size_t>(tasks_in(job, cpu) / (workers_ * 16), 1, max_cpu_chunk));
    }
    if (cpu != 0 && model.cpu().calibrated(config_.gpu.model.min_samples)) {
        plan.cpu_backlog_ns = model.cpu().read().predict(static_cast<double>(cpu) * unit);
        queued_->cpu_ns.fetch_add(plan.cpu_backlog_ns, std::memory_order_relaxed);
    }
}

std::size_t Placement::threshold(const OpModel& model, bool pinned) const {
    const std::size_t min_samples = config_.gpu.model.min_samples;
    if (!model.cpu().calibrated(min_samples)) return 0;
    const LaneCost c{0, model.cpu().read(), static_cast<double>(config_.gpu.model.cpu_dispatch_cost.count()),
                     model.cpu_stretch()};
    std::vector<LaneCost> lanes;
    for (std::size_t d = 0; d < model.devices(); ++d) {
        if (backend_ == nullptr || !backend_->healthy(d)) continue;
        const PublishedCost& m = model.device(d, pinned);
        if (!m.calibrated(min_samples)) return 0;
        lanes.push_back(LaneCost{queued_->start_of(d), m.read()});
    }
    if (lanes.empty()) return 0;
    auto devices_take_part = [&](std::size_t n) {
        const Choice ch = choose(c, lanes, workers_, static_cast<double>(n), 1.0, true, config_.gpu.cpu_helps,
                                  config_.gpu.model.min_hybrid_gain);
        return whole(ch.shares, n)[0] < n;
    };
    constexpr std::size_t top = std::size_t{1} << 44;
    if (!devices_take_part(top)) return std::numeric_limits<std::size_t>::max();
    std::size_t lo = 1, hi = top;  // devices_take_part(hi) holds
    if (devices_take_part(lo)) return lo;
    while (hi - lo > 1) {
        const std::size_t mid = lo + (hi - lo) / 2;
        (devices_take_part(mid) ? hi : lo) = mid;
    }
    return hi;
}

std::vector<OpModelInfo> Placement::models() const {
    std::vector<std::shared_ptr<OpModel>> all;
    {
        std::shared_lock lock{models_mutex_};
        for (const auto& [name, m] : models_) all.push_back(m);
    }
    const std::vector<DeviceInfo> devices = backend_ ? backend_->devices() : std::vector<DeviceInfo>{};
    std::vector<OpModelInfo> out;
    for (const auto& m : all) {
        OpModelInfo info = m->info(devices);
        info.threshold_pageable = threshold(*m, false);
        info.threshold_pinned = threshold(*m, true);
        out.push_back(std::move(info));
    }
    std::sort(out.begin(), out.end(), [](const OpModelInfo& a, const OpModelInfo& b) { return a.op < b.op; });
    return out;
}

// ---- the model file ----------------------------------------------------------------------
//
//   tandem-models 4                                 (3: the same without start, stretch, carried)
//   start <device> <ns>                             (a device's start delay; before the ops)
//   op <the name's bytes in hex>
//   stretch <1 .. 4> <workers>                      (the op's CPU stretch, over that many workers)
//   line <0: cpu, 1 + 2·device + pinned> <samples> <outliers>
//   bucket <size class> <weight> <tasks> <ns> [carried]   (sums with forgetting; after its line;
//                                                          carried: scaled over a restart)

namespace {

std::string to_hex(const std::string& s) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

std::optional<std::string> from_hex(const std::string& h) {
    if (h.size() % 2 != 0) return std::nullopt;
    auto value = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    std::string out;
    for (std::size_t i = 0; i < h.size(); i += 2) {
        const int hi = value(h[i]), lo = value(h[i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
    }
    return out;
}

}  // namespace

void Placement::save(const std::string& path) const {
    std::vector<std::shared_ptr<OpModel>> all;
    {
        std::shared_lock lock{models_mutex_};
        for (const auto& [name, m] : models_) all.push_back(m);
    }
    std::ostringstream os;
    os.precision(17);
    os << "tandem-models 4\n";
    for (std::size_t d = 0; d < queued_->devices; ++d) {
        const double start = queued_->start_ns[d].load(std::memory_order_relaxed);
        if (start >= 0) os << "start " << d << ' ' << start << '\n';
    }
    for (const auto& m : all) {
        os << "op " << to_hex(m->name()) << '\n';
        if (const double stretch = m->stretch_state(); stretch > 0) os << "stretch " << stretch << ' ' << workers_ << '\n';
        const auto states = m->states();
        for (std::size_t i = 0; i < states.size(); ++i) {
            const CostLine::State& s = states[i];
            if (s.samples == 0) continue;
            os << "line " << i << ' ' << s.samples << ' ' << s.outliers << '\n';
            for (std::size_t b = 0; b < size_buckets; ++b) {
                const CostLine::Bucket& k = s.buckets[b];
                if (k.w > 0) {
                    os << "bucket " << b << ' ' << k.w << ' ' << k.x << ' ' << k.y << (s.carried[b] != 0 ? " carried" : "") << '\n';
                }
            }
        }
    }
    // Written beside the file under a name of its own, flushed to disk, then renamed over it:
    // a crash leaves the old file or the new one, never half of one.
    static std::atomic<unsigned> serial{0};
    const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(serial.fetch_add(1));
    const std::string text = os.str();
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (f == nullptr) throw std::runtime_error("tandem: cannot write the model file " + tmp);
    const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                         ::fsync(::fileno(f)) == 0;
    if (std::fclose(f) != 0 || !written) {
        std::remove(tmp.c_str());
        throw std::runtime_error("tandem: cannot write the model file " + tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw std::runtime_error("tandem: cannot replace the model file " + path);
    }
}

std::vector<Placement::Record> Placement::read(const std::string& path) {
    std::vector<Record> out;
    std::ifstream in{path};
    if (!in) return out;  // no file yet: the first run
    auto bad = [&](std::size_t line, const std::string& why) {
        throw std::runtime_error("tandem: model file " + path + ", line " + std::to_string(line) + ": " + why);
    };
    std::string header;
    std::getline(in, header);
    // Version 4 adds the start delays, the CPU's stretch and carried size classes; a version-3
    // file (none of them) reads as it did.
    if (header != "tandem-models 4" && header != "tandem-models 3") {
        bad(1, "not a tandem model file of a version this engine reads (expected \"tandem-models 4\" or 3)");
    }
    std::optional<std::string> current;
    std::string text;
    for (std::size_t number = 2; std::getline(in, text); ++number) {
        if (text.empty()) continue;
        std::istringstream ls{text};
        std::string kind;
        ls >> kind;
        // Nothing may follow a record's fields ('bucket' has its optional flag, checked below).
        auto no_more = [&] {
            std::string rest;
            if (ls >> rest) bad(number, "unexpected \"" + rest + "\" after the " + kind + " record");
        };
        if (kind == "op") {
            std::string hex;
            ls >> hex;
            auto name = from_hex(hex);
            if (!name) bad(number, "expected: op <name in hex>");
            no_more();
            current = std::move(*name);
        } else if (kind == "start") {
            Record r;
            r.kind = Record::Kind::Start;
            if (!(ls >> r.line >> r.value) || r.line >= 64 || !std::isfinite(r.value) || r.value < 0) {
                bad(number, "expected: start <device> <ns>");
            }
            no_more();
            out.push_back(std::move(r));
        } else if (kind == "stretch") {
            Record r;
            r.kind = Record::Kind::Stretch;
            if (!current) bad(number, "a stretch before any op");
            std::size_t workers = 0;
            if (!(ls >> r.value >> workers) || !std::isfinite(r.value) || r.value < 1 || r.value > 4 || workers == 0) {
                bad(number, "expected: stretch <1 .. 4> <workers>");
            }
            no_more();
            r.line = workers;
            r.op = *current;
            out.push_back(std::move(r));
        } else if (kind == "line") {
            Record r;
            if (!current) bad(number, "a line before any op");
            if (!(ls >> r.line >> r.state.samples >> r.state.outliers)) bad(number, "expected: line <index> <samples> <outliers>");
            if (r.line > 2 * 64) bad(number, "line index out of range");
            no_more();
            r.op = *current;
            out.push_back(std::move(r));
        } else if (kind == "bucket") {
            std::size_t b = 0;
            CostLine::Bucket k;
            if (out.empty() || !current || out.back().kind != Record::Kind::Line || out.back().op != *current) {
                bad(number, "a bucket before its line");
            }
            if (!(ls >> b >> k.w >> k.x >> k.y)) bad(number, "expected: bucket <size class> <weight> <tasks> <ns>");
            if (b >= size_buckets) bad(number, "size class out of range");
            for (double v : {k.w, k.x, k.y}) {
                if (!std::isfinite(v) || v < 0) bad(number, "sums must be finite and not negative");
            }
            if ((k.w > 0) != (k.x > 0)) bad(number, "a bucket with weight must have tasks");
            std::string flag;
            if (ls >> flag) {
                if (flag != "carried" || !(k.w > 0)) bad(number, "expected: bucket <size class> <weight> <tasks> <ns> [carried]");
                out.back().state.carried[b] = 1;
            }
            out.back().state.buckets[b] = k;
        } else {
            bad(number, "unknown record \"" + kind + "\"");
        }
    }
    return out;
}

void Placement::restore(const std::vector<Record>& records) {
    // `read` checked the form; a line whose sums make no line is dropped (it relearns).
    for (const Record& r : records) {
        switch (r.kind) {
        case Record::Kind::Line: model_for(r.op)->restore(r.line, r.state); break;
        case Record::Kind::Stretch:
            if (r.line == workers_) model_for(r.op)->restore_stretch(r.value);  // else: another worker count, relearned
            break;
        case Record::Kind::Start:
            if (r.line < queued_->devices) {  // a device this machine lacks: ignored
                queued_->start_ns[r.line].store(r.value, std::memory_order_relaxed);
                queued_->start_samples[r.line].store(4, std::memory_order_relaxed);  // an average, not a first sample
            }
            break;
        }
    }
}

}  // namespace tandem::detail
