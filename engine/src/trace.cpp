// The execution trace: the ring engine threads record into, and its export as Trace Event
// Format JSON (the format of chrome://tracing, which https://ui.perfetto.dev opens too).
//
// Tracks: process 1 "batches" (each batch from submit to completion, on as many lanes as
// overlapping batches need, and a "batches in flight" counter), process 2 "CPU workers" (a
// thread per worker), process 3 + d "GPU d: name" (a thread per stream; a chunk's H2D, kernel
// and D2H nest inside it). Flow arrows ("s" -> "f") run from a batch's submission to each of
// its chunks.
#include "trace.hpp"
#include "utf8.hpp"

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <ostream>
#include <queue>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>

namespace tandem::detail {

void TraceEvent::set_op(std::string_view name) noexcept {
    // Cut at a character's start: a name cut inside a UTF-8 sequence is not valid text.
    const std::string_view kept = utf8_prefix(name, sizeof(op) - 1);
    std::memcpy(op, kept.data(), kept.size());
    op[kept.size()] = '\0';
}

TraceRing::TraceRing(std::size_t capacity, std::chrono::steady_clock::time_point origin)
    : capacity_{std::max<std::size_t>(capacity, 1)}, origin_ns_{origin.time_since_epoch().count()},
      slots_{std::make_unique<Slot[]>(capacity_)} {}

std::vector<TraceEvent> TraceRing::snapshot(std::uint64_t& recorded) const {
    recorded = head_.load(std::memory_order_relaxed);
    std::vector<std::pair<std::uint64_t, TraceEvent>> kept;
    kept.reserve(std::min<std::uint64_t>(recorded, capacity_));
    for (std::size_t i = 0; i < capacity_; ++i) {
        const Slot& s = slots_[i];
        // A slot a writer is filling right now is skipped, not waited for: a writer at idle
        // priority preempted mid-fill would otherwise hold the exporter (and the exporter,
        // holding a slot, the engine's threads). It is one event of the newest.
        if (s.busy.exchange(true, std::memory_order_acquire)) continue;
        if (s.ticket != ~std::uint64_t{0}) kept.emplace_back(s.ticket, s.event);
        s.busy.store(false, std::memory_order_release);
    }
    std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<TraceEvent> out;
    out.reserve(kept.size());
    for (auto& k : kept) out.push_back(k.second);
    return out;
}

namespace {

constexpr int batches_pid = 1;
constexpr int cpu_pid = 2;
constexpr int first_gpu_pid = 3;

/// Writes `s` as a JSON string (valid UTF-8: invalid bytes become U+FFFD).
void json_string(std::ostream& out, std::string_view text) {
    const std::string s = valid_utf8(text);
    out << '"';
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out << '\\' << ch;
        } else if (c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            out << "\\u00" << hex[c >> 4] << hex[c & 15];
        } else {
            out << ch;
        }
    }
    out << '"';
}

/// Microseconds with three decimals, exactly (ns / 1000): ordering survives the conversion.
struct Micros {
    std::int64_t ns;
};
std::ostream& operator<<(std::ostream& out, Micros m) {
    std::int64_t ns = m.ns;
    if (ns < 0) {
        out << '-';
        ns = -ns;
    }
    const std::int64_t frac = ns % 1000;
    out << ns / 1000 << '.' << static_cast<char>('0' + frac / 100) << static_cast<char>('0' + frac / 10 % 10)
        << static_cast<char>('0' + frac % 10);
    return out;
}

class Writer {
public:
    Writer(std::ostream& out, std::int64_t origin) : out_{out}, origin_{origin} {}

    /// Starts an event object: `{"ph":..,"pid":..,"tid":..` (the caller adds fields and `}`).
    void begin(char ph, int pid, std::uint64_t tid) {
        out_ << (first_ ? "\n" : ",\n") << R"({"ph":")" << ph << R"(","pid":)" << pid << R"(,"tid":)" << tid;
        first_ = false;
    }
    void ts(std::int64_t ns) { out_ << R"(,"ts":)" << Micros{ns - origin_}; }
    void dur(std::int64_t ns) { out_ << R"(,"dur":)" << Micros{ns}; }
    void name(std::string_view n) {
        out_ << R"(,"name":)";
        json_string(out_, n);
    }
    void cat(std::string_view c) {
        out_ << R"(,"cat":)";
        json_string(out_, c);
    }
    std::ostream& raw() { return out_; }

