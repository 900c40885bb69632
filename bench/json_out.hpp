#pragma once
// A tiny JSON writer for the benchmarks' `--json FILE` output, which bench/plot.py turns into
// PNG plots. Header-only, standard library only, and plain C++17 so that nvcc compiles it in
// bench/gpu and bench/hybrid too.
//
// Every benchmark writes one object:
//   {"benchmark": "cpu_latency",
//    "machine": {"hardware_threads": 16, "cpu": "...", "gpu": "NVIDIA H200" | null, ...},
//    "command": ["bench_cpu_latency", "--quick", ...],
//    "results": [{"name", "tandem", "baseline", "unit", "ratio", "target_op", "target", "met"}],
//    ...benchmark-specific arrays (hybrid: "sizes", "large"; server: "modes")}
// `target_op` is "<=", ">=", "<" or null; `target` a number or null; `met` true, false or null
// (no target). Numbers that are not finite are written as null.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace bench::json {

/// `s` as a JSON string literal, quotes included. Bytes >= 0x80 pass through (UTF-8 stays UTF-8).
inline std::string quote(const std::string& s) {
    std::string out;
    out.reserve(s.size() + 2);
    out += '"';
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    char b[8];
                    std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(c));
                    out += b;
                } else {
                    out += ch;
                }
        }
    }
    out += '"';
    return out;
}

/// Streaming writer: objects and arrays nest, commas are placed for you. Misuse (a value
/// without a key inside an object) is the caller's bug; nothing checks it.
class Writer {
public:
    Writer& begin_object() { return open('{'); }
    Writer& end_object() { return close('}'); }
    Writer& begin_array() { return open('['); }
    Writer& end_array() { return close(']'); }

    /// The key of the next member of the current object.
    Writer& key(const std::string& k) {
        comma(first_.size() == 1);  // top-level members one per line
        out_ += quote(k);
        out_ += ':';
        after_key_ = true;
        return *this;
    }

    Writer& value(const std::string& s) { return raw(quote(s)); }
    Writer& value(const char* s) { return s ? raw(quote(s)) : null(); }
    Writer& value(bool b) { return raw(b ? "true" : "false"); }
    Writer& value(double d) {
        if (!std::isfinite(d)) return null();
        char b[32];
        std::snprintf(b, sizeof b, "%.10g", d);
        return raw(b);
    }
    template <class T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
    Writer& value(T v) {
        return raw(std::to_string(v));
    }
    Writer& null() { return raw("null"); }

    /// key + value in one call.
    template <class T>
    Writer& member(const std::string& k, const T& v) {
        key(k);
        return value(v);
    }

    /// Inserts already-rendered JSON as one value.
    Writer& raw(const std::string& json) {
        comma();
        out_ += json;
        return *this;
    }

    const std::string& str() const { return out_; }

private:
    // One line per top-level member and per object or array inside an array: readable and
    // diffable, still small.
    Writer& open(char c) {
        comma(in_array_.empty() ? false : in_array_.back());
        out_ += c;
        first_.push_back(true);
        in_array_.push_back(c == '[');
        return *this;
    }
    Writer& close(char c) {
        first_.pop_back();
        in_array_.pop_back();
        out_ += c;
        return *this;
    }
    void comma(bool newline = false) {
        if (after_key_) {
            after_key_ = false;
            return;
        }
        if (first_.empty()) return;
        if (!first_.back()) out_ += ',';
        first_.back() = false;
        if (newline) out_ += "\n ";
    }

    std::string out_;
    std::vector<bool> first_, in_array_;
    bool after_key_ = false;
};

/// One benchmark figure compared with its baseline (the JSON twin of a `RESULT` line).
struct Result {
    std::string name;
    double tandem = 0.0;
    double baseline = 0.0;
    std::string unit;
    double ratio = 0.0;
    /// "<=", ">=", "<" or empty: no target (then `target` and `met` are written as null).
    std::string target_op;
    double target = 0.0;
    bool met = false;
};

/// The CPU model name from /proc/cpuinfo, or empty.
inline std::string cpu_model() {
    std::ifstream f{"/proc/cpuinfo"};
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("model name", 0) == 0) {
            const auto colon = line.find(':');
            if (colon == std::string::npos) break;
            const auto start = line.find_first_not_of(' ', colon + 1);
            return start == std::string::npos ? std::string{} : line.substr(start);
        }
    }
    return {};
}

/// A whole `--json` file: the benchmark's name, the machine, the command, the results, and any
/// benchmark-specific members added with `extra`.
class Report {
public:
    explicit Report(std::string benchmark) : benchmark_{std::move(benchmark)} {}

    void set_command(int argc, char** argv) {
        command_.clear();
        for (int i = 0; i < argc; ++i) command_.emplace_back(argv[i]);
    }
    void set_command(std::vector<std::string> command) { command_ = std::move(command); }
    void set_gpu(std::string name, int count) {
        gpu_ = std::move(name);
        gpu_count_ = count;
    }
    void add(Result r) { results_.push_back(std::move(r)); }

    /// A benchmark-specific top-level member: `write(w)` writes exactly one value.
    template <class F>
    void extra(const std::string& key, F&& write) {
        Writer w;
        write(w);
        extras_.emplace_back(key, w.str());
    }

    std::string render() const {
        Writer w;
        w.begin_object();
        w.member("benchmark", benchmark_);
        w.key("machine").begin_object();
        const unsigned hw = std::thread::hardware_concurrency();
        w.member("hardware_threads", hw == 0 ? 1u : hw);
        const std::string cpu = cpu_model();
        w.key("cpu");
        if (cpu.empty()) w.null(); else w.value(cpu);
        w.key("gpu");
        if (gpu_.empty()) w.null(); else w.value(gpu_);
        w.member("gpu_count", gpu_count_);
        w.end_object();
        w.member("time_utc", utc_now());
        w.key("command").begin_array();
        for (const auto& a : command_) w.value(a);
        w.end_array();
        w.key("results").begin_array();
        for (const auto& r : results_) {
            w.begin_object();
            w.member("name", r.name).member("tandem", r.tandem).member("baseline", r.baseline);
            w.member("unit", r.unit).member("ratio", r.ratio);
            if (r.target_op.empty()) {
                w.key("target_op").null().key("target").null().key("met").null();
            } else {
                w.member("target_op", r.target_op).member("target", r.target).member("met", r.met);
            }
            w.end_object();
        }
        w.end_array();
        for (const auto& [k, v] : extras_) w.key(k).raw(v);
        w.end_object();
        return w.str() + "\n";
    }

    /// Writes the report to `path`; says so on stderr and returns false when it cannot.
    bool write(const std::string& path) const {
        const std::string text = render();
        std::FILE* f = std::fopen(path.c_str(), "w");
        const bool ok = f != nullptr && std::fwrite(text.data(), 1, text.size(), f) == text.size();
        if (f != nullptr && std::fclose(f) != 0) return complain(path);
        return ok ? true : complain(path);
    }

private:
    static bool complain(const std::string& path) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        return false;
    }
    static std::string utc_now() {
        const std::time_t t = std::time(nullptr);
        std::tm tm{};
#if defined(_WIN32)
        gmtime_s(&tm, &t);
#else
        gmtime_r(&t, &tm);
#endif
        char b[32];
        std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
        return b;
    }

    std::string benchmark_;
    std::string gpu_;
    int gpu_count_ = 0;
    std::vector<std::string> command_;
    std::vector<Result> results_;
    std::vector<std::pair<std::string, std::string>> extras_;
};

}  // namespace bench::json
