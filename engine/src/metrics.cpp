// The Prometheus text exposition format, version 0.0.4, of `EngineMetrics`. Names follow the
// Prometheus conventions: base units (seconds, bytes) in the name, counters end in `_total`,
// ratios (0..1) in `_ratio`; labels take few values (devices, ops the program names, fixed
// enums). Families with nothing to show (no device, no op) are left out whole.
#include <tandem/engine.hpp>

#include "utf8.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tandem {
namespace {

using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

/// Builds the exposition text.
class Writer {
public:
    /// Starts a family: its HELP and TYPE lines.
    void family(std::string_view name, std::string_view type, std::string_view help) {
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        for (char c : help) {  // HELP escapes backslash and newline
            if (c == '\\') {
                out_ += "\\\\";
            } else if (c == '\n') {
                out_ += "\\n";
            } else {
                out_ += c;
            }
        }
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }

    void sample(std::string_view name, Labels labels, std::uint64_t value) {
        head(name, labels);
        char buf[24];
        out_.append(buf, std::to_chars(buf, buf + sizeof buf, value).ptr);
        out_ += '\n';
    }

    void sample(std::string_view name, Labels labels, double value) {
        head(name, labels);
        number(value);
        out_ += '\n';
    }

    /// A family with one sample.
    void single(std::string_view name, std::string_view type, std::string_view help, std::uint64_t value) {
        family(name, type, help);
        sample(name, {}, value);
    }

    /// A histogram's series: cumulative buckets (`le`), the +Inf bucket equal to the count,
    /// the sum and the count.
    void histogram(std::string_view name, Labels labels, const Histogram& h) {
        const std::string bucket = std::string{name} + "_bucket";
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i <= Histogram::bounds; ++i) {
            cumulative += h.buckets[i];
            head(bucket, labels, i);
            char buf[24];
            out_.append(buf, std::to_chars(buf, buf + sizeof buf, cumulative).ptr);
            out_ += '\n';
        }
        sample(std::string{name} + "_sum", labels, h.sum_seconds);
        sample(std::string{name} + "_count", labels, cumulative);
    }

    std::string take() { return std::move(out_); }

private:
    /// `name{labels}` and a space; `le`: the index of a histogram bound to add as `le`
    /// (Histogram::bounds: +Inf).
    void head(std::string_view name, Labels labels, std::size_t le = npos) {
        out_ += name;
        if (labels.size() != 0 || le != npos) {
            out_ += '{';
            bool first = true;
            for (const auto& [key, value] : labels) {
                if (!first) out_ += ',';
                first = false;
                out_ += key;
                out_ += "=\"";
                // Label values are UTF-8 (invalid bytes become U+FFFD: one would make a server
                // reject the whole scrape) and escape backslash, quote and newline.
                for (char c : detail::valid_utf8(value)) {
                    if (c == '\\') {
                        out_ += "\\\\";
                    } else if (c == '"') {
                        out_ += "\\\"";
                    } else if (c == '\n') {
                        out_ += "\\n";
                    } else {
                        out_ += c;
                    }
                }
                out_ += '"';
            }
            if (le != npos) {
                if (!first) out_ += ',';
                out_ += "le=\"";
                if (le < Histogram::bounds) {
                    number(Histogram::upper_bounds[le]);
                } else {
                    out_ += "+Inf";
                }
                out_ += '"';
            }
            out_ += '}';
        }
        out_ += ' ';
    }

    /// A float as Prometheus reads it: the shortest exact form, +Inf, -Inf or NaN.
    void number(double v) {
        if (std::isnan(v)) {
            out_ += "NaN";
        } else if (std::isinf(v)) {
            out_ += v > 0 ? "+Inf" : "-Inf";
        } else {
            char buf[32];
            out_.append(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
        }
    }

    static constexpr std::size_t npos = static_cast<std::size_t>(-1);
    std::string out_;
};

/// A learned threshold as a gauge: NaN while not calibrated (0), +Inf for "never".
double threshold_value(std::size_t t) {
    if (t == 0) return std::nan("");
    if (t == static_cast<std::size_t>(-1)) return std::numeric_limits<double>::infinity();
    return static_cast<double>(t);
}

/// The `device` label of a cost line: "cpu", or the index of the device the line names
/// ("gpu <slot>: <name>", see `CostModelInfo::device`).
std::string model_device(const std::string& device, const std::vector<DeviceMetrics>& devices) {
    if (device.rfind("gpu ", 0) != 0) return device;
    const std::size_t slot = std::strtoul(device.c_str() + 4, nullptr, 10);
    return std::to_string(slot < devices.size() ? devices[slot].index : static_cast<int>(slot));
}

}  // namespace

