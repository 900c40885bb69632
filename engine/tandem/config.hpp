#pragma once
/// \file
/// Engine settings. Every field has a working default; a value outside its documented range
/// makes the `Engine` constructor throw `std::invalid_argument` naming the field and the range.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace tandem {

/// Whether idle actors should spin before they park, on this machine: only with at least 4
/// hardware threads. On fewer, a spinning actor takes the core from the very thread that would
/// hand it work (measured on a 2-core box: a 1-task round trip of 114 µs with 50 µs spins,
/// against 6-8 µs parking at once; see bench/RESULTS-cpu.md).
inline bool spinning_pays() noexcept {
    static const bool pays = std::thread::hardware_concurrency() >= 4;
    return pays;
}

/// The default `EngineConfig::idle_spin`: 50 µs where spinning pays, else 0 (park at once).
inline std::chrono::nanoseconds default_idle_spin() noexcept {
    return spinning_pays() ? std::chrono::nanoseconds{std::chrono::microseconds{50}} : std::chrono::nanoseconds{0};
}

/// Failures the GPU backend can be told to simulate, so tests can prove no task is lost.
struct GpuFaultInjection {
    /// Every chunk's kernel launch fails (as a launch error).
    bool fail_launch = false;
    /// Every device-buffer allocation fails (as out of memory).
    bool fail_device_alloc = false;
    /// Every pinned staging allocation fails.
    bool fail_pinned_alloc = false;
    /// The device fails (sticky error) once it has completed this many chunks; -1: never.
    long fail_device_after_chunks = -1;
    /// Every chunk's kernel runs this many times over (1 .. 1000): a slow device, for
    /// benchmarks of placement across devices of unequal speed. The work is real (the op's
    /// kernel again on the same inputs, so the outputs are the same), the copies are not
    /// repeated, so a compute-bound op slows about this factor, a transfer-bound one less.
    /// Only for kernels that give the same outputs when run again (every `gpu::map`): a
    /// custom launcher that accumulates into its outputs would change them.
    std::uint32_t kernel_repeats = 1;
    /// Only this device index is affected; -1: all.
    int device = -1;
};

/// A simulated device: host threads behind the same interface as a CUDA device, for tests and
/// for machines without a GPU. It claims chunks like a GPU-stream actor, computes each chunk
/// with the op's CPU function (or the kernel's host emulation, `GpuLauncher::run_on_host`, for
/// a GPU-only op) so results are real, and reports each chunk's duration from its model
/// (`fixed_cost + cost × per_task`, where a chunk's cost is its tasks' `Task::est_cost` summed,
/// 0 counted as 1: its task count when every task costs 1), not from a clock, so tests that
/// read the durations are deterministic. Only used when listed in `GpuConfig::simulated`, never in place of a real
/// GPU otherwise.
struct SimulatedDevice {
    /// Shown in `Engine::gpus()`.
    std::string name = "simulated device";
    /// Modelled cost of one chunk, whatever its size (0 .. 1 h).
    std::chrono::nanoseconds fixed_cost{std::chrono::microseconds{20}};
    /// Modelled cost of one task of cost 1 (one unit of `Task::est_cost`) (0 .. 1 s).
    std::chrono::nanoseconds per_task{std::chrono::nanoseconds{1}};
    /// Modelled delay from the plan handing a batch over to the device starting its share (a
    /// GPU's actor waking up; 0 .. 1 h): what the device reports when it was idle, not waited
    /// for.
    std::chrono::nanoseconds start_delay{0};
    /// Also wait out the modelled duration of each chunk (sleeping), so the device is as slow
    /// in wall-clock time as its model says. Off: chunks complete as fast as the host runs them.
    bool real_time = false;
    /// Faults (the same failures the CUDA backend can meet):
    /// every chunk's launch fails (the chunk falls back to the CPU);
    bool fail_launch = false;
    /// every chunk's buffer allocation fails (the chunk falls back to the CPU);
    bool fail_alloc = false;
    /// the device fails once it has completed this many chunks (it is retired, its work falls
    /// back to the CPU); -1: never;
    long fail_after_chunks = -1;
    /// the chunk after this many completed ones never completes (a kernel that spins): only a
    /// shutdown ends it, after `GpuConfig::shutdown_grace`; -1: never.
    long hang_after_chunks = -1;
    /// Called on the device's thread before each chunk runs, with its first task and size (a
    /// hook for tests: it may block to hold a chunk "on the device").
    std::function<void(std::size_t first, std::size_t tasks)> on_chunk{};
    /// Multiplies every chunk's modelled duration; read once per chunk, so a test can slow the
    /// device down mid-run. Unset: 1.
    std::function<double()> slowdown{};
};

