// The execution trace (`EngineConfig::trace`, `Engine::write_trace`): its export parses as
// Trace Event Format JSON and holds what it promises -- every batch, every chunk on its
// worker's or stream's track, GPU stages inside their chunk, flows that connect a batch's
// submission to its chunks -- on simulated devices, so it runs in CI and under the sanitizers.
#define BOOST_TEST_MODULE trace
#include <boost/test/unit_test.hpp>

#include <tandem/tandem.hpp>

#include "sim_ops.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

// ---- a minimal JSON reader (recursive descent; enough for the export) ----------------------

struct Json {
    enum class Type { Null, Bool, Number, String, Array, Object } type = Type::Null;
    bool boolean = false;
    std::string text;  // a string's value, or a number's digits as written
    std::vector<Json> items;
    std::vector<std::pair<std::string, Json>> members;

    const Json* find(const std::string& key) const {
        for (const auto& [k, v] : members) {
            if (k == key) return &v;
        }
        return nullptr;
    }
    const Json& at(const std::string& key) const {
        const Json* v = find(key);
        if (!v) throw std::runtime_error("missing member " + key);
        return *v;
    }
    bool is_number() const { return type == Type::Number; }
    bool is_string() const { return type == Type::String; }
    double number() const { return std::stod(text); }
    std::int64_t integer() const { return std::stoll(text); }
    /// A time in microseconds with up to three decimals, as exact nanoseconds.
    std::int64_t ns() const {
        const auto dot = text.find('.');
        std::int64_t whole = std::stoll(text.substr(0, dot));
        std::int64_t frac = 0;
        if (dot != std::string::npos) {
            std::string f = text.substr(dot + 1);
            if (f.size() > 3) throw std::runtime_error("more than ns precision: " + text);
            while (f.size() < 3) f += '0';
            frac = std::stoll(f);
        }
        return whole * 1000 + (text[0] == '-' ? -frac : frac);
    }
};

class JsonReader {
public:
    explicit JsonReader(const std::string& s) : s_{s} {}
    Json parse() {
        Json v = value();
        space();
        if (i_ != s_.size()) fail("trailing characters");
        return v;
    }

private:
    [[noreturn]] void fail(const std::string& why) const {
        throw std::runtime_error("JSON: " + why + " at offset " + std::to_string(i_));
    }
    void space() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
    }
    char peek() {
        space();
        if (i_ >= s_.size()) fail("unexpected end");
        return s_[i_];
    }
    void expect(char c) {
        if (peek() != c) fail(std::string{"expected '"} + c + "'");
        ++i_;
    }
    bool literal(const char* word) {
        const std::string w{word};
        if (s_.compare(i_, w.size(), w) != 0) return false;
        i_ += w.size();
        return true;
    }
    Json value() {
        Json v;
        const char c = peek();
        if (c == '{') {
            v.type = Json::Type::Object;
            ++i_;
            if (peek() == '}') {
                ++i_;
                return v;
            }
            for (;;) {
                if (peek() != '"') fail("expected a key");
                std::string key = string();
                expect(':');
                v.members.emplace_back(std::move(key), value());
                if (peek() == ',') {
                    ++i_;
                    continue;
                }
                expect('}');
                return v;
            }
        }
        if (c == '[') {
            v.type = Json::Type::Array;
            ++i_;
            if (peek() == ']') {
                ++i_;
                return v;
            }
            for (;;) {
                v.items.push_back(value());
                if (peek() == ',') {
                    ++i_;
                    continue;
                }
                expect(']');
                return v;
            }
        }
        if (c == '"') {
            v.type = Json::Type::String;
            v.text = string();
            return v;
        }
        if (literal("true")) {
            v.type = Json::Type::Bool;
            v.boolean = true;
            return v;
        }
        if (literal("false")) {
            v.type = Json::Type::Bool;
            return v;
        }
        if (literal("null")) return v;
        const std::size_t start = i_;
        if (s_[i_] == '-') ++i_;
        while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.' ||
                                  s_[i_] == 'e' || s_[i_] == 'E' || s_[i_] == '+' || s_[i_] == '-')) {
            ++i_;
        }
        if (i_ == start) fail("unexpected character");
        v.type = Json::Type::Number;
        v.text = s_.substr(start, i_ - start);
        return v;
    }
    std::string string() {
        expect('"');
        std::string out;
        while (i_ < s_.size() && s_[i_] != '"') {
            char ch = s_[i_++];
            if (static_cast<unsigned char>(ch) < 0x20) fail("control character in a string");
            if (ch == '\\') {
                if (i_ >= s_.size()) fail("unterminated escape");
                const char e = s_[i_++];
                switch (e) {
                    case 'n': ch = '\n'; break;
                    case 't': ch = '\t'; break;
                    case 'r': ch = '\r'; break;
                    case 'b': ch = '\b'; break;
                    case 'f': ch = '\f'; break;
                    case 'u':
                        if (i_ + 4 > s_.size()) fail("short \\u escape");
                        ch = static_cast<char>(std::stoi(s_.substr(i_, 4), nullptr, 16));
                        i_ += 4;
                        break;
                    default: ch = e;
                }
            }
            out += ch;
        }
        if (i_ >= s_.size()) fail("unterminated string");
        ++i_;
        return out;
    }

    const std::string& s_;
    std::size_t i_ = 0;
};

