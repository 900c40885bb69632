// Metrics: the Prometheus exposition of an engine that ran batches on CPU workers and on
// simulated devices, checked by `promtool check metrics` (skipped visibly where promtool is not
// installed: Debian's `prometheus` package ships it), and the pieces on their own: histogram
// buckets, counter names, fallbacks by reason, the busy-time union behind GPU utilization.
#define BOOST_TEST_MODULE metrics
#include <boost/test/unit_test.hpp>

#include <tandem/tandem.hpp>

#include "busy_time.hpp"  // engine-internal: the busy-time union on its own
#include "histogram.hpp"
#include "sim_ops.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

using tandem::testing::iota_batch;
using tandem::testing::mix;
using tandem::testing::mix_kernel;

using tandem::testing::device_only_op;
using tandem::testing::hybrid_op;
tandem::Op<std::uint32_t, std::uint32_t> cpu_op() { return {"inc", [](const std::uint32_t& x) { return x + 1; }}; }

/// A kernel with no launch and no host emulation: a simulated device cannot run it.
struct NoCodeKernel final : tandem::GpuLauncher {
    std::error_code launch(void*, const void*, void*, std::size_t) const noexcept override {
        return make_error_code(tandem::ExecError::BackendUnavailable);
    }
};

/// `devices` simulated devices with a deterministic model (1 ms per chunk + 1 µs per task,
/// not waited out), taking every batch in chunks of 256 tasks.
tandem::EngineConfig sim_config(std::size_t devices = 2) {
    tandem::EngineConfig c;
    c.cpu_workers = 2;
    c.idle_spin = 5us;
    c.gpu.threshold_tasks = 0;
    c.gpu.chunk_bytes = 256 * sizeof(std::uint32_t);
    c.gpu.shutdown_grace = 50ms;
    for (std::size_t i = 0; i < devices; ++i) {
        tandem::SimulatedDevice d;
        d.name = "sim " + std::to_string(i);
        d.fixed_cost = 1ms;
        d.per_task = 1us;
        c.gpu.simulated.push_back(d);
    }
    return c;
}

/// One parsed exposition: samples by their full series name (`name{labels}`), and each
/// family's TYPE.
struct Exposition {
    std::map<std::string, double> samples;
    std::map<std::string, std::string> types;
    std::vector<std::string> order;  // series in the order they came

    bool has(const std::string& series) const { return samples.count(series) != 0; }
    double at(const std::string& series) const {
        const auto it = samples.find(series);
        BOOST_TEST_REQUIRE((it != samples.end()), "missing series " << series);
        return it->second;
    }
};

Exposition parse(const std::string& text) {
    Exposition e;
    std::istringstream in{text};
    std::string line;
    while (std::getline(in, line)) {
        BOOST_TEST_REQUIRE(!line.empty(), "an empty line in the exposition");
        if (line.rfind("# TYPE ", 0) == 0) {
            const auto space = line.find(' ', 7);
            e.types[line.substr(7, space - 7)] = line.substr(space + 1);
            continue;
        }
        if (line[0] == '#') continue;
        const auto space = line.rfind(' ');
        const std::string series = line.substr(0, space), value = line.substr(space + 1);
        double v = 0;
        if (value == "+Inf") {
            v = INFINITY;
        } else if (value == "NaN") {
            v = NAN;
        } else {
            v = std::strtod(value.c_str(), nullptr);
        }
        e.samples[series] = v;
        e.order.push_back(series);
    }
    return e;
}