std::string to_prometheus(const EngineMetrics& m) {
    Writer w;
    w.single("tandem_batches_submitted_total", "counter", "Batches submitted.", m.batches_submitted);
    w.single("tandem_batches_completed_total", "counter", "Batches completed (with results or an error).",
             m.batches_completed);
    w.single("tandem_batches_failed_total", "counter", "Batches completed with a batch-level error.",
             m.batches_failed);
    w.single("tandem_tasks_completed_total", "counter", "Tasks completed.", m.tasks_completed);
    w.single("tandem_cpu_tasks_total", "counter", "Tasks run by CPU workers (fallbacks included).", m.cpu_tasks);
    w.family("tandem_cpu_fallbacks_total", "counter",
             "Tasks a device gave back that were rerun on the CPU workers, by reason.");
    for (int r = 1; r <= static_cast<int>(fallback_reason_count); ++r) {
        const auto reason = static_cast<FallbackReason>(r);
        w.sample("tandem_cpu_fallbacks_total", {{"reason", to_string(reason)}}, m.fallbacks(reason));
    }
    w.single("tandem_task_failures_total", "counter", "Tasks whose function threw.", m.task_failures);
    w.single("tandem_tasks_skipped_total", "counter", "Tasks not run because of cancellation or shutdown.",
             m.tasks_skipped);
    w.single("tandem_continuation_failures_total", "counter",
             "Continuations that threw on an engine thread (caught).", m.continuation_failures);
    w.single("tandem_batches_abandoned_total", "counter",
             "Batches whose memory was kept because a device was given up on.", m.batches_abandoned);
    w.single("tandem_batches_in_flight", "gauge", "Batches submitted and not yet completed.", m.batches_in_flight);
    w.single("tandem_tasks_in_flight", "gauge", "Tasks submitted and not yet completed.", m.tasks_in_flight);
    w.single("tandem_cpu_workers", "gauge", "CPU-worker actors.", m.cpu_workers);
    w.single("tandem_gpu_devices", "gauge", "Healthy devices in use.", m.gpu_devices);

    if (m.histograms) {
        w.family("tandem_batch_duration_seconds", "histogram",
                 "Batches from submit to completion, by where their tasks ran.");
        for (DeviceKind k : {DeviceKind::Cpu, DeviceKind::Gpu, DeviceKind::Hybrid}) {
            w.histogram("tandem_batch_duration_seconds", {{"device_kind", to_string(k)}},
                        m.batch_duration[static_cast<std::size_t>(k)]);
        }
        w.family("tandem_batch_queue_wait_seconds", "histogram", "Batches from submit to their first chunk starting.");
        w.histogram("tandem_batch_queue_wait_seconds", {}, m.queue_wait);
    }

    if (!m.devices.empty()) {
        std::vector<std::string> ids;
        for (const DeviceMetrics& d : m.devices) ids.push_back(std::to_string(d.index));
        // One family at a time, every device in it.
        auto each = [&](auto&& emit) {
            for (std::size_t i = 0; i < m.devices.size(); ++i) emit(m.devices[i], std::string_view{ids[i]});
        };
        w.family("tandem_gpu_info", "gauge", "Devices the engine found (always 1), with their names.");
        each([&](const DeviceMetrics& d, std::string_view id) {
            w.sample("tandem_gpu_info", {{"device", id}, {"name", d.name}}, std::uint64_t{1});
        });
        w.family("tandem_gpu_healthy", "gauge", "1 while the device is in use, 0 once it was retired after a failure.");
        each([&](const DeviceMetrics& d, std::string_view id) {
            w.sample("tandem_gpu_healthy", {{"device", id}}, std::uint64_t{d.healthy ? 1u : 0u});
        });
        w.family("tandem_gpu_busy_seconds_total", "counter",
                 "Time during which engine work executed on the device: the union of its chunks' intervals "
                 "(CUDA event times; a simulated device's model), so overlapping streams count once. A chunk "
                 "counts when it completes.");
        each([&](const DeviceMetrics& d, std::string_view id) {
            w.sample("tandem_gpu_busy_seconds_total", {{"device", id}}, d.busy_seconds);
        });
        w.family("tandem_gpu_utilization_ratio", "gauge",
                 "Share of the last 10 seconds during which engine work executed on the device.");
        each([&](const DeviceMetrics& d, std::string_view id) {
            w.sample("tandem_gpu_utilization_ratio", {{"device", id}}, d.utilization);
        });
        w.family("tandem_gpu_tasks_total", "counter", "Tasks the device ran.");
        each([&](const DeviceMetrics& d, std::string_view id) { w.sample("tandem_gpu_tasks_total", {{"device", id}}, d.tasks); });
        w.family("tandem_gpu_chunks_total", "counter", "Chunks the device ran.");
        each([&](const DeviceMetrics& d, std::string_view id) { w.sample("tandem_gpu_chunks_total", {{"device", id}}, d.chunks); });
        w.family("tandem_gpu_transfer_bytes_total", "counter",
                 "Bytes the device's chunks copied, host to device (h2d) and device to host (d2h).");
        each([&](const DeviceMetrics& d, std::string_view id) {
            w.sample("tandem_gpu_transfer_bytes_total", {{"device", id}, {"direction", "h2d"}}, d.bytes_h2d);
            w.sample("tandem_gpu_transfer_bytes_total", {{"device", id}, {"direction", "d2h"}}, d.bytes_d2h);
        });
        w.family("tandem_gpu_pool_used_bytes", "gauge",
                 "Bytes the device's buffer pools hold for reuse: page-locked staging (pinned) and device memory.");
        each([&](const DeviceMetrics& d, std::string_view id) {
            w.sample("tandem_gpu_pool_used_bytes", {{"device", id}, {"pool", "pinned"}}, std::uint64_t{d.pinned_pool_used});
            w.sample("tandem_gpu_pool_used_bytes", {{"device", id}, {"pool", "device"}}, std::uint64_t{d.device_pool_used});
        });
        w.family("tandem_gpu_pool_capacity_bytes", "gauge", "The most bytes each of the device's buffer pools may hold.");
        each([&](const DeviceMetrics& d, std::string_view id) {
            w.sample("tandem_gpu_pool_capacity_bytes", {{"device", id}, {"pool", "pinned"}},
                     std::uint64_t{d.pinned_pool_capacity});
            w.sample("tandem_gpu_pool_capacity_bytes", {{"device", id}, {"pool", "device"}},
                     std::uint64_t{d.device_pool_capacity});
        });
        if (m.histograms) {
            w.family("tandem_gpu_chunk_duration_seconds", "histogram",
                     "Device chunks from issue to completion (events for large chunks, the host clock for small).");
            each([&](const DeviceMetrics& d, std::string_view id) {
                w.histogram("tandem_gpu_chunk_duration_seconds", {{"device", id}}, d.chunk_duration);
            });
            w.family("tandem_gpu_stage_duration_seconds", "histogram",
                     "Stages of the device chunks timed with CUDA events (chunks of 256 KiB or more; every "
                     "chunk of a simulated device): copy in (h2d), kernel, copy out (d2h).");
            each([&](const DeviceMetrics& d, std::string_view id) {
                static constexpr std::string_view stages[] = {"h2d", "kernel", "d2h"};
                for (std::size_t k = 0; k < 3; ++k) {
                    w.histogram("tandem_gpu_stage_duration_seconds", {{"device", id}, {"stage", stages[k]}},
                                d.stage_duration[k]);
                }
            });
        }
    }

    if (!m.ops.empty()) {
        w.family("tandem_op_gpu_threshold_tasks", "gauge",
                 "The learned GPU threshold: the smallest batch the devices take part in on an idle engine "
                 "(NaN: not calibrated yet; +Inf: never), for pageable and page-locked (pinned) payloads.");
        for (const OpModelInfo& op : m.ops) {
            w.sample("tandem_op_gpu_threshold_tasks", {{"op", op.op}, {"payload", "pageable"}},
                     threshold_value(op.threshold_pageable));
            w.sample("tandem_op_gpu_threshold_tasks", {{"op", op.op}, {"payload", "pinned"}},
                     threshold_value(op.threshold_pinned));
        }
        struct Line {
            std::string_view name, type, help;
            double (*value)(const CostModelInfo&);
        };
        static constexpr Line lines[] = {
            {"tandem_op_model_fixed_seconds", "gauge",
             "The learned fixed cost of a batch of the op (the intercept of its cost curve's first segment).",
             [](const CostModelInfo& c) { return c.fixed_ns * 1e-9; }},
            {"tandem_op_model_per_task_seconds", "gauge",
             "The learned cost of one more task in a large batch (on the CPU: worker time summed over workers).",
             [](const CostModelInfo& c) { return c.per_task_ns * 1e-9; }},
            {"tandem_op_model_samples", "gauge", "Samples in the op's cost curve (it starts over when the device changes).",
             [](const CostModelInfo& c) { return static_cast<double>(c.samples); }},
            {"tandem_op_model_outliers", "gauge", "Samples the op's cost curve ignored as outliers.",
             [](const CostModelInfo& c) { return static_cast<double>(c.outliers); }},
            {"tandem_op_model_calibrated", "gauge", "1 once placement trusts the op's cost curve.",
             [](const CostModelInfo& c) { return c.calibrated ? 1.0 : 0.0; }},
        };
        for (const Line& line : lines) {
            w.family(line.name, line.type, line.help);
            for (const OpModelInfo& op : m.ops) {
                for (const CostModelInfo& c : op.costs) {
                    const std::string device = model_device(c.device, m.devices);
                    if (device == "cpu") {
                        w.sample(line.name, {{"op", op.op}, {"device", device}}, line.value(c));
                    } else {
                        w.sample(line.name, {{"op", op.op}, {"device", device}, {"payload", c.pinned ? "pinned" : "pageable"}},
                                 line.value(c));
                    }
                }
            }
        }
    }
    return w.take();
}

}  // namespace tandem