Json parse(const std::string& s) { return JsonReader{s}.parse(); }

// ---- the checks --------------------------------------------------------------------------

using tandem::testing::iota_batch;
using tandem::testing::mix;
using tandem::testing::mix_kernel;

struct Span {
    std::int64_t begin, end;
    std::string name, cat;
    const Json* event;
};
using Track = std::pair<std::int64_t, std::int64_t>;  // (pid, tid)

/// Checks every event's fields and the document's shape; returns the "X" spans by track.
std::map<Track, std::vector<Span>> check_structure(const Json& root) {
    BOOST_REQUIRE(root.type == Json::Type::Object);
    const Json& events = root.at("traceEvents");
    BOOST_REQUIRE(events.type == Json::Type::Array);
    const Json& other = root.at("otherData");
    BOOST_TEST(other.at("dropped_events").is_number());
    BOOST_TEST(other.at("recorded_events").is_number());
    std::set<std::int64_t> named_processes;
    std::set<Track> named_threads, used_threads;
    std::map<Track, std::vector<Span>> spans;
    for (const Json& e : events.items) {
        BOOST_REQUIRE(e.type == Json::Type::Object);
        const std::string ph = e.at("ph").text;
        BOOST_REQUIRE(e.at("pid").is_number());
        BOOST_REQUIRE(e.at("tid").is_number());
        const Track track{e.at("pid").integer(), e.at("tid").integer()};
        BOOST_REQUIRE(e.at("name").is_string());
        const std::string name = e.at("name").text;
        if (ph == "M") {
            BOOST_REQUIRE(e.at("args").type == Json::Type::Object);
            if (name == "process_name") {
                BOOST_TEST(e.at("args").at("name").is_string());
                named_processes.insert(track.first);
            } else if (name == "thread_name") {
                BOOST_TEST(e.at("args").at("name").is_string());
                named_threads.insert(track);
            } else {
                BOOST_TEST((name == "process_sort_index" || name == "thread_sort_index"), name);
                BOOST_TEST(e.at("args").at("sort_index").is_number());
            }
            continue;
        }
        BOOST_REQUIRE(e.at("ts").is_number());
        BOOST_TEST(e.at("ts").ns() >= 0);
        if (ph == "X") {
            BOOST_REQUIRE(e.at("dur").is_number());
            BOOST_TEST(e.at("dur").ns() >= 0);
            BOOST_REQUIRE(e.at("cat").is_string());
            BOOST_REQUIRE(e.at("args").type == Json::Type::Object);
            spans[track].push_back(Span{e.at("ts").ns(), e.at("ts").ns() + e.at("dur").ns(), name, e.at("cat").text, &e});
            used_threads.insert(track);
        } else if (ph == "C") {
            BOOST_REQUIRE(e.at("args").type == Json::Type::Object);
            for (const auto& [k, v] : e.at("args").members) BOOST_TEST(v.is_number(), k);
        } else if (ph == "s" || ph == "f") {
            BOOST_TEST(e.at("id").is_number());
            BOOST_TEST(e.at("cat").is_string());
            if (ph == "f") BOOST_TEST(e.at("bp").text == "e");
            used_threads.insert(track);
        } else {
            BOOST_ERROR("unexpected phase " << ph);
        }
    }
    for (const Track& t : used_threads) {
        BOOST_TEST(named_processes.count(t.first) == 1u, "process " << t.first << " has no name");
        BOOST_TEST(named_threads.count(t) == 1u, "thread " << t.first << "/" << t.second << " has no name");
    }
    // On every track, spans nest or follow each other (never overlap partially).
    for (auto& [track, list] : spans) {
        std::sort(list.begin(), list.end(), [](const Span& a, const Span& b) {
            return a.begin != b.begin ? a.begin < b.begin : a.end > b.end;
        });
        std::vector<std::int64_t> open;  // ends of the enclosing spans
        for (const Span& s : list) {
            while (!open.empty() && open.back() <= s.begin) open.pop_back();
            if (!open.empty()) {
                BOOST_TEST(s.end <= open.back(), "span " << s.name << " on " << track.first << "/" << track.second
                                                         << " overlaps the one before");
            }
            open.push_back(s.end);
        }
    }
    return spans;
}