/// How the engine learns each op's speed on each device (see `GpuConfig::threshold_tasks`).
struct ModelConfig {
    /// Samples a device's model needs for an op before placement trusts it (1 .. 1000); until
    /// then the engine explores (see README, "Where a batch runs").
    std::size_t min_samples = 3;
    /// Weight kept by the older samples when a new one arrives (0.5 .. 0.999): lower follows
    /// drift faster, higher averages noise better. 0.8: a 2× change is learned to within 5%
    /// in about 14 batches.
    double forgetting = 0.8;
    /// A sample more than this factor away from the calibrated prediction (either way) is an
    /// outlier and ignored (1.5 .. 1000), unless `outlier_streak` come in a row: that is the
    /// device changing, not a spike.
    double outlier_factor = 4.0;
    /// Consecutive outliers on one side after which the model starts over from them (1 .. 16).
    std::size_t outlier_streak = 3;
    /// A participant (the CPU workers, a device) that has run its share of a hybrid batch takes
    /// unclaimed tasks of the others, so a misprediction costs about one chunk, not the
    /// difference. Off: every participant runs exactly its planned share (tests that check
    /// the split turn it off).
    bool steal = true;
    /// A batch is split between the CPU workers and devices only when the slower side alone
    /// would add at least this fraction to the batch's throughput (0 .. 1): with the CPU alone
    /// taking t_cpu and the devices alone t_dev, the best split gains t_fast / (t_cpu + t_dev).
    /// Below it a split gains less than the models' error, and a memory-bound op loses more
    /// than that to the two sides sharing the host's memory bandwidth (measured on an H200
    /// host: a pageable map the models split 91% / 9% ran 1.75× the CPU alone). 0: split
    /// wherever the models predict any gain.
    double min_hybrid_gain = 0.10;
    /// What placement counts for each CPU worker a batch is spread over (0 .. 1 ms): waking a
    /// parked worker, done one after another by the thread that hands the batch out. A batch
    /// placed on the CPU by the models is spread over the number of workers that makes it
    /// finish soonest (about √(work / this)), one chunk each: a few microseconds of work stay
    /// on one worker. 0: every batch is spread over every worker (chunks by count only).
    /// 2 µs: measured on a 16-core host (256 one-nanosecond tasks took 27 µs spread over 15
    /// workers, 4 µs on one).
    std::chrono::nanoseconds cpu_dispatch_cost{std::chrono::microseconds{2}};
    /// Learn, per op, how much longer the CPU workers take for a batch spread over all of them
    /// than its tasks' time divided among them (workers idle as the last chunks end, woken
    /// late, or sharing their cores), and count it where placement predicts such a batch
    /// (`OpModelInfo::cpu_stretch`). Off: the tasks' time divided among the workers.
    bool learn_cpu_stretch = true;
    /// A file the models are loaded from when the engine starts (if it exists) and saved to
    /// when it shuts down, so the first batches after a restart are placed well. Empty: none.
    std::string file{};
};