/// Checks every histogram series of the exposition: its buckets are cumulative (never
/// decreasing), run from 1e-05 to +Inf, and +Inf equals _count. Returns how many it checked.
int check_histograms(const Exposition& e) {
    int checked = 0;
    for (const auto& [family, type] : e.types) {
        if (type != "histogram") continue;
        const std::string bucket = family + "_bucket{";
        // Group the bucket series by their other labels, in order.
        std::map<std::string, std::vector<std::pair<std::string, double>>> by_labels;
        for (const std::string& s : e.order) {
            if (s.rfind(bucket, 0) != 0) continue;
            const auto le = s.find("le=\"");
            BOOST_TEST_REQUIRE(le != std::string::npos);
            const std::string others = s.substr(bucket.size(), le - bucket.size());
            const std::string bound = s.substr(le + 4, s.find('"', le + 4) - le - 4);
            by_labels[others].emplace_back(bound, e.at(s));
        }
        BOOST_TEST(!by_labels.empty(), family << " has no buckets");
        for (const auto& [others, buckets] : by_labels) {
            BOOST_TEST_CONTEXT(family << "{" << others << "}") {
                BOOST_TEST(buckets.size() == tandem::Histogram::bounds + 1);
                BOOST_TEST(buckets.front().first == "1e-05");
                BOOST_TEST(buckets.back().first == "+Inf");
                for (std::size_t i = 1; i < buckets.size(); ++i) BOOST_TEST(buckets[i].second >= buckets[i - 1].second);
                std::string plain = others;  // the labels without the trailing comma, as _count has them
                if (!plain.empty() && plain.back() == ',') plain.pop_back();
                const std::string suffix = plain.empty() ? "" : "{" + plain + "}";
                BOOST_TEST(buckets.back().second == e.at(family + "_count" + suffix));
                BOOST_TEST(e.at(family + "_sum" + suffix) >= 0.0);
                ++checked;
            }
        }
    }
    return checked;
}

/// True when `promtool` is on PATH.
bool promtool_installed() { return std::system("command -v promtool >/dev/null 2>&1") == 0; }

struct PromtoolFound {
    boost::test_tools::assertion_result operator()(utf::test_unit_id) const {
        boost::test_tools::assertion_result r{promtool_installed()};
        if (!r) r.message() << "promtool not found (install Debian's prometheus package)";
        return r;
    }
};

/// Runs `promtool check metrics` on `text`; returns its exit status and what it printed.
std::pair<int, std::string> promtool_check(const std::string& text) {
    char path[] = "/tmp/tandem-metrics-XXXXXX";
    const int fd = mkstemp(path);
    BOOST_TEST_REQUIRE(fd >= 0);
    BOOST_TEST_REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    close(fd);
    const std::string out = std::string{path} + ".out";
    const int status = std::system(("promtool check metrics < " + std::string{path} + " > " + out + " 2>&1").c_str());
    std::string said;
    if (std::FILE* f = std::fopen(out.c_str(), "r")) {
        char buf[4096];
        for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) said.append(buf, n);
        std::fclose(f);
    }
    std::remove(path);
    std::remove(out.c_str());
    return {status, said};
}

/// An engine that ran CPU batches, device batches and hybrid batches. `device_may_fail`: a
/// device-only batch may fail with `DeviceFailed` (a device that fails is configured).
void run_everything(tandem::Engine& engine, bool device_may_fail = false) {
    for (int i = 0; i < 4; ++i) engine.submit(cpu_op(), iota_batch(1000)).get();
    for (int i = 0; i < 4; ++i) {
        try {
            engine.submit(device_only_op(), iota_batch(3000)).get();
        } catch (const tandem::Error& e) {
            BOOST_TEST_REQUIRE(device_may_fail, e.what());
            BOOST_TEST((e.code() == tandem::ExecError::DeviceFailed));
        }
    }
    for (int i = 0; i < 4; ++i) engine.submit(hybrid_op(), iota_batch(5000)).get();
    // An op name that needs escaping in a label value.
    const tandem::Op<std::uint32_t, std::uint32_t> odd{"odd \"name\" \\ with\nnewline", mix, mix_kernel()};
    engine.submit(odd, iota_batch(700)).get();
    // And one whose name is not valid UTF-8 (a program's bytes): a server rejects a scrape
    // with one invalid label value.
    const tandem::Op<std::uint32_t, std::uint32_t> bytes{"bytes \xff\xfe cut \xe2\x82", mix, mix_kernel()};
    engine.submit(bytes, iota_batch(700)).get();
}

}  // namespace