tandem::EngineConfig traced_sim_config() {
    tandem::EngineConfig c;
    c.cpu_workers = 2;
    c.idle_spin = 5us;
    c.gpu.threshold_tasks = 0;
    c.gpu.cpu_share = 0.5;  // both sides take part in every batch
    c.gpu.chunk_bytes = 512 * sizeof(std::uint32_t);
    c.cpu_chunk = 512;
    tandem::SimulatedDevice d;
    d.name = "sim \"quoted\"";  // the export escapes names
    d.fixed_cost = 5us;
    d.per_task = 20ns;
    d.real_time = true;  // its chunks end on the host clock where the model says
    c.gpu.simulated.push_back(d);
    c.trace.enabled = true;
    return c;
}

}  // namespace

BOOST_AUTO_TEST_CASE(trace_export_holds_batches_chunks_gpu_stages_and_connecting_flows) {
    tandem::Engine engine{traced_sim_config()};
    const tandem::Op<std::uint32_t, std::uint32_t> hybrid{"mix", mix, mix_kernel()};
    const tandem::Op<std::uint32_t, std::uint32_t> cpu_only{"mix_cpu", mix};
    std::vector<tandem::BatchFuture<std::uint32_t>> futures;
    std::map<std::string, std::size_t> sizes;  // tasks per op name, summed
    for (int i = 0; i < 6; ++i) {
        const std::size_t n = 2048 + 512 * static_cast<std::size_t>(i);
        futures.push_back(engine.submit(hybrid, iota_batch(n)));
        futures.push_back(engine.submit(cpu_only, iota_batch(n / 4)));
    }
    std::size_t tasks = 0;
    for (auto& f : futures) tasks += f.get().results.size();

    const Json root = parse(engine.trace_json());
    auto spans = check_structure(root);
    BOOST_TEST(root.at("otherData").at("dropped_events").integer() == 0);

    // Batches: one span each, with its size; chunks of each batch cover it exactly.
    std::map<std::int64_t, Span> batches;
    std::map<std::int64_t, std::int64_t> chunk_tasks;
    std::size_t cpu_chunks = 0, gpu_chunks = 0, stages = 0;
    for (const auto& [track, list] : spans) {
        for (const Span& s : list) {
            const Json& args = s.event->at("args");
            if (s.cat == "batch") {
                BOOST_TEST(track.first == 1);
                BOOST_TEST(!args.at("failed").boolean);
                batches.emplace(args.at("batch").integer(), s);
            } else if (s.cat == "cpu" || s.cat == "gpu") {
                BOOST_TEST(track.first == (s.cat == "cpu" ? 2 : 3));
                chunk_tasks[args.at("batch").integer()] += args.at("tasks").integer();
                (s.cat == "cpu" ? cpu_chunks : gpu_chunks) += 1;
            } else {
                BOOST_TEST(s.cat == "gpu.stage");
                ++stages;
            }
        }
    }
    BOOST_TEST(batches.size() == futures.size());
    std::int64_t batch_tasks = 0;
    for (const auto& [id, b] : batches) {
        batch_tasks += b.event->at("args").at("tasks").integer();
        BOOST_TEST(chunk_tasks[id] == b.event->at("args").at("tasks").integer(), "batch " << id);
    }
    BOOST_TEST(batch_tasks == static_cast<std::int64_t>(tasks));
    BOOST_TEST(cpu_chunks > 0u);
    BOOST_TEST(gpu_chunks > 0u);
    BOOST_TEST(stages == 3 * gpu_chunks);

    // Chunks run inside their batch; a GPU chunk's stages follow one another inside it.
    std::map<std::pair<Track, std::int64_t>, const Span*> chunk_at;  // (track, begin) -> chunk
    for (const auto& [track, list] : spans) {
        for (std::size_t i = 0; i < list.size(); ++i) {
            const Span& s = list[i];
            if (s.cat != "cpu" && s.cat != "gpu") continue;
            chunk_at[{track, s.begin}] = &s;
            const Span& b = batches.at(s.event->at("args").at("batch").integer());
            BOOST_TEST(b.begin <= s.begin);
            BOOST_TEST(s.end <= b.end);
            if (s.cat != "gpu") continue;
            // Sorted by begin (longest first): the three stages come right after their chunk.
            std::int64_t at = s.begin;
            const char* names[] = {"H2D", "kernel", "D2H"};
            std::vector<const Span*> mine;
            for (const Span& t : list) {
                if (t.cat == "gpu.stage" && t.begin >= s.begin && t.end <= s.end &&
                    t.event->at("args").at("batch").integer() == s.event->at("args").at("batch").integer()) {
                    mine.push_back(&t);
                }
            }
            BOOST_REQUIRE(mine.size() >= 3u);
            std::sort(mine.begin(), mine.end(), [](const Span* a, const Span* b) {
                return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
            });
            // The sim's copies take no time: H2D [a, a], kernel [a, b], D2H [b, b].
            for (int k = 0; k < 3; ++k) {
                const auto it = std::find_if(mine.begin(), mine.end(), [&](const Span* t) {
                    return t->name == names[k] && t->begin >= at;
                });
                BOOST_REQUIRE(it != mine.end());
                at = (*it)->end;
            }
            BOOST_TEST(at <= s.end);
        }
    }

    // Flows: each "s" at a batch's submission on its lane, each "f" at one of that batch's
    // chunks, in pairs by id, never backwards in time.
    struct Flow {
        const Json* s = nullptr;
        const Json* f = nullptr;
    };
    std::map<std::int64_t, Flow> flows;
    for (const Json& e : root.at("traceEvents").items) {
        const std::string ph = e.at("ph").text;
        if (ph != "s" && ph != "f") continue;
        Flow& fl = flows[e.at("id").integer()];
        const Json*& slot = ph == "s" ? fl.s : fl.f;
        BOOST_TEST(slot == nullptr, "two '" << ph << "' events with one id");
        slot = &e;
    }
    BOOST_TEST(flows.size() == cpu_chunks + gpu_chunks);
    for (const auto& [id, fl] : flows) {
        BOOST_REQUIRE(fl.s != nullptr);
        BOOST_REQUIRE(fl.f != nullptr);
        const Track st{fl.s->at("pid").integer(), fl.s->at("tid").integer()};
        const Track ft{fl.f->at("pid").integer(), fl.f->at("tid").integer()};
        const auto chunk = chunk_at.find({ft, fl.f->at("ts").ns()});
        BOOST_REQUIRE(chunk != chunk_at.end());
        const Span& b = batches.at(chunk->second->event->at("args").at("batch").integer());
        BOOST_TEST(fl.s->at("ts").ns() == b.begin);
        BOOST_TEST(st.first == 1);
        const auto& lane = spans.at(st);
        BOOST_TEST(std::any_of(lane.begin(), lane.end(), [&](const Span& s) { return s.event == b.event; }));
        BOOST_TEST(fl.s->at("ts").ns() <= fl.f->at("ts").ns());
    }

    // The counter of batches in flight goes up and comes back to zero.
    std::int64_t last_ts = -1, value = -1, peak = 0;
    for (const Json& e : root.at("traceEvents").items) {
        if (e.at("ph").text != "C") continue;
        BOOST_TEST(e.at("ts").ns() > last_ts);
        last_ts = e.at("ts").ns();
        value = e.at("args").at("batches").integer();
        BOOST_TEST(value >= 0);
        peak = std::max(peak, value);
    }
    BOOST_TEST(value == 0);
    BOOST_TEST(peak >= 1);
}

