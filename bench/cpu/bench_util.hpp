#pragma once
// Shared helpers for the CPU benchmarks: argument parsing, timing, percentiles, and the
// closing machine-readable `RESULT ...` lines, and the same results as JSON with `--json FILE`
// (bench/json_out.hpp; bench/plot.py draws them). Header-only; no engine types here.

#include "../json_out.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace bench {

using Clock = std::chrono::steady_clock;

/// Nanoseconds between two time points, as a double.
inline double ns_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::nano>(b - a).count();
}

/// Hardware threads of this machine (at least 1). Where a figure says "16 threads" the
/// benchmarks use this, so the same binary gives the 16-core figure on a 16-core machine.
inline std::size_t hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
}

/// `--name=value` (or `--name value`) and `--flag` arguments. Unknown arguments stop the
/// program with a usage line, so a typo never silently runs the defaults.
class Args {
public:
    Args(int argc, char** argv, std::string usage) : usage_{std::move(usage)} {
        for (int i = 0; i < argc; ++i) command_.emplace_back(argv[i]);
        for (int i = 1; i < argc; ++i) {
            std::string_view a{argv[i]};
            if (a == "--help" || a == "-h") {
                std::printf("%s\n", usage_.c_str());
                std::exit(0);
            }
            if (a.substr(0, 2) != "--") fail(a);
            a.remove_prefix(2);
            const auto eq = a.find('=');
            if (eq == std::string_view::npos && i + 1 < argc && std::string_view{argv[i + 1]}.substr(0, 2) != "--") {
                items_.push_back({std::string{a}, std::string{argv[++i]}, true, false});  // --name value
                continue;
            }
            items_.push_back({std::string{a.substr(0, eq)},
                              eq == std::string_view::npos ? std::string{} : std::string{a.substr(eq + 1)},
                              eq != std::string_view::npos, false});
        }
    }

    /// The value of `--name=text`, or `fallback`.
    std::string str(std::string_view name, std::string fallback = {}) {
        for (auto& it : items_) {
            if (it.name != name || !it.has_value) continue;
            it.used = true;
            return it.value;
        }
        return fallback;
    }

    /// The command line, program name first (for the JSON output).
    const std::vector<std::string>& command() const { return command_; }

    /// True when `--name` was given (as a flag).
    bool flag(std::string_view name) {
        for (auto& it : items_) {
            if (it.name == name && !it.has_value) return it.used = true;
        }
        return false;
    }

    /// The value of `--name=N`, or `fallback`.
    std::uint64_t num(std::string_view name, std::uint64_t fallback) {
        for (auto& it : items_) {
            if (it.name != name || !it.has_value) continue;
            it.used = true;
            std::uint64_t v = 0;
            const char* first = it.value.data();
            const char* last = first + it.value.size();
            auto [p, ec] = std::from_chars(first, last, v);
            std::uint64_t scale = 1;
            if (ec == std::errc{} && p != last) {
                switch (*p) {
                    case 'k': case 'K': scale = 1000; ++p; break;
                    case 'M': scale = std::uint64_t{1} << 20; ++p; break;
                    case 'm': scale = 1000000; ++p; break;
                    default: break;
                }
            }
            if (ec != std::errc{} || p != last) fail("--" + it.name + "=" + it.value);
            return v * scale;
        }
        return fallback;
    }

    /// The comma-separated list `--name=a,b,c`, or `fallback`.
    std::vector<std::uint64_t> list(std::string_view name, std::vector<std::uint64_t> fallback) {
        for (auto& it : items_) {
            if (it.name != name || !it.has_value) continue;
            it.used = true;
            std::vector<std::uint64_t> out;
            std::stringstream ss{it.value};
            std::string part;
            while (std::getline(ss, part, ',')) {
                std::uint64_t v = 0;
                auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
                if (ec != std::errc{} || p != part.data() + part.size() || v == 0) fail("--" + it.name + "=" + it.value);
                out.push_back(v);
            }
            if (out.empty()) fail("--" + it.name + "=" + it.value);
            return out;
        }
        return fallback;
    }

    /// Stops with the usage line if an argument was not understood.
    void finish() const {
        for (const auto& it : items_) {
            if (!it.used) fail("--" + it.name + (it.has_value ? "=" + it.value : std::string{}));
        }
    }

private:
    struct Item {
        std::string name, value;
        bool has_value = false;
        bool used = false;
    };

    [[noreturn]] void fail(std::string_view what) const {
        std::fprintf(stderr, "unknown or malformed argument: %.*s\n%s\n", static_cast<int>(what.size()),
                     what.data(), usage_.c_str());
        std::exit(2);
    }

    std::string usage_;
    std::vector<std::string> command_;
    std::vector<Item> items_;
};

/// The p-th percentile (0..100) of `v` (sorted in place), nearest rank.
inline double percentile(std::vector<double>& v, double p) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
    return v[static_cast<std::size_t>(rank + 0.5)];
}