/// GPU settings (real GPUs are ignored in a build without CUDA).
struct GpuConfig {
    /// Use GPUs when the build has CUDA and a device is present.
    bool enabled = true;
    /// At most this many devices (0: every visible device from `first_device` on; at most 64).
    std::size_t max_devices = 0;
    /// The first visible device to use (0 .. 63): the engine takes devices `first_device`,
    /// `first_device + 1`, ... (up to `max_devices` of them). Several processes on one host
    /// share its GPUs this way, e.g. one MPI rank per GPU: `first_device = local_rank`,
    /// `max_devices = 1` (README, "Cluster (MPI)"). Past the last device: no GPU.
    std::size_t first_device = 0;
    /// Chunks in flight per device, each with its own buffers and stream (1 .. 64; measured on
    /// an H100 with a balanced 256 MiB batch: 2 → 9.42 ms, 4 → 6.51, 8 → 6.42, 16 → 6.45).
    std::size_t streams_per_device = 8;
    /// Bytes of page-locked staging memory per device, reused across chunks (4 KiB .. 1 TiB).
    std::size_t pinned_pool_bytes = std::size_t{256} << 20;
    /// Bytes of device buffers per device, reused across chunks (4 KiB .. 1 TiB).
    std::size_t device_pool_bytes = std::size_t{1} << 30;
    /// Bytes of input per GPU chunk (0: automatic; at most 1 TiB). For a batch whose tasks
    /// differ in cost, chunks carry equal cost: this many bytes on average, at most 16 times
    /// as many in a stretch of cheap tasks.
    std::size_t chunk_bytes = 0;
    /// `threshold_tasks` when placement is learned (the default).
    static constexpr std::size_t learned = static_cast<std::size_t>(-1);
    /// Where a batch of an op that has a kernel runs. `learned` (the default): where the
    /// op's performance models predict it completes earliest, counting the work already
    /// queued on each device and on the CPU workers (see `ModelConfig`). Any other value is a
    /// fixed threshold: batches with fewer tasks stay on the CPU, the others go to the
    /// devices (0 or 1: every batch does).
    std::size_t threshold_tasks = learned;
    /// CPU workers also take a share of batches that run on GPUs (hybrid execution). Off: such
    /// batches run on GPUs alone, the CPU taking only what a GPU gives back.
    bool cpu_helps = true;
    /// The CPU's share of a hybrid batch's cost (its tasks when every task costs 1), fixed
    /// (0 .. 1); negative (the default): the share that makes the CPU and the devices finish
    /// together, from the models.
    double cpu_share = -1.0;
    /// The performance models.
    ModelConfig model{};
    /// Bytes of freed page-locked memory kept for reuse by `Engine::pinned_memory()` and the
    /// outputs of batches built there.
    std::size_t pinned_cache_bytes = std::size_t{2} << 30;
    /// Record per-chunk GPU stage timestamps (see `Engine::gpu_trace`; superseded by
    /// `EngineConfig::trace`, which bounds its memory and covers the whole engine).
    bool trace = false;
    /// How long shutdown waits for a device's chunks in flight (1 ms .. 1 h). A device still
    /// busy then (a kernel that never returns) is given up on: its batches fail with
    /// `DeviceFailed`, the memory its chunks may still touch is deliberately never freed, and
    /// shutdown returns.
    std::chrono::milliseconds shutdown_grace{std::chrono::seconds{10}};
    /// Failures to simulate on real GPUs.
    GpuFaultInjection faults{};
    /// Simulated devices to use instead of real GPUs (empty: real GPUs, if any; at most 64).
    std::vector<SimulatedDevice> simulated{};
};

/// Hooks that let tests reach interleavings and failures deterministically. Leave them alone
/// in production.
struct EngineTestHooks {
    /// The next this-many sends to the scheduler fail as if its mailbox ran out of memory.
    /// Set (like `before_dispatch`), every batch goes through the scheduler actor instead of
    /// being sent to its workers and devices by the submitting thread.
    std::size_t fail_scheduler_sends = 0;
    /// The next this-many sends to each CPU worker fail likewise.
    std::size_t fail_worker_sends = 0;
    /// Called on the scheduler's thread after it has decided to run a batch, before it hands
    /// the batch to any worker or device. Set, every batch goes through the scheduler actor.
    std::function<void()> before_dispatch{};
    /// Called by `shutdown()` once every device has stopped, before the scheduler stops.
    std::function<void()> after_devices_stopped{};
    /// When `simulate_cpu_cost` is set, CPU chunks report `cpu_fixed_cost + cost ×
    /// cpu_per_task` as their duration (in `ExecStats::cpu_time` and to the performance
    /// models) instead of the clock's reading, so placement tests do not depend on timing. A
    /// chunk's cost is its tasks' `Task::est_cost` summed, 0 counted as 1 (its task count when
    /// every task costs 1), as for `SimulatedDevice`.
    bool simulate_cpu_cost = false;
    std::chrono::nanoseconds cpu_fixed_cost{0};
    std::chrono::nanoseconds cpu_per_task{100};
};