BOOST_AUTO_TEST_CASE(a_full_trace_keeps_the_newest_events_and_counts_the_dropped) {
    tandem::EngineConfig c;
    c.cpu_workers = 1;
    c.gpu.enabled = false;
    c.trace.enabled = true;
    c.trace.capacity = 16;
    tandem::Engine engine{c};
    const tandem::Op<std::uint32_t, std::uint32_t> op{"mix", mix};
    for (int i = 0; i < 50; ++i) engine.submit(op, iota_batch(1)).get();  // a chunk and a batch each

    const std::string path = "test_trace_full.json";
    engine.save_trace(path);
    std::ifstream in{path};
    std::stringstream text;
    text << in.rdbuf();
    std::remove(path.c_str());
    const Json root = parse(text.str());
    const auto spans = check_structure(root);
    BOOST_TEST(root.at("otherData").at("recorded_events").integer() == 100);
    BOOST_TEST(root.at("otherData").at("dropped_events").integer() == 84);
    std::size_t kept = 0;
    std::int64_t newest = 0;
    for (const auto& [track, list] : spans) {
        kept += list.size();
        for (const Span& s : list) newest = std::max(newest, s.event->at("args").at("batch").integer());
    }
    BOOST_TEST(kept == 16u);
    BOOST_TEST(newest == 50);
    BOOST_CHECK_THROW(engine.save_trace("/nonexistent-dir/trace.json"), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(op_names_that_are_long_or_not_utf8_export_as_valid_utf8) {
    // The trace keeps 28 bytes of an op's name: cut inside a multi-byte character, or with
    // bytes that are not UTF-8 at all, the file must still be valid UTF-8 (strict readers,
    // Python's json among them, refuse it otherwise).
    tandem::EngineConfig c;
    c.cpu_workers = 1;
    c.gpu.enabled = false;
    c.trace.enabled = true;
    tandem::Engine engine{c};
    const tandem::Op<std::uint32_t, std::uint32_t> long_name{"abcdefghijklmnopqrstuvwxyzA\xc3\xa9", mix};
    const tandem::Op<std::uint32_t, std::uint32_t> bad_bytes{"bad \xff name", mix};
    engine.submit(long_name, iota_batch(10)).get();
    engine.submit(bad_bytes, iota_batch(10)).get();
    const std::string json = engine.trace_json();
    // Every byte sequence valid: a lead byte followed by the right number of continuation bytes.
    bool valid = true;
    for (std::size_t i = 0; i < json.size() && valid;) {
        const auto b = static_cast<unsigned char>(json[i]);
        const std::size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        valid = n != 0 && i + n <= json.size() && (b < 0x80 || b >= 0xC2);
        for (std::size_t k = 1; valid && k < n; ++k) valid = (static_cast<unsigned char>(json[i + k]) & 0xC0) == 0x80;
        i += n == 0 ? 1 : n;
    }
    BOOST_TEST(valid);
    BOOST_TEST(json.find("abcdefghijklmnopqrstuvwxyzA\"") != std::string::npos);  // cut before the \xc3
    BOOST_TEST(json.find("bad \xef\xbf\xbd name") != std::string::npos);
    check_structure(parse(json));
}

BOOST_AUTO_TEST_CASE(tracing_is_off_by_default_and_the_export_then_names_the_tracks_only) {
    tandem::EngineConfig c;
    c.cpu_workers = 2;
    c.gpu.enabled = false;
    tandem::Engine engine{c};
    BOOST_TEST(!engine.config().trace.enabled);
    const tandem::Op<std::uint32_t, std::uint32_t> op{"mix", mix};
    engine.submit(op, iota_batch(100)).get();
    const Json root = parse(engine.trace_json());
    check_structure(root);
    for (const Json& e : root.at("traceEvents").items) BOOST_TEST(e.at("ph").text == "M");
    BOOST_TEST(root.at("otherData").at("recorded_events").integer() == 0);
}

BOOST_AUTO_TEST_CASE(exporting_while_batches_run_gives_valid_json_every_time) {
    tandem::EngineConfig c = traced_sim_config();
    c.trace.capacity = 64;  // the writers lap the ring while it is read
    tandem::Engine engine{c};
    const tandem::Op<std::uint32_t, std::uint32_t> hybrid{"mix", mix, mix_kernel()};
    std::atomic<bool> done{false};
    std::thread submitter{[&] {
        for (int i = 0; i < 200; ++i) engine.submit(hybrid, iota_batch(1024 + static_cast<std::size_t>(i))).get();
        done = true;
    }};
    int exports = 0;
    while (!done || exports < 3) {
        const Json root = parse(engine.trace_json());
        check_structure(root);
        ++exports;
    }
    submitter.join();
    const Json root = parse(engine.trace_json());
    check_structure(root);
    BOOST_TEST(root.at("otherData").at("dropped_events").integer() > 0);
}
