// A seeded, randomized stress test of the engine's central promise: every submitted batch
// completes exactly once — with every output right, or with an error that what was done to it
// allows — and nothing hangs or crashes, under a random mix of CPU workers, simulated devices
// with faults (failed launches and allocations, devices that fail, chunks that hang until
// shutdown), concurrent submitters, cancels, continuations that submit or throw, admission
// limits, and a shutdown (or the engine's destruction) in the middle of it all.
//
// Replay: every failure names its seed and iteration. Run that seed alone with
//   TANDEM_STRESS_SEED=<seed> [TANDEM_STRESS_ITERATION=<i>] ./test_stress
// TANDEM_STRESS_BUDGET_S bounds the wall time (default 10 s; the guard only stops starting new
// iterations, it asserts nothing). The interleavings differ from run to run; the workload, the
// configuration and the fault plan of a seed do not.
#define BOOST_TEST_MODULE stress
#include <boost/test/unit_test.hpp>

#include <tandem/tandem.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <future>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

/// True on threads the test made (and the test's main thread); false on the engine's threads.
thread_local bool tl_user_thread = false;

std::uint64_t splitmix64(std::uint64_t x) noexcept {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// ---- the functions the ops compute ---------------------------------------------------------

std::uint64_t mix_fn(std::uint32_t x) noexcept { return (std::uint64_t{x} * 0x9E3779B97F4A7C15ull) ^ (x >> 7); }
std::uint64_t triple_fn(std::uint32_t x) noexcept { return std::uint64_t{x} * 3 + 1; }
std::uint32_t picky_fn(std::uint32_t x) noexcept { return x ^ 0x5A5A5A5Au; }
bool picky_throws(std::uint32_t x) noexcept { return x % 251 == 7; }
std::string picky_message(std::uint32_t x) { return "picky refuses " + std::to_string(x); }
std::string show_fn(std::uint64_t x) {
    // Mostly short strings (in place), some long ones (on the heap).
    if (x % 5 == 0) return std::string(24 + x % 9, static_cast<char>('a' + x % 26));
    return std::to_string(x % 1000003);
}

/// A GPU kernel that cannot launch on a real GPU, but whose host emulation computes `F`: the
/// simulated device runs GPU-only ops through it.
template <class T, class R, R (*F)(T) noexcept>
class HostOnlyLauncher final : public tandem::GpuLauncher {
public:
    std::error_code launch(void*, const void*, void*, std::size_t) const noexcept override {
        return std::make_error_code(std::errc::function_not_supported);
    }
    std::error_code run_on_host(const void* in, void* out, std::size_t n) const noexcept override {
        const auto* src = static_cast<const T*>(in);
        auto* dst = static_cast<R*>(out);
        for (std::size_t i = 0; i < n; ++i) std::construct_at(dst + i, F(src[i]));
        return {};
    }
};

template <class T, class R, R (*F)(T) noexcept>
tandem::GpuKernel<T, R> host_only_kernel() {
    return tandem::GpuKernel<T, R>{std::make_shared<const HostOnlyLauncher<T, R, F>>()};
}

struct Ops {
    /// CPU function and GPU kernel.
    tandem::Op<std::uint32_t, std::uint64_t> hybrid{"mix", [](const std::uint32_t& x) { return mix_fn(x); },
                                                     host_only_kernel<std::uint32_t, std::uint64_t, mix_fn>()};
    /// CPU only, with a non-trivial output type.
    tandem::Op<std::uint64_t, std::string> cpu_only{"show", [](const std::uint64_t& x) { return show_fn(x); }};
    /// GPU kernel only (runs on the simulated devices through the host emulation).
    tandem::Op<std::uint32_t, std::uint64_t> gpu_only{"triple", host_only_kernel<std::uint32_t, std::uint64_t, triple_fn>()};
    /// CPU function that throws for some inputs, and a GPU kernel (so devices run it too).
    tandem::Op<std::uint32_t, std::uint32_t> picky{"picky",
                                                   [](const std::uint32_t& x) -> std::uint32_t {
                                                       if (picky_throws(x)) throw std::runtime_error(picky_message(x));
                                                       return picky_fn(x);
                                                   },
                                                   host_only_kernel<std::uint32_t, std::uint32_t, picky_fn>()};
};

// ---- what a batch is and what happened to it -----------------------------------------------

enum class OpKind { Hybrid, CpuOnly, GpuOnly, Picky };
const char* to_string(OpKind k) {
    switch (k) {
        case OpKind::Hybrid: return "hybrid";
        case OpKind::CpuOnly: return "cpu-only";
        case OpKind::GpuOnly: return "gpu-only";
        case OpKind::Picky: return "picky";
    }
    return "?";
}

enum class IdMode { Dense, Strided, Scrambled, Duplicate };
enum class Consume { ThenEngine, ThenExecutor, Hold, GetNow };
const char* to_string(Consume c) {
    switch (c) {
        case Consume::ThenEngine: return "then";
        case Consume::ThenExecutor: return "then(executor)";
        case Consume::Hold: return "held";
        case Consume::GetNow: return "get";
    }
    return "?";
}

/// Everything needed to rebuild a batch's tasks and check its results.
struct BatchSpec {
    OpKind op = OpKind::Hybrid;
    std::size_t n = 0;
    std::uint64_t key = 0;  // payload i is derived from (key, i)
    IdMode ids = IdMode::Dense;
    std::uint64_t first_id = 0;
    std::uint64_t stride = 1;
    bool use_dense_builder = false;
    bool pinned = false;  // payloads in engine.pinned_memory()
    bool varied_cost = false;
    bool huge_costs = false;  // with varied_cost: some tasks cost near 2^32 (no real-time device)
    bool via_try = false;
};

std::uint64_t payload_of(const BatchSpec& s, std::size_t i) noexcept { return splitmix64(s.key + i); }
std::uint32_t payload32_of(const BatchSpec& s, std::size_t i) noexcept {
    return static_cast<std::uint32_t>(payload_of(s, i));
}
std::uint64_t id_of(const BatchSpec& s, std::size_t i) noexcept {
    switch (s.ids) {
        case IdMode::Dense: return s.first_id + i;
        case IdMode::Strided: return s.first_id + i * s.stride;
        case IdMode::Scrambled: return (i * 0x9E3779B97F4A7C15ull) ^ s.first_id;  // a bijection: unique
        case IdMode::Duplicate: return s.n >= 2 && i == s.n - 1 ? s.first_id : s.first_id + i;
    }
    return i;
}

/// What the test knows about one submitted batch. Written by whichever thread consumes it;
/// judged by the main thread once every thread has been joined.
struct BatchRecord {
    explicit BatchRecord(std::size_t index_, BatchSpec spec_, bool inner_) : index{index_}, spec{spec_}, inner{inner_} {}
    const std::size_t index;
    const BatchSpec spec;
    const bool inner;  // submitted from inside a continuation
    Consume consume = Consume::Hold;
    std::atomic<bool> cancelled{false};  // set before cancel() is called
    std::atomic<int> completions{0};
    std::atomic<int> outcome{-100};  // -100: none; 0: success; ExecError value; -1: another category
};

int outcome_of(std::error_code ec) {
    if (!ec) return 0;
    if (ec.category() == tandem::error_category()) return ec.value();
    return -1;
}

std::string outcome_name(int o) {
    if (o == -100) return "(never completed)";
    if (o == 0) return "success";
    if (o == -1) return "an error of a foreign category";
    return tandem::make_error_code(static_cast<tandem::ExecError>(o)).message() + " (" + std::to_string(o) + ")";
}

std::string describe(const BatchRecord& r) {
    std::ostringstream os;
    os << "batch #" << r.index << " (" << to_string(r.spec.op) << ", " << r.spec.n << " tasks, "
       << (r.spec.via_try ? "try_submit" : "submit") << (r.inner ? " from a continuation" : "") << ", "
       << to_string(r.consume) << (r.cancelled.load() ? ", cancelled" : "") << ")";
    return os.str();
}

/// A task's cost in a batch of varied costs: mostly 1 to 7, now and then 0 (counts as 1) or,
/// with `huge_costs`, near 2^32 (a simulated device waiting out its model in real time would
/// sleep for a minute on such a task). The engine cuts these batches by cost.
std::uint32_t cost_of(const BatchSpec& s, std::size_t i) noexcept {
    const std::uint64_t r = splitmix64(s.key ^ (i * 0x9E3779B97F4A7C15ull));
    if (r % 61 == 0) return 0;
    if (s.huge_costs && r % 67 == 0) return 0xFFFFFFF0u;
    return static_cast<std::uint32_t>(1 + r % 7);
}

// ---- checking results --------------------------------------------------------------------

template <class R>
std::string check_common(const BatchSpec& s, const tandem::BatchResult<R>& r, std::size_t expected_failures) {
    std::ostringstream os;
    if (r.results.size() != s.n) {
        os << "success with " << r.results.size() << " results for " << s.n << " tasks";
        return os.str();
    }
    if (r.stats.tasks != s.n) os << "stats.tasks " << r.stats.tasks << " != " << s.n << "; ";
    if (r.stats.cpu_tasks + r.stats.gpu_tasks != s.n) {
        os << "cpu_tasks " << r.stats.cpu_tasks << " + gpu_tasks " << r.stats.gpu_tasks << " != " << s.n
           << " (a task ran twice or not at all); ";
    }
    if (r.stats.skipped_tasks != 0) os << "success with " << r.stats.skipped_tasks << " skipped tasks; ";
    std::uint64_t cost = s.n;  // every task of cost 1 (the dense builder gives every task 1)
    if (s.varied_cost && !(s.use_dense_builder && s.ids == IdMode::Dense)) {
        cost = 0;
        for (std::size_t i = 0; i < s.n; ++i) cost += std::max<std::uint32_t>(cost_of(s, i), 1);
    }
    if (r.stats.cpu_cost + r.stats.gpu_cost != cost) {
        os << "cpu_cost " << r.stats.cpu_cost << " + gpu_cost " << r.stats.gpu_cost << " != " << cost << "; ";
    }
    if (r.stats.failed_tasks != expected_failures) {
        os << "stats.failed_tasks " << r.stats.failed_tasks << " != " << expected_failures << "; ";
    }
    if (r.results.errors().size() != expected_failures) {
        os << r.results.errors().size() << " task errors, expected " << expected_failures << "; ";
    }
    for (std::size_t i = 0; i < s.n; ++i) {
        if (r.results.ids()[i] != id_of(s, i)) {
            os << "task " << i << " has id " << r.results.ids()[i] << ", expected " << id_of(s, i) << "; ";
            break;
        }
    }
    return os.str();
}

/// Empty when the results are right; else what is wrong (the first few things).
std::string check_result(const BatchSpec& s, const tandem::BatchResult<std::uint64_t>& r) {
    std::string problem = check_common(s, r, 0);
    if (!problem.empty()) return problem;
    if (s.op == OpKind::GpuOnly && r.stats.cpu_tasks != 0) return "a GPU-only op ran tasks on the CPU";
    const auto out = r.results.outputs();
    for (std::size_t i = 0; i < s.n; ++i) {
        const std::uint32_t x = payload32_of(s, i);
        const std::uint64_t want = s.op == OpKind::GpuOnly ? triple_fn(x) : mix_fn(x);
        if (out[i] != want || !r.results[i].ok()) {
            return "task " + std::to_string(i) + ": output " + std::to_string(out[i]) + ", expected " +
                   std::to_string(want) + (r.results[i].ok() ? "" : " (and it carries an error)");
        }
    }
    return {};
}

std::string check_result(const BatchSpec& s, const tandem::BatchResult<std::string>& r) {
    std::string problem = check_common(s, r, 0);
    if (!problem.empty()) return problem;
    if (r.stats.gpu_tasks != 0) return "a CPU-only op ran tasks on a device";
    const auto out = r.results.outputs();
    for (std::size_t i = 0; i < s.n; ++i) {
        const std::string want = show_fn(payload_of(s, i));
        if (out[i] != want) return "task " + std::to_string(i) + ": output '" + out[i] + "', expected '" + want + "'";
    }
    return {};
}

std::string check_result(const BatchSpec& s, const tandem::BatchResult<std::uint32_t>& r) {
    std::size_t throwing = 0;
    for (std::size_t i = 0; i < s.n; ++i) throwing += picky_throws(payload32_of(s, i));
    std::string problem = check_common(s, r, throwing);
    if (!problem.empty()) return problem;
    const auto out = r.results.outputs();
    for (std::size_t i = 0; i < s.n; ++i) {
        const std::uint32_t x = payload32_of(s, i);
        const auto task = r.results[i];
        if (picky_throws(x)) {
            if (task.ok()) return "task " + std::to_string(i) + " threw but carries no error";
            if (task.error->code != tandem::make_error_code(tandem::ExecError::TaskFailed)) {
                return "task " + std::to_string(i) + " carries " + task.error->code.message() + ", expected TaskFailed";
            }
            if (task.error->id != id_of(s, i) || task.error->index != i) {
                return "task " + std::to_string(i) + "'s error names id " + std::to_string(task.error->id) +
                       " / index " + std::to_string(task.error->index);
            }
            if (task.error->message != picky_message(x) || !task.error->exception) {
                return "task " + std::to_string(i) + "'s error says '" + task.error->message + "'";
            }
            if (out[i] != 0) return "task " + std::to_string(i) + " threw but has output " + std::to_string(out[i]);
        } else if (!task.ok() || out[i] != picky_fn(x)) {
            return "task " + std::to_string(i) + ": output " + std::to_string(out[i]) + ", expected " +
                   std::to_string(picky_fn(x)) + (task.ok() ? "" : " (and it carries an error)");
        }
    }
    return {};
}

// ---- a plain executor for then(executor, f) --------------------------------------------------

/// One thread running move-only tasks in order.
class QueueExecutor {
public:
    struct Task {
        virtual ~Task() = default;
        virtual void run() = 0;
    };
    struct State {
        std::mutex mutex;
        std::condition_variable cv;
        std::deque<std::unique_ptr<Task>> tasks;
        bool stop = false;
    };

    explicit QueueExecutor(std::shared_ptr<State> state) : state_{std::move(state)} {}

    template <class F>
    void execute(F f) const {
        struct Model final : Task {
            explicit Model(F fn) : fn_{std::move(fn)} {}
            void run() override { fn_(); }
            F fn_;
        };
        auto task = std::make_unique<Model>(std::move(f));
        {
            std::lock_guard lock{state_->mutex};
            state_->tasks.push_back(std::move(task));
        }
        state_->cv.notify_one();
    }

    /// Runs tasks until stopped and drained.
    static void loop(State& s) {
        tl_user_thread = true;
        std::unique_lock lock{s.mutex};
        for (;;) {
            s.cv.wait(lock, [&] { return s.stop || !s.tasks.empty(); });
            if (s.tasks.empty()) return;  // stopped and drained
            auto task = std::move(s.tasks.front());
            s.tasks.pop_front();
            lock.unlock();
            task->run();
            task.reset();
            lock.lock();
        }
    }

private:
    std::shared_ptr<State> state_;
};

// ---- one iteration's plan ------------------------------------------------------------------

enum class Ending {
    Drain,            ///< every batch completes, then shutdown() or the destructor
    During,           ///< a thread calls shutdown() while submitters are still submitting
    FromContinuation, ///< a continuation on an engine thread calls shutdown() mid-run
    DestroyInFlight,  ///< the engine is destroyed with batches still in flight
};
const char* to_string(Ending e) {
    switch (e) {
        case Ending::Drain: return "drain";
        case Ending::During: return "shutdown during submission";
        case Ending::FromContinuation: return "shutdown from a continuation";
        case Ending::DestroyInFlight: return "destroyed in flight";
    }
    return "?";
}

struct Plan {
    tandem::EngineConfig config;
    std::vector<long> flaky_every;  // per device: its on_chunk throws every k-th chunk (0: never)
    int submitters = 2;
    int batches_per_submitter = 10;
    double log_max_size = 0;
    Ending ending = Ending::Drain;
    bool destroy = false;              // end with the destructor instead of shutdown()
    bool user_shutdown_races = false;  // FromContinuation: a user thread calls shutdown() too
    std::size_t trigger_after = 0;     // submissions before the mid-run shutdown
    bool any_hang = false;
    int hanging_devices = 0;
    bool gpu_only_may_fail = false;     // some device has a fault: a GPU-only op may see DeviceFailed
    bool gpu_only_may_vanish = false;   // every device may retire: NoImplementation at submit
    double p_gpu_only = 0, p_try = 0, p_cancel_now = 0, p_cancel_later = 0, p_throw = 0, p_inner = 0,
           p_get_now = 0, p_then = 0, p_then_exec = 0, p_consume_mid = 0, p_special = 0;
    std::uint64_t submitter_seed = 0;
};

std::string describe(const Plan& p) {
    std::ostringstream os;
    const auto& c = p.config;
    os << c.cpu_workers << " workers, " << c.gpu.simulated.size() << " sim devices (threshold " << c.gpu.threshold_tasks
       << ", chunk_bytes " << c.gpu.chunk_bytes << ", cpu_helps " << c.gpu.cpu_helps << ", grace "
       << c.gpu.shutdown_grace.count() << " ms";
    for (std::size_t d = 0; d < c.gpu.simulated.size(); ++d) {
        const auto& s = c.gpu.simulated[d];
        os << "; dev" << d << ':';
        if (s.fail_launch) os << " fail_launch";
        if (s.fail_alloc) os << " fail_alloc";
        if (s.fail_after_chunks >= 0) os << " fail_after=" << s.fail_after_chunks;
        if (s.hang_after_chunks >= 0) os << " hang_after=" << s.hang_after_chunks;
        if (p.flaky_every[d] != 0) os << " flaky_every=" << p.flaky_every[d];
        if (s.real_time) os << " real_time";
    }
    os << "), max_batches " << c.max_batches_in_flight << ", max_tasks " << c.max_tasks_in_flight << ", cpu_chunk "
       << c.cpu_chunk << ", " << p.submitters << " submitters x " << p.batches_per_submitter << " batches, ending: "
       << to_string(p.ending) << (p.destroy ? " + destructor" : "") << (p.user_shutdown_races ? " + racing user shutdown" : "");
    return os.str();
}

Plan make_plan(std::uint64_t iteration_seed) {
    std::mt19937_64 rng{iteration_seed};
    auto chance = [&](double p) { return std::bernoulli_distribution{p}(rng); };
    auto pick = [&](auto lo, auto hi) {
        using V = decltype(lo);
        return std::uniform_int_distribution<V>{lo, static_cast<V>(hi)}(rng);
    };
    Plan p;
    auto& c = p.config;
    c.cpu_workers = pick(std::size_t{1}, 3);
    const std::size_t idle_spins_ns[] = {0, 1000, 5000, 50000};
    c.idle_spin = std::chrono::nanoseconds{idle_spins_ns[pick(0, 3)]};
    c.cpu_chunk = chance(0.5) ? 0 : pick(std::size_t{1}, 2048);
    if (chance(0.4)) c.max_batches_in_flight = pick(std::size_t{1}, 8);
    if (chance(0.2)) c.max_tasks_in_flight = pick(std::uint64_t{20000}, 60000);
    if (chance(0.2)) c.output_cache_bytes = 0;

    const int devices = chance(0.25) ? 0 : pick(1, 2);
    c.gpu.threshold_tasks = pick(std::size_t{0}, 64);
    c.gpu.chunk_bytes = chance(0.1) ? 0 : pick(std::size_t{64}, 4096);
    c.gpu.cpu_helps = chance(0.8);
    c.gpu.shutdown_grace = std::chrono::milliseconds{pick(1, 30)};
    bool every_device_may_retire = devices > 0;
    for (int d = 0; d < devices; ++d) {
        tandem::SimulatedDevice s;
        s.name = "sim" + std::to_string(d);
        s.fixed_cost = std::chrono::nanoseconds{pick(0, 50000)};
        s.per_task = std::chrono::nanoseconds{pick(0, 20)};
        s.real_time = chance(0.25);
        s.fail_launch = chance(0.08);
        s.fail_alloc = chance(0.08);
        if (chance(0.2)) s.fail_after_chunks = pick(0L, 50L);
        if (chance(0.15)) s.hang_after_chunks = pick(0L, 30L);
        const long flaky = chance(0.15) ? pick(2L, 10L) : 0L;
        p.flaky_every.push_back(flaky);
        const bool faulty = s.fail_launch || s.fail_alloc || s.fail_after_chunks >= 0 || s.hang_after_chunks >= 0 || flaky != 0;
        p.gpu_only_may_fail = p.gpu_only_may_fail || faulty;
        if (s.hang_after_chunks >= 0) {
            p.any_hang = true;
            ++p.hanging_devices;
        }
        every_device_may_retire = every_device_may_retire && (s.fail_after_chunks >= 0 || s.hang_after_chunks >= 0);
        c.gpu.simulated.push_back(std::move(s));
    }
    p.gpu_only_may_vanish = every_device_may_retire;

    p.submitters = pick(2, 6);
    p.batches_per_submitter = pick(6, 30);
    p.log_max_size = std::log(chance(0.2) ? 2000.0 : 20000.0);

    if (p.any_hang) {
        // A hung chunk's batch completes only at shutdown: nothing may wait for every batch.
        p.ending = Ending::During;
    } else {
        const int e = pick(0, 99);
        p.ending = e < 35 ? Ending::Drain : e < 65 ? Ending::During : e < 80 ? Ending::FromContinuation : Ending::DestroyInFlight;
    }
    const bool destroy = chance(0.4), races = chance(0.5);  // drawn always: later draws stay put
    p.destroy = p.ending == Ending::DestroyInFlight || destroy;
    p.user_shutdown_races = p.ending == Ending::FromContinuation && races;
    p.trigger_after = pick(std::size_t{0}, static_cast<std::size_t>(p.submitters * p.batches_per_submitter));

    p.p_gpu_only = devices > 0 ? 0.2 : 0.0;
    p.p_try = chance(0.5) ? 0.25 : 0.0;
    p.p_cancel_now = chance(0.6) ? 0.08 : 0.0;
    p.p_cancel_later = chance(0.6) ? 0.12 : 0.0;
    p.p_throw = chance(0.7) ? 0.15 : 0.0;
    p.p_inner = chance(0.7) ? 0.2 : 0.0;
    p.p_then = 0.35;
    p.p_then_exec = 0.1;
    // A hung batch never completes before shutdown: submitters then never block on one.
    p.p_get_now = p.any_hang ? 0.0 : 0.15;
    p.p_consume_mid = 0.2;
    p.p_special = 0.02;
    p.submitter_seed = rng();
    return p;
}

// ---- one iteration ------------------------------------------------------------------------

/// A future a thread keeps to consume later, whatever its result type.
struct Held {
    virtual ~Held() = default;
    virtual bool ready() const = 0;
    virtual bool wait_ready(std::chrono::seconds limit) = 0;
    virtual void consume() = 0;  // get(), check, record
    virtual BatchRecord& record() = 0;
};

struct Iteration;

/// Records that `rec` completed with `ec` (and `problem` when its results were wrong).
void record_outcome(Iteration& it, BatchRecord& rec, std::error_code ec, const std::string& problem);
/// The batch's outcome is recorded and anything it started is counted: one fewer pending.
void finished(Iteration& it);

struct Iteration {
    Iteration(std::uint64_t seed_, int number_, Plan plan_) : seed{seed_}, number{number_}, plan{std::move(plan_)} {}

    const std::uint64_t seed;
    const int number;
    Plan plan;
    Ops ops;
    std::unique_ptr<tandem::Engine> owner;
    tandem::Engine* engine = nullptr;  // continuations use this, never `owner` (null while it is destroyed)

    std::mutex records_mutex;
    std::deque<BatchRecord> records;

    std::mutex failures_mutex;
    std::vector<std::string> failures;

    /// Batches submitted (or attempted) whose outcome is not recorded yet.
    std::atomic<std::int64_t> pending{0};
    std::atomic<std::size_t> submissions{0};
    std::atomic<int> submitters_done{0};

    /// Every future, to check that each one is ready once shutdown() has returned.
    std::mutex registry_mutex;
    std::vector<std::pair<std::shared_ptr<tandem::detail::JobCore>, const BatchRecord*>> registry;

    /// Futures still held when their submitter finished.
    std::mutex held_mutex;
    std::vector<std::unique_ptr<Held>> held;

    std::shared_ptr<QueueExecutor::State> executor_state = std::make_shared<QueueExecutor::State>();

    // Continuations that throw, and where the engine says they went.
    std::atomic<std::uint64_t> thrown{0}, thrown_inline{0}, handler_calls{0};
    // A shutdown asked of the next continuation that runs on an engine thread.
    std::atomic<bool> engine_thread_shutdown_armed{false};
    std::atomic<bool> engine_thread_shutdown_done{false};
    std::atomic<bool> shutdown_began{false};

    void fail(std::string message) {
        std::lock_guard lock{failures_mutex};
        failures.push_back(std::move(message));
    }

    BatchRecord& new_record(const BatchSpec& spec, bool inner) {
        std::lock_guard lock{records_mutex};
        return records.emplace_back(records.size(), spec, inner);
    }

    template <class R>
    void remember(const tandem::BatchFuture<R>& f, const BatchRecord& rec) {
        std::lock_guard lock{registry_mutex};
        registry.emplace_back(f.core(), &rec);
    }

    /// After shutdown() returned: every batch must have completed.
    void check_every_future_ready(const char* after) {
        std::lock_guard lock{registry_mutex};
        std::size_t not_ready = 0;
        for (const auto& [core, rec] : registry) {
            if (core && !core->ready()) {
                if (++not_ready <= 3) fail(describe(*rec) + ": not ready after " + after + " returned");
            }
        }
        if (not_ready > 3) fail(std::to_string(not_ready) + " futures in all not ready after " + after + " returned");
    }
};

void record_outcome(Iteration& it, BatchRecord& rec, std::error_code ec, const std::string& problem) {
    if (rec.completions.fetch_add(1) != 0) it.fail(describe(rec) + ": completed more than once");
    rec.outcome.store(outcome_of(ec));
    if (!problem.empty()) it.fail(describe(rec) + ": wrong results: " + problem);
}

void finished(Iteration& it) { it.pending.fetch_sub(1); }

template <class R>
struct HeldFuture final : Held {
    HeldFuture(Iteration& it_, tandem::BatchFuture<R> f_, BatchRecord& rec_) : it{it_}, f{std::move(f_)}, rec{rec_} {}
    bool ready() const override { return f.ready(); }
    bool wait_ready(std::chrono::seconds limit) override { return f.wait_for(limit) == std::future_status::ready; }
    void consume() override {
        std::error_code ec;
        std::string problem;
        const std::error_code seen = f.error();
        try {
            tandem::BatchResult<R> r = f.get();
            problem = check_result(rec.spec, r);
        } catch (const tandem::Error& e) {
            ec = e.code();
        }
        if (seen != ec) problem += "error() said " + seen.message() + " but get() " + (ec ? ec.message() : "succeeded");
        if (f.valid()) problem += "the future is still valid after get()";
        record_outcome(it, rec, ec, problem);
        finished(it);
    }
    BatchRecord& record() override { return rec; }

    Iteration& it;
    tandem::BatchFuture<R> f;
    BatchRecord& rec;
};

struct Boom : std::runtime_error {
    Boom() : std::runtime_error{"continuation boom"} {}
};

template <class T>
tandem::Batch<T> build_batch(const BatchSpec& s, tandem::Engine& engine) {
    auto payload = [&](std::size_t i) {
        if constexpr (sizeof(T) == 4) {
            return payload32_of(s, i);
        } else {
            return payload_of(s, i);
        }
    };
    std::pmr::memory_resource* memory = s.pinned ? engine.pinned_memory() : std::pmr::get_default_resource();
    if (s.use_dense_builder && s.ids == IdMode::Dense) {
        std::vector<T> values(s.n);
        for (std::size_t i = 0; i < s.n; ++i) values[i] = payload(i);
        return tandem::Batch<T>::dense(values, s.first_id, memory);
    }
    tandem::Batch<T> b{memory};
    b.reserve(s.n);
    for (std::size_t i = 0; i < s.n; ++i) {
        b.push(id_of(s, i), payload(i), s.varied_cost ? cost_of(s, i) : 1u);
    }
    return b;
}

/// What a continuation does besides recording.
struct ThenPlan {
    bool throw_after = false;
    bool submit_inner = false;
    BatchSpec inner{};
};

void submit_inner(Iteration& it, const BatchSpec& spec);

/// The continuation body shared by then(f) and then(executor, f).
template <class R>
void on_complete(Iteration& it, BatchRecord& rec, const ThenPlan& tp, bool may_throw, std::error_code ec,
                 tandem::BatchResult<R>& r) {
    record_outcome(it, rec, ec, ec ? std::string{} : check_result(rec.spec, r));
    const bool engine_thread = !tl_user_thread;
    if (engine_thread && it.engine_thread_shutdown_armed.load() && !it.engine_thread_shutdown_done.exchange(true)) {
        // Documented: from an engine thread this starts the shutdown and returns at once.
        it.shutdown_began.store(true);
        it.engine->shutdown();
    }
    if (tp.submit_inner) submit_inner(it, tp.inner);
    finished(it);
    if (may_throw && tp.throw_after) {
        it.thrown.fetch_add(1);
        throw Boom{};
    }
}

/// Submits `spec` from inside a continuation (on an engine thread, unless the continuation ran
/// inline); the inner future is consumed with a continuation that never throws.
void submit_inner(Iteration& it, const BatchSpec& spec) {
    BatchRecord& rec = it.new_record(spec, true);
    rec.consume = Consume::ThenEngine;
    it.pending.fetch_add(1);
    auto go = [&](const auto& op, auto batch) {
        auto f = it.engine->submit(op, std::move(batch));
        it.remember(f, rec);
        using R = typename std::decay_t<decltype(op)>::result_type;
        f.then([&it, &rec](std::error_code ec, tandem::BatchResult<R> r) {
            on_complete<R>(it, rec, ThenPlan{}, false, ec, r);
        });
    };
    switch (spec.op) {
        case OpKind::Hybrid: go(it.ops.hybrid, build_batch<std::uint32_t>(spec, *it.engine)); break;
        case OpKind::CpuOnly: go(it.ops.cpu_only, build_batch<std::uint64_t>(spec, *it.engine)); break;
        case OpKind::GpuOnly: go(it.ops.gpu_only, build_batch<std::uint32_t>(spec, *it.engine)); break;
        case OpKind::Picky: go(it.ops.picky, build_batch<std::uint32_t>(spec, *it.engine)); break;
    }
}

class Submitter {
public:
    Submitter(Iteration& it, std::uint64_t seed) : it_{it}, rng_{seed} {}

    void run() {
        tl_user_thread = true;
        try {
            for (int b = 0; b < it_.plan.batches_per_submitter; ++b) {
                submit_one();
                it_.submissions.fetch_add(1);
                if (chance(it_.plan.p_consume_mid) && !held_.empty()) consume_oldest();
                if (!cancel_later_.empty() && chance(0.3)) cancel_one_later();
            }
            for (auto& [handle, rec] : cancel_later_) {
                if (chance(0.5)) {
                    rec->cancelled.store(true);
                    handle.cancel();
                }
            }
        } catch (const std::exception& e) {
            it_.fail(std::string{"submitter threw: "} + e.what());
        }
        std::lock_guard lock{it_.held_mutex};
        for (auto& h : held_) it_.held.push_back(std::move(h));
        it_.submitters_done.fetch_add(1);
    }

private:
    bool chance(double p) { return p > 0 && std::bernoulli_distribution{p}(rng_); }
    template <class V>
    V pick(V lo, V hi) {
        return std::uniform_int_distribution<V>{lo, hi}(rng_);
    }

    BatchSpec random_spec(bool inner) {
        const Plan& p = it_.plan;
        BatchSpec s;
        const double r = std::uniform_real_distribution<double>{0, 1}(rng_);
        if (r < p.p_gpu_only) {
            s.op = OpKind::GpuOnly;
        } else {
            const int k = pick(0, 9);
            s.op = k < 4 ? OpKind::Hybrid : k < 7 ? OpKind::Picky : OpKind::CpuOnly;
        }
        const double log_max = inner ? std::log(4000.0) : p.log_max_size;
        s.n = static_cast<std::size_t>(std::exp(std::uniform_real_distribution<double>{0, log_max}(rng_)));
        s.n = std::max<std::size_t>(s.n, 1);
        s.key = rng_();
        const int m = pick(0, 9);
        s.ids = m < 5 ? IdMode::Dense : m < 8 ? IdMode::Strided : IdMode::Scrambled;
        s.first_id = rng_() >> 24;
        s.stride = pick<std::uint64_t>(1, 1000);
        s.use_dense_builder = chance(0.5);
        s.pinned = !inner && chance(0.15);
        s.varied_cost = chance(0.2);
        s.huge_costs = s.varied_cost && std::none_of(p.config.gpu.simulated.begin(), p.config.gpu.simulated.end(),
                                                     [](const tandem::SimulatedDevice& d) { return d.real_time; });
        if (!inner && s.op != OpKind::GpuOnly && chance(p.p_special)) {
            // Bad input: completes at once with its error.
            if (chance(0.5)) {
                s.n = 0;
            } else {
                s.n = std::max<std::size_t>(s.n, 2);
                s.ids = IdMode::Duplicate;
            }
        }
        return s;
    }

    void submit_one() {
        BatchSpec spec = random_spec(false);
        spec.via_try = chance(it_.plan.p_try);
        switch (spec.op) {
            case OpKind::Hybrid: submit_typed(it_.ops.hybrid, build_batch<std::uint32_t>(spec, *it_.engine), spec); break;
            case OpKind::CpuOnly: submit_typed(it_.ops.cpu_only, build_batch<std::uint64_t>(spec, *it_.engine), spec); break;
            case OpKind::GpuOnly: submit_typed(it_.ops.gpu_only, build_batch<std::uint32_t>(spec, *it_.engine), spec); break;
            case OpKind::Picky: submit_typed(it_.ops.picky, build_batch<std::uint32_t>(spec, *it_.engine), spec); break;
        }
    }

    template <class T, class R>
    void submit_typed(const tandem::Op<T, R>& op, tandem::Batch<T> batch, const BatchSpec& spec) {
        const Plan& p = it_.plan;
        BatchRecord& rec = it_.new_record(spec, false);
        // Decide everything up front, from this thread's generator.
        const double c = std::uniform_real_distribution<double>{0, 1}(rng_);
        rec.consume = c < p.p_then ? Consume::ThenEngine
                    : c < p.p_then + p.p_then_exec ? Consume::ThenExecutor
                    : c < p.p_then + p.p_then_exec + p.p_get_now ? Consume::GetNow
                    : Consume::Hold;
        const bool cancel_now = chance(p.p_cancel_now);
        const bool cancel_later = !cancel_now && chance(p.p_cancel_later);
        ThenPlan tp;
        tp.throw_after = chance(p.p_throw);
        tp.submit_inner = chance(p.p_inner);
        if (tp.submit_inner) tp.inner = random_spec(true);
        // The executor may run a continuation after the engine is gone: it submits nothing.
        if (rec.consume == Consume::ThenExecutor) tp.submit_inner = false;

        it_.pending.fetch_add(1);
        tandem::BatchFuture<R> f = spec.via_try ? it_.engine->try_submit(op, std::move(batch))
                                                : it_.engine->submit(op, std::move(batch));
        it_.remember(f, rec);
        if (cancel_now) {
            rec.cancelled.store(true);
            f.cancel();
        } else if (cancel_later) {
            cancel_later_.emplace_back(f.cancel_handle(), &rec);
        }

        switch (rec.consume) {
            case Consume::ThenEngine: {
                Iteration& it = it_;
                try {
                    f.then([&it, &rec, tp](std::error_code ec, tandem::BatchResult<R> r) {
                        on_complete<R>(it, rec, tp, true, ec, r);
                    });
                } catch (const Boom&) {
                    it_.thrown_inline.fetch_add(1);  // it had completed: the callback ran (and threw) here
                }
                break;
            }
            case Consume::ThenExecutor: {
                Iteration& it = it_;
                f.then(QueueExecutor{it_.executor_state}, [&it, &rec, tp](std::error_code ec, tandem::BatchResult<R> r) {
                    on_complete<R>(it, rec, tp, false, ec, r);
                });
                break;
            }
            case Consume::GetNow: {
                auto h = std::make_unique<HeldFuture<R>>(it_, std::move(f), rec);
                if (!h->wait_ready(std::chrono::seconds{60})) {
                    it_.fail(describe(rec) + ": not ready after 60 s (hang?)");
                    held_.push_back(std::move(h));
                } else {
                    h->consume();
                }
                break;
            }
            case Consume::Hold: held_.push_back(std::make_unique<HeldFuture<R>>(it_, std::move(f), rec)); break;
        }
    }

    void consume_oldest() {
        auto& h = held_.front();
        if (it_.plan.any_hang) {
            if (!h->ready()) return;  // could be the hung batch: only consume what is done
        } else if (!h->wait_ready(std::chrono::seconds{60})) {
            it_.fail(describe(h->record()) + ": not ready after 60 s (hang?)");
            return;
        }
        h->consume();
        held_.erase(held_.begin());
    }

    void cancel_one_later() {
        const std::size_t i = pick<std::size_t>(0, cancel_later_.size() - 1);
        auto& [handle, rec] = cancel_later_[i];
        rec->cancelled.store(true);
        handle.cancel();
        cancel_later_.erase(cancel_later_.begin() + static_cast<std::ptrdiff_t>(i));
    }

    Iteration& it_;
    std::mt19937_64 rng_;
    std::vector<std::unique_ptr<Held>> held_;
    std::vector<std::pair<tandem::CancelHandle, BatchRecord*>> cancel_later_;
};

/// Aborts the process (naming the seed) if an iteration stays in one phase for a minute: a hang
/// must fail the test, not stall it. Not a timing assertion: healthy phases take milliseconds
/// to a few seconds, even under the sanitizers.
class Watchdog {
public:
    static constexpr auto limit = std::chrono::seconds{60};

    Watchdog(std::uint64_t seed, int iteration) : seed_{seed}, iteration_{iteration}, thread_{[this] { run(); }} {}
    ~Watchdog() {
        {
            std::lock_guard lock{mutex_};
            done_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }
    /// Names the phase the iteration enters, and restarts the clock.
    void phase(const char* p) {
        std::lock_guard lock{mutex_};
        phase_ = p;
        deadline_ = Clock::now() + limit;
    }

private:
    void run() {
        std::unique_lock lock{mutex_};
        while (!done_) {
            if (cv_.wait_until(lock, deadline_, [this] { return done_; })) return;
            if (Clock::now() < deadline_) continue;  // the phase changed meanwhile
            std::fprintf(stderr,
                         "\n*** tandem stress: seed=%llu iteration=%d stuck for %lld s in phase '%s' (a hang). "
                         "Replay: TANDEM_STRESS_SEED=%llu TANDEM_STRESS_ITERATION=%d\n",
                         static_cast<unsigned long long>(seed_), iteration_, static_cast<long long>(limit.count()), phase_,
                         static_cast<unsigned long long>(seed_), iteration_);
            std::fflush(stderr);
            std::abort();
        }
    }

    const std::uint64_t seed_;
    const int iteration_;
    std::mutex mutex_;
    std::condition_variable cv_;
    const char* phase_ = "start";
    Clock::time_point deadline_ = Clock::now() + limit;
    bool done_ = false;
    std::thread thread_;  // last: starts once the rest is built
};

/// Totals over a run, to show what the run covered.
struct Coverage {
    std::uint64_t iterations = 0, batches = 0, successes = 0, gpu_tasks = 0, fallbacks = 0, task_failures = 0,
                  continuation_failures = 0, abandoned = 0, inner = 0, engine_thread_shutdowns = 0;
    std::uint64_t by_error[16] = {};
};

/// Is this outcome allowed for this batch, given what was done to it and to the engine?
std::string judge(const Iteration& it, const BatchRecord& r, bool shutdown_mid_run) {
    const int o = r.outcome.load();
    using E = tandem::ExecError;
    if (r.spec.n == 0) return o == static_cast<int>(E::EmptyBatch) ? "" : "expected EmptyBatch";
    if (r.spec.ids == IdMode::Duplicate) return o == static_cast<int>(E::DuplicateTaskId) ? "" : "expected DuplicateTaskId";
    if (o == 0) return "";
    if (o < 0) return "unexpected outcome";
    switch (static_cast<E>(o)) {
        case E::ShutDown:
            if (shutdown_mid_run) return "";
            return "ShutDown although every batch was allowed to complete before shutdown";
        case E::Cancelled:
            return r.cancelled.load() ? "" : "Cancelled although nobody cancelled it";
        case E::QueueFull:
            return r.spec.via_try ? "" : "QueueFull from a blocking submit";
        case E::DeviceFailed:
            if (it.plan.any_hang) return "";  // counted below: at most one batch per hung device
            if (r.spec.op == OpKind::GpuOnly && it.plan.gpu_only_may_fail) return "";
            return "DeviceFailed without a device fault that allows it";
        case E::NoImplementation:
            if (r.spec.op == OpKind::GpuOnly && it.plan.gpu_only_may_vanish) return "";
            return "NoImplementation";
        default: return "unexpected error";
    }
}

void run_iteration(std::uint64_t seed, int number, Coverage& coverage) {
    const std::uint64_t iteration_seed = splitmix64(seed ^ splitmix64(static_cast<std::uint64_t>(number) + 1));
    Iteration it{seed, number, make_plan(iteration_seed)};
    const std::string where = "seed=" + std::to_string(seed) + " iteration=" + std::to_string(number);
    BOOST_TEST_MESSAGE(where << ": " << describe(it.plan));
    Watchdog watchdog{seed, number};
    const auto began = Clock::now();

    tandem::EngineConfig config = it.plan.config;
    config.on_continuation_error = [&it](std::exception_ptr e) {
        it.handler_calls.fetch_add(1);
        try {
            std::rethrow_exception(e);
        } catch (const Boom&) {
        } catch (...) {
            it.fail("on_continuation_error got an exception the test did not throw");
        }
    };
    for (std::size_t d = 0; d < config.gpu.simulated.size(); ++d) {
        if (const long every = it.plan.flaky_every[d]; every != 0) {
            auto count = std::make_shared<std::atomic<long>>(0);
            config.gpu.simulated[d].on_chunk = [count, every](std::size_t, std::size_t) {
                if (count->fetch_add(1) % every == every - 1) throw std::runtime_error("flaky device");
            };
        }
    }
    it.owner = std::make_unique<tandem::Engine>(config);
    it.engine = it.owner.get();
    const bool track_metrics = !it.plan.destroy;

    std::thread executor_thread{[state = it.executor_state] { QueueExecutor::loop(*state); }};

    // The mid-run shutdown: once enough batches went in (or every submitter is done).
    const Ending ending = it.plan.ending;
    std::thread trigger;
    if (ending == Ending::During || ending == Ending::FromContinuation) {
        trigger = std::thread{[&it, ending] {
            tl_user_thread = true;
            // Submitters may all be waiting for room that only a shutdown makes (batches held
            // by a hung device): then no progress for a while also pulls the trigger.
            std::size_t seen = it.submissions.load();
            auto last_progress = Clock::now();
            while (seen < it.plan.trigger_after && it.submitters_done.load() < it.plan.submitters &&
                   Clock::now() - last_progress < 100ms) {
                std::this_thread::sleep_for(200us);
                if (const std::size_t now = it.submissions.load(); now != seen) {
                    seen = now;
                    last_progress = Clock::now();
                }
            }
            if (ending == Ending::During) {
                it.shutdown_began.store(true);
                it.engine->shutdown();
                it.check_every_future_ready("a mid-run shutdown()");
            } else {
                it.engine_thread_shutdown_armed.store(true);
                if (it.plan.user_shutdown_races) {
                    it.shutdown_began.store(true);
                    it.engine->shutdown();  // races with the continuation's shutdown()
                    it.check_every_future_ready("a user's shutdown() racing a continuation's");
                }
            }
        }};
    }

    watchdog.phase("submitting");
    std::vector<std::thread> threads;
    std::mt19937_64 seeds{it.plan.submitter_seed};
    for (int s = 0; s < it.plan.submitters; ++s) {
        threads.emplace_back([&it, seed = seeds()] { Submitter{it, seed}.run(); });
    }
    for (auto& t : threads) t.join();
    watchdog.phase("waiting for the mid-run shutdown");
    if (trigger.joinable()) trigger.join();

    if (ending == Ending::Drain) {
        watchdog.phase("draining");
        for (auto& h : it.held) {
            if (!h->wait_ready(std::chrono::seconds{60})) {
                it.fail(describe(h->record()) + ": not ready after 60 s (hang?)");
            } else {
                h->consume();
            }
        }
        it.held.clear();
        const auto deadline = Clock::now() + 60s;
        while (it.pending.load() != 0 && Clock::now() < deadline) std::this_thread::sleep_for(200us);
        if (it.pending.load() != 0) it.fail(std::to_string(it.pending.load()) + " batches not complete after 60 s");
    }

    watchdog.phase(it.plan.destroy ? "destroying the engine" : "shutting down");
    tandem::EngineMetrics metrics;
    if (it.plan.destroy) {
        it.shutdown_began.store(true);
        it.owner.reset();  // the destructor shuts down and completes every batch
        it.check_every_future_ready("the destructor");
    } else {
        it.shutdown_began.store(true);
        it.owner->shutdown();
        it.check_every_future_ready("shutdown()");
        metrics = it.owner->metrics();
    }

    watchdog.phase("consuming held futures");
    for (auto& h : it.held) {
        if (!h->ready()) {
            it.fail(describe(h->record()) + ": not ready after shutdown returned");
            if (!h->wait_ready(std::chrono::seconds{60})) continue;
        }
        h->consume();
    }
    it.held.clear();

    watchdog.phase("draining the executor");
    {
        std::lock_guard lock{it.executor_state->mutex};
        it.executor_state->stop = true;
    }
    it.executor_state->cv.notify_one();
    executor_thread.join();

    // ---- verdicts -------------------------------------------------------------------------
    watchdog.phase("judging");
    if (it.pending.load() != 0) it.fail(std::to_string(it.pending.load()) + " batches never recorded an outcome");
    const bool shutdown_mid_run = ending != Ending::Drain;
    std::size_t device_failed_non_gpu_only = 0;
    for (const BatchRecord& r : it.records) {
        const int completions = r.completions.load();
        if (completions != 1) {
            it.fail(describe(r) + ": completed " + std::to_string(completions) + " times");
            continue;
        }
        const int o = r.outcome.load();
        if (std::string why = judge(it, r, shutdown_mid_run); !why.empty()) {
            it.fail(describe(r) + ": outcome " + outcome_name(o) + ": " + why);
        }
        if (o == static_cast<int>(tandem::ExecError::DeviceFailed) && r.spec.op != OpKind::GpuOnly) {
            ++device_failed_non_gpu_only;  // only a hung chunk's batch can fail so
        }
        ++coverage.batches;
        if (r.inner) ++coverage.inner;
        if (o == 0) ++coverage.successes;
        if (o > 0 && o < 16) ++coverage.by_error[o];
    }
    if (it.plan.any_hang && device_failed_non_gpu_only > static_cast<std::size_t>(it.plan.hanging_devices)) {
        it.fail(std::to_string(device_failed_non_gpu_only) + " batches of ops with a CPU function failed with DeviceFailed, but only " +
                std::to_string(it.plan.hanging_devices) + " devices hang (one chunk each)");
    }
    const std::uint64_t on_engine = it.thrown.load() - it.thrown_inline.load();
    if (it.handler_calls.load() != on_engine) {
        it.fail("on_continuation_error was called " + std::to_string(it.handler_calls.load()) + " times for " +
                std::to_string(on_engine) + " continuations that threw on engine threads");
    }
    if (track_metrics) {
        if (metrics.batches_completed != metrics.batches_submitted) {
            it.fail("metrics: batches_completed " + std::to_string(metrics.batches_completed) + " != batches_submitted " +
                    std::to_string(metrics.batches_submitted));
        }
        if (metrics.batches_in_flight != 0 || metrics.tasks_in_flight != 0) {
            it.fail("metrics: " + std::to_string(metrics.batches_in_flight) + " batches / " +
                    std::to_string(metrics.tasks_in_flight) + " tasks still in flight after shutdown");
        }
        if (metrics.continuation_failures != it.handler_calls.load()) {
            it.fail("metrics: continuation_failures " + std::to_string(metrics.continuation_failures) +
                    " != on_continuation_error calls " + std::to_string(it.handler_calls.load()));
        }
        coverage.gpu_tasks += metrics.gpu_tasks;
        coverage.fallbacks += metrics.cpu_fallback_count;
        coverage.task_failures += metrics.task_failures;
        coverage.continuation_failures += metrics.continuation_failures;
        coverage.abandoned += metrics.batches_abandoned;
    }
    ++coverage.iterations;
    if (it.engine_thread_shutdown_done.load()) ++coverage.engine_thread_shutdowns;

    {
        std::lock_guard lock{it.failures_mutex};
        std::ostringstream os;
        for (std::size_t i = 0; i < it.failures.size() && i < 10; ++i) os << "\n  " << it.failures[i];
        if (it.failures.size() > 10) os << "\n  ... and " << it.failures.size() - 10 << " more";
        BOOST_TEST(it.failures.empty(), where << " (" << describe(it.plan) << "): " << it.failures.size() << " failures:"
                                              << os.str() << "\n  replay: TANDEM_STRESS_SEED=" << seed
                                              << " TANDEM_STRESS_ITERATION=" << number);
    }
    BOOST_TEST_MESSAGE(where << ": done in " << std::chrono::duration<double>(Clock::now() - began).count() << " s");
    watchdog.phase("destroying the iteration");
    it.registry.clear();
    it.owner.reset();
}

std::optional<std::uint64_t> env_u64(const char* name) {
    const char* v = std::getenv(name);
    if (!v || !*v) return std::nullopt;
    return std::strtoull(v, nullptr, 0);
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_batch_completes_exactly_once_under_random_load_faults_cancels_and_shutdowns) {
    tl_user_thread = true;
    std::vector<std::uint64_t> seeds;
    if (auto s = env_u64("TANDEM_STRESS_SEED")) {
        seeds.push_back(*s);
    } else {
        seeds = {1, 2, 3, 20240607, 0xC0FFEE};
        // One seed from the clock, printed so a failure can be replayed.
        seeds.push_back(static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()) % 1000000007u);
    }
    const auto only_iteration = env_u64("TANDEM_STRESS_ITERATION");
    const double budget_s = static_cast<double>(env_u64("TANDEM_STRESS_BUDGET_S").value_or(10));
    constexpr int max_iterations = 40;

    std::ostringstream list;
    for (auto s : seeds) list << ' ' << s;
    BOOST_TEST_MESSAGE("stress seeds:" << list.str() << " (budget " << budget_s << " s)");
    std::fprintf(stderr, "tandem stress: seeds%s\n", list.str().c_str());

    Coverage coverage;
    const auto start = Clock::now();
    for (std::size_t k = 0; k < seeds.size(); ++k) {
        // Each seed gets its share of the budget (and always at least one iteration).
        const auto seed_deadline = start + std::chrono::duration<double>(budget_s * static_cast<double>(k + 1) /
                                                                         static_cast<double>(seeds.size()));
        int ran = 0;
        for (int i = 0; i < max_iterations; ++i) {
            if (only_iteration && static_cast<std::uint64_t>(i) != *only_iteration) continue;
            if (ran > 0 && Clock::now() >= seed_deadline) break;
            run_iteration(seeds[k], i, coverage);
            ++ran;
        }
    }
    const double took = std::chrono::duration<double>(Clock::now() - start).count();
    std::ostringstream errors;
    for (int e = 1; e < 16; ++e) {
        if (coverage.by_error[e] != 0) {
            errors << ", " << tandem::make_error_code(static_cast<tandem::ExecError>(e)).message() << ": " << coverage.by_error[e];
        }
    }
    char line[1024];
    std::snprintf(line, sizeof line,
                  "tandem stress: %llu iterations, %llu batches (%llu from continuations) in %.1f s: %llu succeeded%s; "
                  "%llu device tasks, %llu fallback tasks, %llu throwing tasks, %llu throwing continuations, %llu "
                  "abandoned batches, %llu shutdowns from continuations\n",
                  static_cast<unsigned long long>(coverage.iterations), static_cast<unsigned long long>(coverage.batches),
                  static_cast<unsigned long long>(coverage.inner), took,
                  static_cast<unsigned long long>(coverage.successes), errors.str().c_str(),
                  static_cast<unsigned long long>(coverage.gpu_tasks), static_cast<unsigned long long>(coverage.fallbacks),
                  static_cast<unsigned long long>(coverage.task_failures),
                  static_cast<unsigned long long>(coverage.continuation_failures),
                  static_cast<unsigned long long>(coverage.abandoned),
                  static_cast<unsigned long long>(coverage.engine_thread_shutdowns));
    std::fputs(line, stderr);
    BOOST_TEST(coverage.iterations > 0u);
}