BOOST_AUTO_TEST_CASE(an_op_name_that_is_not_utf8_gives_valid_utf8_label_values) {
    tandem::Engine engine{sim_config()};
    run_everything(engine);
    engine.shutdown();
    const std::string text = tandem::to_prometheus(engine.metrics());
    BOOST_TEST(text.find("op=\"bytes \xef\xbf\xbd\xef\xbf\xbd cut \xef\xbf\xbd\xef\xbf\xbd\"") != std::string::npos);
    BOOST_TEST(text.find('\xff') == std::string::npos);
    BOOST_TEST(text.find('\xfe') == std::string::npos);
}

BOOST_AUTO_TEST_CASE(histogram_buckets_are_cumulative_and_inf_equals_count) {
    tandem::detail::AtomicHistogram h;
    for (auto d : {5us, 10us, 11us, 3000us}) h.record(d);
    h.record(20s);
    h.record(-1ns);  // clock skew: counted as 0
    tandem::Histogram snap;
    h.add_to(snap);
    BOOST_TEST(snap.buckets[0] == 3u);  // 0, 5 µs and 10 µs: le="1e-05" includes its bound
    BOOST_TEST(snap.buckets[1] == 1u);  // 11 µs
    BOOST_TEST(snap.buckets[8] == 1u);  // 3 ms: (2.5 ms, 5 ms]
    BOOST_TEST(snap.buckets[tandem::Histogram::bounds] == 1u);  // 20 s: above the last bound
    BOOST_TEST(snap.count() == 6u);
    BOOST_TEST(snap.cumulative(tandem::Histogram::bounds) == snap.count());
    BOOST_TEST(std::abs(snap.sum_seconds - 20.003026) < 1e-9);

    tandem::EngineMetrics m;
    m.queue_wait = snap;
    const Exposition e = parse(tandem::to_prometheus(m));
    BOOST_TEST(e.types.at("tandem_batch_queue_wait_seconds") == "histogram");
    BOOST_TEST(e.at("tandem_batch_queue_wait_seconds_bucket{le=\"1e-05\"}") == 3.0);
    BOOST_TEST(e.at("tandem_batch_queue_wait_seconds_bucket{le=\"2.5e-05\"}") == 4.0);
    BOOST_TEST(e.at("tandem_batch_queue_wait_seconds_bucket{le=\"0.005\"}") == 5.0);
    BOOST_TEST(e.at("tandem_batch_queue_wait_seconds_bucket{le=\"10\"}") == 5.0);
    BOOST_TEST(e.at("tandem_batch_queue_wait_seconds_bucket{le=\"+Inf\"}") == 6.0);
    BOOST_TEST(e.at("tandem_batch_queue_wait_seconds_count") == 6.0);
    BOOST_TEST(std::abs(e.at("tandem_batch_queue_wait_seconds_sum") - 20.003026) < 1e-9);
    BOOST_TEST(check_histograms(e) == 4);  // queue wait, and batch duration by cpu, gpu, hybrid
}