    void meta(const char* what, int pid, std::uint64_t tid, std::string_view value) {
        begin('M', pid, tid);
        out_ << R"(,"name":")" << what << R"(","args":{"name":)";
        json_string(out_, value);
        out_ << "}}";
    }
    void sort_index(const char* what, int pid, std::uint64_t tid, std::int64_t index) {
        begin('M', pid, tid);
        out_ << R"(,"name":")" << what << R"(","args":{"sort_index":)" << index << "}}";
    }
    /// A complete event ("X").
    void span(int pid, std::uint64_t tid, std::string_view name, std::string_view cat, std::int64_t b,
              std::int64_t e) {
        begin('X', pid, tid);
        this->name(name);
        this->cat(cat);
        ts(b);
        dur(e - b);
    }

private:
    std::ostream& out_;
    const std::int64_t origin_;
    bool first_ = true;
};

}  // namespace

void write_trace_json(std::ostream& out, const TraceRing* ring, const TraceLayout& layout) {
    std::uint64_t recorded = 0;
    const std::vector<TraceEvent> events = ring ? ring->snapshot(recorded) : std::vector<TraceEvent>{};
    const std::int64_t origin = ring ? ring->origin_ns() : 0;
    Writer w{out, origin};
    out << R"({"displayTimeUnit":"ns","traceEvents":[)";

    // Batches on lanes: each batch takes the lowest lane free at its submission, so spans on
    // one lane never overlap (a track shows nested or disjoint slices only).
    struct Placed {
        std::size_t lane;
        std::int64_t begin;
    };
    std::unordered_map<std::uint64_t, Placed> batch_at;  // batch id -> its lane and submission
    std::vector<const TraceEvent*> batches;
    for (const TraceEvent& e : events) {
        if (e.kind == TraceKind::Batch) batches.push_back(&e);
    }
    std::sort(batches.begin(), batches.end(), [](const TraceEvent* a, const TraceEvent* b) {
        return a->begin_ns != b->begin_ns ? a->begin_ns < b->begin_ns : a->end_ns > b->end_ns;
    });
    std::size_t lanes = 0;
    std::set<std::size_t> free_lanes;
    using Busy = std::pair<std::int64_t, std::size_t>;  // (end, lane)
    std::priority_queue<Busy, std::vector<Busy>, std::greater<>> busy;
    for (const TraceEvent* b : batches) {
        while (!busy.empty() && busy.top().first <= b->begin_ns) {
            free_lanes.insert(busy.top().second);
            busy.pop();
        }
        std::size_t lane = lanes;
        if (!free_lanes.empty()) {
            lane = *free_lanes.begin();
            free_lanes.erase(free_lanes.begin());
        } else {
            ++lanes;
        }
        busy.emplace(b->end_ns, lane);
        batch_at[b->batch] = Placed{lane, b->begin_ns};
    }

    // Names of every track (the workers' and devices' even when they recorded nothing).
    w.meta("process_name", batches_pid, 0, "batches");
    w.sort_index("process_sort_index", batches_pid, 0, 0);
    for (std::size_t l = 0; l < lanes; ++l) w.meta("thread_name", batches_pid, l, "batches " + std::to_string(l));
    w.meta("process_name", cpu_pid, 0, "CPU workers");
    w.sort_index("process_sort_index", cpu_pid, 0, 1);
    for (std::size_t i = 0; i < layout.cpu_workers; ++i) {
        w.meta("thread_name", cpu_pid, i, "worker " + std::to_string(i));
        w.sort_index("thread_sort_index", cpu_pid, i, static_cast<std::int64_t>(i));
    }
    if (std::any_of(events.begin(), events.end(), [](const TraceEvent& e) {
            return e.kind == TraceKind::CpuChunk && e.track == TraceEvent::no_worker;
        })) {
        w.meta("thread_name", cpu_pid, TraceEvent::no_worker, "other threads");
    }
    std::set<std::uint32_t> waiters;  // threads that ran chunks of the batch they waited for
    for (const TraceEvent& e : events) {
        if (e.kind == TraceKind::CpuChunk && e.track >= TraceEvent::first_waiter && e.track != TraceEvent::no_worker) {
            waiters.insert(e.track);
        }
    }
    for (std::uint32_t t : waiters) {
        w.meta("thread_name", cpu_pid, t, "waiting thread " + std::to_string(t - TraceEvent::first_waiter));
    }
    std::set<std::pair<std::uint32_t, std::uint32_t>> streams;  // (device, stream) seen
    for (const TraceEvent& e : events) {
        if (e.kind == TraceKind::GpuChunk) streams.emplace(e.device, e.track);
    }
    for (std::size_t d = 0; d < layout.devices.size(); ++d) {
        const int pid = first_gpu_pid + static_cast<int>(d);
        w.meta("process_name", pid, 0, "GPU " + std::to_string(d) + ": " + layout.devices[d]);
        w.sort_index("process_sort_index", pid, 0, 2 + static_cast<std::int64_t>(d));
    }
    for (const auto& [device, stream] : streams) {
        const int pid = first_gpu_pid + static_cast<int>(device);
        if (device >= layout.devices.size()) w.meta("process_name", pid, 0, "GPU " + std::to_string(device));
        w.meta("thread_name", pid, stream, "stream " + std::to_string(stream));
        w.sort_index("thread_sort_index", pid, stream, stream);
    }

    // The events. Flow ids are the chunk's position in the snapshot (unique in this export).
    std::uint64_t flow_id = 0;
    for (const TraceEvent& e : events) {
        ++flow_id;
        int pid = cpu_pid;
        std::uint64_t tid = e.track;
        const char* cat = "cpu";
        switch (e.kind) {
            case TraceKind::Batch: {
                w.span(batches_pid, batch_at[e.batch].lane, e.op, "batch", e.begin_ns, e.end_ns);
                w.raw() << R"(,"args":{"batch":)" << e.batch << R"(,"tasks":)" << e.tasks << R"(,"failed":)"
                        << (e.failed ? "true" : "false") << "}}";
                continue;
            }
            case TraceKind::CpuChunk: break;
            case TraceKind::GpuChunk:
                pid = first_gpu_pid + static_cast<int>(e.device);
                cat = "gpu";
                break;
        }
        w.span(pid, tid, e.op, cat, e.begin_ns, e.end_ns);
        w.raw() << R"(,"args":{"batch":)" << e.batch << R"(,"first_task":)" << e.first_task << R"(,"tasks":)"
                << e.tasks << "}}";
        if (e.kind == TraceKind::GpuChunk && e.stages) {
            static constexpr const char* stage_names[] = {"H2D", "kernel", "D2H"};
            for (int s = 0; s < 3; ++s) {
                w.span(pid, tid, stage_names[s], "gpu.stage", e.stage_ns[s], e.stage_ns[s + 1]);
                w.raw() << R"(,"args":{"batch":)" << e.batch << "}}";
            }
        }
        const auto b = batch_at.find(e.batch);
        if (b == batch_at.end()) continue;  // its batch is still running, or was overwritten
        w.begin('s', batches_pid, b->second.lane);
        w.name("submit");
        w.cat("flow");
        w.ts(b->second.begin);
        w.raw() << R"(,"id":)" << flow_id << "}";
        w.begin('f', pid, tid);
        w.name("submit");
        w.cat("flow");
        w.ts(e.begin_ns);
        w.raw() << R"(,"bp":"e","id":)" << flow_id << "}";
    }

    // Batches in flight, as a counter track: +1 at each submission, -1 at each completion.
    std::vector<std::pair<std::int64_t, int>> steps;
    for (const TraceEvent* b : batches) {
        steps.emplace_back(b->begin_ns, 1);
        steps.emplace_back(b->end_ns, -1);
    }
    std::sort(steps.begin(), steps.end());  // at equal times, completions (-1) first
    long in_flight = 0;
    for (std::size_t i = 0; i < steps.size(); ++i) {
        in_flight += steps[i].second;
        if (i + 1 < steps.size() && steps[i + 1].first == steps[i].first) continue;  // one sample per instant
        w.begin('C', batches_pid, 0);
        w.name("batches in flight");
        w.ts(steps[i].first);
        w.raw() << R"(,"args":{"batches":)" << in_flight << "}}";
    }

    const std::uint64_t capacity = ring ? ring->capacity() : 0;
    out << "\n],\"otherData\":{\"clock\":\"host steady clock, microseconds since the engine started\""
        << ",\"recorded_events\":" << recorded
        << ",\"dropped_events\":" << (recorded > capacity ? recorded - capacity : 0)
        << ",\"capacity\":" << capacity << "}}\n";
}

}  // namespace tandem::detail