/// How CPU workers compete with the other threads of the machine.
enum class WorkerPriority {
    /// The default scheduling of the process.
    Normal,
    /// `SCHED_BATCH` at nice +10: the kernel favours interactive threads (an event loop) over
    /// the workers, which still get their share when the machine is busy.
    Low,
    /// `SCHED_IDLE`: the workers run only on cores nothing else wants.
    Idle,
};

/// Applies `priority` to the calling thread, as the engine does to its CPU workers (Linux;
/// does nothing elsewhere; `Normal` restores the default policy and nice 0). For threads of the
/// program's own that should yield to an event loop in the same way.
void set_thread_priority(WorkerPriority priority) noexcept;

/// The execution trace (`Engine::write_trace`): batches, CPU chunks and GPU chunks with their
/// stages, on one host clock, for https://ui.perfetto.dev or chrome://tracing.
struct TraceConfig {
    /// Record. Off (the default), recording costs one load and branch per chunk and per batch.
    bool enabled = false;
    /// Events kept (1 .. 2^24; about 128 bytes each, allocated at start when enabled): one per
    /// batch and one per chunk (a GPU chunk's stages ride in its event). When full, the oldest
    /// are overwritten; the export says how many.
    std::size_t capacity = std::size_t{1} << 16;
};

/// Engine settings. Every field has a working default.
struct EngineConfig {
    /// CPU-worker actors (threads); 0 means one per hardware thread, less one per GPU in use
    /// (at most 1024).
    std::size_t cpu_workers = 0;
    /// Admission limit: batches submitted but not completed (1 .. 1,044,480). `submit` waits
    /// for room, `try_submit` fails with `ExecError::QueueFull`.
    std::size_t max_batches_in_flight = 65536;
    /// Admission limit in tasks (1 .. 2^43); a single batch larger than this fails with
    /// `TooLarge`.
    std::uint64_t max_tasks_in_flight = std::uint64_t{1} << 32;
    /// Bytes of freed output arrays kept for reuse: a large batch's outputs then land in memory
    /// that is already mapped (a fresh 256 MiB array costs 65,536 page faults). Outputs under
    /// 64 KiB come from the heap.
    std::size_t output_cache_bytes = std::size_t{1} << 30;
    /// Tasks per CPU chunk (0: automatic, from the batch size and the worker count; at most
    /// 2^32). For a batch whose tasks differ in cost, chunks carry equal cost: this many
    /// tasks on average, at most 16 times as many in a stretch of cheap tasks.
    std::size_t cpu_chunk = 0;
    /// How long an idle actor spins before parking (0 .. 1 s; its wake-up then costs a
    /// system call). Default: 50 µs with 4 or more hardware threads, else 0 (see
    /// `spinning_pays`). (`BatchFuture::get` spins 100 µs on the caller's own thread.)
    std::chrono::nanoseconds idle_spin = default_idle_spin();
    /// Called with the exception when a continuation (`then`, a resumed coroutine) throws on
    /// an engine thread. The exception is caught and counted
    /// (`EngineMetrics::continuation_failures`) either way; unset, nothing else happens. The
    /// handler runs on the engine thread; an exception it throws is swallowed.
    std::function<void(std::exception_ptr)> on_continuation_error{};
    /// GPU settings.
    GpuConfig gpu{};
    /// Record the latency histograms of `Engine::metrics()`: batch duration and queue wait
    /// (per batch, on the thread that completes it) and the GPU chunk and stage times (per
    /// chunk). Each record is a few relaxed atomic adds into fixed buckets of the recording
    /// thread's own shard: no lock, no allocation, nothing per task (measured by
    /// bench/cpu/metrics_overhead.cpp). Off: the histograms stay empty; counters are kept.
    bool record_histograms = true;
    /// The execution trace (off by default).
    TraceConfig trace{};
    /// Scheduling priority of the CPU workers' threads (Linux; ignored elsewhere): lower it so
    /// that an event loop sharing the machine stays responsive while every worker computes.
    WorkerPriority worker_priority = WorkerPriority::Normal;
    /// Test hooks.
    EngineTestHooks test_hooks{};
};

}  // namespace tandem