/// The median of `v` (copied).
inline double median(std::vector<double> v) { return percentile(v, 50.0); }

/// One figure compared with its baseline, printed as
/// `RESULT name=… tandem=<v><unit> baseline=<v><unit> ratio=<x> target=<t> met=<yes|no|n/a>`.
struct Result {
    std::string name;
    double tandem = 0.0;
    double baseline = 0.0;
    std::string unit;
    /// "<=" or ">=" the ratio tandem/baseline must satisfy, or empty (no target).
    std::string target_op;
    double target = 0.0;

    double ratio() const { return baseline > 0.0 ? tandem / baseline : 0.0; }
    bool has_target() const { return !target_op.empty(); }
    bool met() const {
        return target_op == "<=" ? ratio() <= target : target_op == ">=" ? ratio() >= target : true;
    }
};

inline void print_results(const std::vector<Result>& results) {
    for (const auto& r : results) {
        std::printf("RESULT name=%s tandem=%.4g%s baseline=%.4g%s ratio=%.3f", r.name.c_str(), r.tandem,
                    r.unit.c_str(), r.baseline, r.unit.c_str(), r.ratio());
        if (r.has_target()) {
            std::printf(" target=%s%.4g met=%s\n", r.target_op.c_str(), r.target, r.met() ? "yes" : "no");
        } else {
            std::printf(" target=none met=n/a\n");
        }
    }
    std::fflush(stdout);
}

/// `results` as the JSON twin of `RESULT` lines.
inline json::Result to_json(const Result& r) {
    return {r.name, r.tandem, r.baseline, r.unit, r.ratio(), r.target_op, r.target, r.has_target() && r.met()};
}

/// Writes `results` to `path` as `{"benchmark": name, "machine": ..., "results": [...]}`
/// (nothing when `path` is empty). Returns false, having said why, when the file cannot be
/// written.
inline bool write_json(const std::string& path, const std::string& benchmark, const Args& args,
                       const std::vector<Result>& results) {
    if (path.empty()) return true;
    json::Report report{benchmark};
    report.set_command(args.command());
    for (const auto& r : results) report.add(to_json(r));
    return report.write(path);
}

/// Both outputs: the `RESULT` lines, then the JSON file when `--json` named one. Returns the
/// exit status (1 when the JSON file could not be written).
inline int report(const std::vector<Result>& results, const std::string& json_path, const std::string& benchmark,
                  const Args& args) {
    print_results(results);
    return write_json(json_path, benchmark, args, results) ? 0 : 1;
}

/// A spin-wait hint (PAUSE on x86).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

/// CPU time (user + system) this process has used so far, in seconds (0 where unknown).
inline double process_cpu_seconds() {
#if defined(__linux__)
    rusage r{};
    getrusage(RUSAGE_SELF, &r);
    return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
#else
    return 0.0;
#endif
}

/// Measures how much CPU *other* processes used while a benchmark ran (Linux: /proc/stat
/// against this process's rusage), so a run disturbed by a compile or another job says so.
class MachineLoad {
public:
    MachineLoad() : start_{sample()} {}

    /// Prints one line: other processes' CPU use as a share of the machine, and steal time.
    void report() const {
        const Sample end = sample();
        if (!start_.ok || !end.ok) return;
        const double wall = ns_between(start_.when, end.when) / 1e9;
        const double capacity = wall * static_cast<double>(hardware_threads());
        if (capacity <= 0.0) return;
        const double busy = (end.busy - start_.busy) / end.ticks_per_s;
        const double self = end.self_s - start_.self_s;
        const double steal = (end.steal - start_.steal) / end.ticks_per_s;
        const double others = std::max(0.0, busy - self);
        std::printf("machine load: other processes used %.1f%% of %zu hardware threads during this run "
                    "(steal %.1f%%)%s\n",
                    100.0 * others / capacity, hardware_threads(), 100.0 * steal / capacity,
                    others / capacity > 0.05 ? " -- DISTURBED, figures unreliable" : "");
    }

private:
    struct Sample {
        bool ok = false;
        Clock::time_point when{};
        double busy = 0, steal = 0, self_s = 0, ticks_per_s = 100;
    };

    static Sample sample() {
        Sample s;
        s.when = Clock::now();
#if defined(__linux__)
        std::FILE* f = std::fopen("/proc/stat", "r");
        if (!f) return s;
        unsigned long long v[10] = {};
        const int got = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                                    &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
        std::fclose(f);
        if (got < 8) return s;
        // user nice system idle iowait irq softirq steal (guest times are inside user/nice)
        s.busy = static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6]);
        s.steal = static_cast<double>(v[7]);
        s.self_s = process_cpu_seconds();
        s.ticks_per_s = static_cast<double>(sysconf(_SC_CLK_TCK));
        s.ok = true;
#endif
        return s;
    }

    Sample start_;
};

/// Keeps the compiler from discarding a value.
template <class T>
inline void do_not_optimize(const T& value) {
    asm volatile("" : : "r,m"(value) : "memory");
}

}  // namespace bench