BOOST_AUTO_TEST_CASE(every_counter_is_named_with_total_and_no_seed_name_is_left) {
    tandem::Engine engine{sim_config()};
    run_everything(engine);
    const std::string text = tandem::to_prometheus(engine.metrics());
    const Exposition e = parse(text);
    int counters = 0;
    for (const auto& [family, type] : e.types) {
        BOOST_TEST((type == "counter" || type == "gauge" || type == "histogram"), family << ": " << type);
        if (type == "counter") {
            ++counters;
            BOOST_TEST(family.ends_with("_total"), family);
        } else {
            BOOST_TEST(!family.ends_with("_total"), family);
        }
        BOOST_TEST(family.rfind("tandem_", 0) == 0u, family);
    }
    BOOST_TEST(counters >= 14);
    BOOST_TEST(text.find("tandem_cpu_fallback_count") == std::string::npos);
    BOOST_TEST(text.find("tandem_gpu_utilization ") == std::string::npos);
    BOOST_TEST(text.find("# EOF") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(cpu_and_device_batches_fill_the_per_device_series_and_the_histograms) {
    tandem::Engine engine{sim_config()};
    for (int i = 0; i < 3; ++i) engine.submit(cpu_op(), iota_batch(100)).get();
    std::uint64_t device_chunks = 0;
    for (int i = 0; i < 5; ++i) device_chunks += engine.submit(device_only_op(), iota_batch(2560)).get().stats.gpu_chunks;
    engine.shutdown();  // every completion over, so the counts are final
    const tandem::EngineMetrics m = engine.metrics();
    const Exposition e = parse(tandem::to_prometheus(m));

    BOOST_TEST(e.at("tandem_batch_duration_seconds_count{device_kind=\"cpu\"}") == 3.0);
    BOOST_TEST(e.at("tandem_batch_duration_seconds_count{device_kind=\"gpu\"}") == 5.0);
    BOOST_TEST(e.at("tandem_batch_duration_seconds_count{device_kind=\"hybrid\"}") == 0.0);
    BOOST_TEST(e.at("tandem_batch_queue_wait_seconds_count") == 8.0);
    BOOST_TEST(check_histograms(e) == 4 + 2 * 4);  // + per device: chunk, h2d, kernel, d2h

    BOOST_REQUIRE_EQUAL(m.devices.size(), 2u);
    double chunks = 0, tasks = 0;
    for (const tandem::DeviceMetrics& d : m.devices) {
        BOOST_TEST_CONTEXT("device " << d.index) {
            const std::string id = "device=\"" + std::to_string(d.index) + "\"";
            BOOST_TEST(e.at("tandem_gpu_info{" + id + ",name=\"sim " + std::to_string(d.index) + "\"}") == 1.0);
            BOOST_TEST(e.at("tandem_gpu_healthy{" + id + "}") == 1.0);
            const double n = e.at("tandem_gpu_chunks_total{" + id + "}");
            const double t = e.at("tandem_gpu_tasks_total{" + id + "}");
            chunks += n;
            tasks += t;
            BOOST_TEST(e.at("tandem_gpu_transfer_bytes_total{" + id + ",direction=\"h2d\"}") == 4 * t);
            BOOST_TEST(e.at("tandem_gpu_transfer_bytes_total{" + id + ",direction=\"d2h\"}") == 4 * t);
            // The simulated device's busy time is its model's: 1 ms per chunk + 1 µs per task,
            // one chunk after another (nothing overlaps on it).
            const double busy = e.at("tandem_gpu_busy_seconds_total{" + id + "}");
            BOOST_TEST(std::abs(busy - (n * 1e-3 + t * 1e-6)) < 1e-9, "busy " << busy << " chunks " << n << " tasks " << t);
            const double u = e.at("tandem_gpu_utilization_ratio{" + id + "}");
            BOOST_TEST((u >= 0.0 && u <= 1.0), u);
            BOOST_TEST(e.at("tandem_gpu_chunk_duration_seconds_count{" + id + "}") == n);
            BOOST_TEST(e.at("tandem_gpu_stage_duration_seconds_count{" + id + ",stage=\"kernel\"}") == n);
            BOOST_TEST(e.at("tandem_gpu_pool_used_bytes{" + id + ",pool=\"device\"}") == (n > 0 ? 256.0 * 8 : 0.0));
            BOOST_TEST(e.at("tandem_gpu_pool_capacity_bytes{" + id + ",pool=\"device\"}") ==
                       static_cast<double>(engine.config().gpu.device_pool_bytes));
            BOOST_TEST(e.has("tandem_gpu_pool_used_bytes{" + id + ",pool=\"pinned\"}"));
        }
    }
    BOOST_TEST(chunks == static_cast<double>(device_chunks));
    BOOST_TEST(tasks == 5 * 2560.0);
    BOOST_TEST(e.has("tandem_op_gpu_threshold_tasks{op=\"mix_device_only\",payload=\"pageable\"}"));
    BOOST_TEST(e.has("tandem_op_model_samples{op=\"mix_device_only\",device=\"0\",payload=\"pageable\"}"));
    BOOST_TEST(e.has("tandem_op_model_per_task_seconds{op=\"mix_device_only\",device=\"cpu\"}"));
}

BOOST_AUTO_TEST_CASE(fallbacks_are_counted_by_reason) {
    struct Case {
        const char* reason;
        void (*fault)(tandem::SimulatedDevice&);
    };
    const Case cases[] = {
        {"launch_error", [](tandem::SimulatedDevice& d) { d.fail_launch = true; }},
        {"out_of_memory", [](tandem::SimulatedDevice& d) { d.fail_alloc = true; }},
        {"device_failed", [](tandem::SimulatedDevice& d) { d.fail_after_chunks = 2; }},
    };
    for (const Case& k : cases) {
        BOOST_TEST_CONTEXT(k.reason) {
            tandem::EngineConfig c = sim_config(1);
            k.fault(c.gpu.simulated[0]);
            c.gpu.cpu_helps = false;  // every task goes to the device first
            tandem::Engine engine{c};
            const auto r = engine.submit(hybrid_op(), iota_batch(5000)).get();
            BOOST_TEST(r.stats.fallback_tasks > 0u);
            const tandem::EngineMetrics m = engine.metrics();
            BOOST_TEST(m.cpu_fallback_count == r.stats.fallback_tasks);
            const Exposition e = parse(tandem::to_prometheus(m));
            for (const char* reason : {"launch_error", "out_of_memory", "device_failed", "no_kernel", "other"}) {
                const double expected = std::string{reason} == k.reason ? static_cast<double>(r.stats.fallback_tasks) : 0.0;
                BOOST_TEST(e.at("tandem_cpu_fallbacks_total{reason=\"" + std::string{reason} + "\"}") == expected, reason);
            }
            if (std::string{k.reason} == "device_failed") BOOST_TEST(e.at("tandem_gpu_healthy{device=\"0\"}") == 0.0);
        }
    }
    // A device-only op the device has no code for: it falls back (and, with no CPU function,
    // the batch fails).
    tandem::Engine engine{sim_config(1)};
    const tandem::Op<std::uint32_t, std::uint32_t> no_code{
        "no_code", tandem::GpuKernel<std::uint32_t, std::uint32_t>{std::make_shared<NoCodeKernel>()}};
    BOOST_CHECK_THROW(engine.submit(no_code, iota_batch(300)).get(), tandem::Error);
    const tandem::EngineMetrics m = engine.metrics();
    BOOST_TEST(m.fallbacks(tandem::FallbackReason::NoKernel) == 300u);
    BOOST_TEST(m.cpu_fallback_count == 300u);
}

BOOST_AUTO_TEST_CASE(error_codes_of_every_backend_fall_under_a_fallback_reason) {
    using tandem::FallbackReason;
    BOOST_TEST((tandem::fallback_reason(tandem::ExecError::OutOfMemory) == FallbackReason::OutOfMemory));
    BOOST_TEST((tandem::fallback_reason(tandem::ExecError::DeviceFailed) == FallbackReason::DeviceFailed));
    BOOST_TEST((tandem::fallback_reason(tandem::ExecError::NoImplementation) == FallbackReason::NoKernel));
    BOOST_TEST((tandem::fallback_reason(tandem::ExecError::Cancelled) == FallbackReason::Other));
    BOOST_TEST((tandem::fallback_reason(std::make_error_code(std::errc::not_enough_memory)) == FallbackReason::OutOfMemory));
    BOOST_TEST((tandem::fallback_reason(std::make_error_code(std::errc::io_error)) == FallbackReason::Other));
    BOOST_TEST((std::make_error_code(std::errc::io_error) == FallbackReason::Other));
    BOOST_TEST((tandem::make_error_code(tandem::ExecError::OutOfMemory) == FallbackReason::OutOfMemory));
    BOOST_TEST((tandem::make_error_code(tandem::ExecError::OutOfMemory) != FallbackReason::Other));
    BOOST_TEST(std::string{tandem::to_string(FallbackReason::LaunchError)} == "launch_error");
}

BOOST_AUTO_TEST_CASE(busy_time_is_the_union_of_overlapping_intervals_added_in_any_order) {
    tandem::detail::BusyTime b;
    constexpr std::int64_t s = tandem::detail::BusyTime::second;
    const std::int64_t t0 = 1000 * s;
    // Three streams: [0, 10), [5, 20) and [30, 40) ms, completing out of order, then [8, 35)
    // bridging them; the earliest chunk still in flight was issued at 0 throughout.
    const std::int64_t ms = 1'000'000;
    BOOST_TEST(b.add(t0 + 5 * ms, t0 + 20 * ms, t0) == 15 * ms);
    BOOST_TEST(b.add(t0 + 30 * ms, t0 + 40 * ms, t0) == 10 * ms);
    BOOST_TEST(b.add(t0, t0 + 10 * ms, t0) == 5 * ms);
    BOOST_TEST(b.add(t0 + 8 * ms, t0 + 35 * ms, t0 + 50 * ms) == 10 * ms);  // only [20, 30) is new
    BOOST_TEST(b.total_ns() == 40 * ms);
    // Past the horizon everything before it is final: a new interval counts whole.
    BOOST_TEST(b.add(t0 + 60 * ms, t0 + 70 * ms, t0 + 70 * ms) == 10 * ms);
    BOOST_TEST(b.total_ns() == 50 * ms);
    // Empty and reversed intervals add nothing.
    BOOST_TEST(b.add(t0 + 80 * ms, t0 + 80 * ms, t0 + 80 * ms) == 0);
    BOOST_TEST(b.add(t0 + 90 * ms, t0 + 85 * ms, t0 + 90 * ms) == 0);
}

BOOST_AUTO_TEST_CASE(busy_time_keeps_overlap_right_past_its_open_interval_limit) {
    // One long chunk in flight while many short ones complete on other streams: more open
    // intervals than kept. The union stays within the true one and never double counts.
    tandem::detail::BusyTime b;
    const std::int64_t t0 = 5000 * tandem::detail::BusyTime::second, us = 1000;
    const std::size_t n = 3 * tandem::detail::BusyTime::max_open;
    for (std::size_t i = 0; i < n; ++i) {
        const std::int64_t at = t0 + static_cast<std::int64_t>(i) * 10 * us;
        b.add(at, at + 5 * us, t0);  // 5 µs busy in every 10 µs
    }
    const std::int64_t shorts = static_cast<std::int64_t>(n) * 5 * us;
    BOOST_TEST(b.total_ns() == shorts);
    // The long chunk covers them all: the union is its length, less at most the gaps that were
    // merged to stay within the limit (here all equal; in practice the smallest go first).
    const std::int64_t end = t0 + static_cast<std::int64_t>(n) * 10 * us;
    b.add(t0, end, end);
    const auto merged = static_cast<std::int64_t>(n - tandem::detail::BusyTime::max_open);
    BOOST_TEST(b.total_ns() <= end - t0);
    BOOST_TEST(b.total_ns() >= end - t0 - merged * 5 * us);
}

BOOST_AUTO_TEST_CASE(utilization_is_the_busy_share_of_the_last_ten_seconds_and_stays_within_0_and_1) {
    tandem::detail::BusyTime b;
    constexpr std::int64_t s = tandem::detail::BusyTime::second;
    const std::int64_t now = 2000 * s;  // on a second boundary: the window is exactly 10 s
    BOOST_TEST(b.utilization(now, 10 * s) == 0.0);
    b.add(now - 4 * s, now - 2 * s, now - 30 * s);  // 2 s busy
    BOOST_TEST(std::abs(b.utilization(now, 10 * s) - 0.2) < 1e-12);
    b.add(now - 30 * s, now, now);  // busy through the whole window (and long before)
    BOOST_TEST(b.utilization(now, 10 * s) == 1.0);
    // Time credited ahead of the clock (a simulated device running ahead) is not counted
    // before it comes, and the ratio never leaves [0, 1].
    tandem::detail::BusyTime ahead;
    ahead.add(now, now + 100 * s, now + 100 * s);
    const double u = ahead.utilization(now + s / 2, 10 * s);
    BOOST_TEST((u >= 0.0 && u <= 1.0), u);
    BOOST_TEST(ahead.utilization(now + 40 * s, 10 * s) == 0.0);  // those seconds fell out of its history
}

BOOST_AUTO_TEST_CASE(histograms_off_leaves_them_out_and_keeps_the_counters) {
    tandem::EngineConfig c = sim_config(1);
    c.record_histograms = false;
    tandem::Engine engine{c};
    engine.submit(device_only_op(), iota_batch(1000)).get();
    engine.submit(cpu_op(), iota_batch(10)).get();
    const tandem::EngineMetrics m = engine.metrics();
    BOOST_TEST(!m.histograms);
    BOOST_TEST(m.batch_duration[0].count() == 0u);
    BOOST_TEST(m.devices.at(0).chunk_duration.count() == 0u);
    const std::string text = tandem::to_prometheus(m);
    BOOST_TEST(text.find("histogram") == std::string::npos);
    BOOST_TEST(text.find("tandem_gpu_tasks_total{device=\"0\"} 1000\n") != std::string::npos);
    BOOST_TEST(m.devices.at(0).busy_seconds > 0.0);
}

BOOST_AUTO_TEST_CASE(promtool_accepts_the_whole_exposition_of_an_engine_that_ran_cpu_and_device_batches,
                     *utf::precondition(PromtoolFound{})) {
    // Learned placement (explores, calibrates), fixed placement with faults, and no device.
    std::vector<tandem::EngineConfig> configs;
    tandem::EngineConfig learned = sim_config();
    learned.gpu.threshold_tasks = tandem::GpuConfig::learned;
    configs.push_back(learned);
    tandem::EngineConfig faulty = sim_config();
    faulty.gpu.simulated[1].fail_after_chunks = 3;
    configs.push_back(faulty);
    tandem::EngineConfig plain;
    plain.cpu_workers = 2;
    plain.gpu.enabled = false;
    configs.push_back(plain);
    for (std::size_t i = 0; i < configs.size(); ++i) {
        BOOST_TEST_CONTEXT("config " << i) {
            tandem::Engine engine{configs[i]};
            if (i < 2) {
                run_everything(engine, i == 1);
            } else {
                for (int b = 0; b < 3; ++b) engine.submit(cpu_op(), iota_batch(100)).get();
            }
            const std::string text = tandem::to_prometheus(engine.metrics());
            if (i < 2) {
                BOOST_TEST(text.find("tandem_gpu_busy_seconds_total{device=\"1\"}") != std::string::npos);
                BOOST_TEST(text.find("tandem_batch_duration_seconds_bucket{device_kind=\"gpu\",le=\"+Inf\"}") !=
                           std::string::npos);
                BOOST_TEST(text.find("op=\"odd \\\"name\\\" \\\\ with\\nnewline\"") != std::string::npos);
            }
            const auto [status, said] = promtool_check(text);
            BOOST_TEST(status == 0, "promtool exit status " << status);
            BOOST_TEST(said.empty(), "promtool said:\n" << said << "\non:\n" << text);
        }
    }
}
