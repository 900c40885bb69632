#pragma once
/// \file
/// A cluster of engines over MPI: every rank runs an `Engine`; the leader splits a batch across
/// the ranks in proportion to their measured speed and gets one `BatchFuture` back (leader
/// mode), or each rank runs its own batches and gathers the results (SPMD mode).
///
/// ```
///  leader: submit(op, batch) ──► [transport actor] ──Slice + payload pieces──► rank r's transport
///                 │                  ▲   ▲                                        │
///                 │  local slice ──► own Engine                         pieces ──► rank r's Engine
///                 ▼                  │   └──────────── result pieces, SliceDone ◄──┘
///           BatchFuture<R> ◄── when every slice is back: results in task order, ExecStats::ranks
/// ```
///
/// One transport actor (a thread) per rank owns MPI: it initialises it (MPI_THREAD_SERIALIZED),
/// makes every MPI call, and progresses requests by polling (MPI_Test*) between its mailbox's
/// messages; no thread ever waits inside MPI. This header includes no MPI header: programs
/// link libtandem_cluster (pkg-config `tandem-cluster`) and run under `mpirun` or `srun`.
/// README, "Cluster (MPI)", has the launch recipes and what survives a failed rank.

#include <tandem/config.hpp>
#include <tandem/engine.hpp>
#include <tandem/error.hpp>
#include <tandem/future.hpp>
#include <tandem/op.hpp>
#include <tandem/promise.hpp>
#include <tandem/result.hpp>
#include <tandem/task.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <memory_resource>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace tandem {

/// Why a cluster batch (or a cluster call) failed, beyond `ExecError`. Values are stable.
enum class ClusterError {
    /// The op is not registered (`Cluster::add`) on every rank that is up.
    OpNotRegistered = 1,
    /// The op's payload or output type (size or type name) differs between ranks.
    OpTypeMismatch,
    /// A leader-mode call on a rank that is not the leader, or a rank outside the cluster.
    NotLeader,
    /// A rank did not answer within `ClusterConfig::deadline` and its part could not be run
    /// elsewhere (a `gather` whose part is missing).
    RankFailed,
    /// MPI could not be initialised, or does not give MPI_THREAD_SERIALIZED.
    MpiUnavailable,
    /// `add` after `start`, or two ops of one name on a rank.
    BadRegistration,
};

}  // namespace tandem

template <>
struct std::is_error_code_enum<tandem::ClusterError> : std::true_type {};

namespace tandem {

/// The category of `ClusterError` values; its name is "tandem.cluster".
const std::error_category& cluster_category() noexcept;
/// Makes `std::error_code{e, tandem::cluster_category()}`; found by ADL.
std::error_code make_error_code(ClusterError e) noexcept;

/// Failures a test (or a benchmark) can make a rank simulate. Leave them alone in production.
struct ClusterTestHooks {
    /// After receiving this many slices (counting from 1), this rank's transport stops
    /// answering for `stall_for` (its thread sleeps: no message is sent, received or
    /// progressed), as a hung process would; -1: never.
    long stall_after_slices = -1;
    std::chrono::milliseconds stall_for{0};
    /// After receiving this many slices this rank's process exits at once (`std::_Exit(0)`,
    /// no MPI_Finalize), as a crashed process would; -1: never. Needs `mpirun
    /// --enable-recovery` for the other ranks to survive it (README).
    long exit_after_slices = -1;
    /// From the slice that makes this many (counting from 1) on, this rank's transport hands
    /// no piece to its engine, as if the engine hung, while the transport goes on answering
    /// heartbeats; -1: never.
    long hang_engine_after_slices = -1;
    /// From the slice that makes this many on, every piece this rank runs is reported failed
    /// (its results sent as zeros, as a piece its engine failed), and instead of reporting
    /// the slice's end the transport stalls for `stall_for`; -1: never.
    long fail_pieces_then_stall_after_slices = -1;
    /// This rank, sending a `gather` part, sends its header and then stalls for `stall_for`
    /// before it sends the part's data, as a slow (not dead) peer would.
    bool stall_before_gather_data = false;
    /// At shutdown this rank does not cancel its receives into gather parts, as when MPI has
    /// matched them to a message still arriving and cannot cancel them: they are left to MPI
    /// (freed with `MPI_Request_free`) while the peer may still write into them.
    bool gather_receives_uncancellable = false;
    /// When set, this rank's transport adds to it the receives into gather parts that it left
    /// to MPI at shutdown (freed with `MPI_Request_free`, their memory kept until exit).
    std::atomic<long>* gather_receives_left = nullptr;
    /// When set, this rank's transport adds to it every receive into a gather part it posts.
    std::atomic<long>* gather_receives_posted = nullptr;
};

/// Cluster settings. A value outside its range makes the `Cluster` constructor throw
/// `std::invalid_argument` naming the field.
struct ClusterConfig {
    /// The rank that takes leader-mode batches (0 .. size - 1).
    int leader = 0;
    /// Slices travel in pieces of at most this many bytes of payload (4 KiB .. 1 GiB): a rank
    /// starts on a piece while the next is on the wire, and sends each piece's results as soon
    /// as its engine is done with it. Each piece is one batch on the rank's engine.
    std::size_t piece_bytes = std::size_t{4} << 20;
    /// A rank that has work (a slice, a gather part) and from which nothing has arrived for this
    /// long is failed (10 ms .. 1 h): its unfinished slices run elsewhere (on the leader if
    /// need be), and it gets no more work from this cluster. Every rank sends a heartbeat
    /// every `heartbeat`, so a rank that is slow but alive is not failed for its silence. A
    /// rank that answers but delivers nothing of its open slices for this long plus twice
    /// their predicted time (its engine hangs) is failed too (README, "Failures").
    std::chrono::milliseconds deadline{std::chrono::seconds{30}};
    /// Heartbeat period (1 ms .. 1 min; must be below `deadline`).
    std::chrono::milliseconds heartbeat{std::chrono::milliseconds{200}};
    /// How long the leader's `start()` waits for every rank's op table (10 ms .. 1 h); a rank
    /// not heard from by then is failed.
    std::chrono::milliseconds startup_timeout{std::chrono::seconds{60}};
    /// How long shutdown waits for the other ranks' goodbyes and for transfers in flight
    /// (10 ms .. 1 h); then it gives up on them (their buffers are kept until the process
    /// exits, as MPI may still write them) and finalises.
    std::chrono::milliseconds shutdown_grace{std::chrono::seconds{10}};
    /// Makes this rank `slowdown` times slower per slice (1 .. 1000), for tests and
    /// benchmarks: after its engine has run a slice it waits (slowdown - 1) × the time that
    /// took before it reports the slice done (its engine stays free meanwhile).
    double slowdown = 1.0;
    /// The per-rank, per-op speed models (`ModelConfig::min_samples` slices before a rank's
    /// model is trusted: until every rank's is, batches are split equally to measure them;
    /// forgetting and outlier rejection as the engine's).
    ModelConfig model{};
    /// The transport polls MPI at least this often while idle (1 µs .. 100 ms); when messages
    /// flow it polls at once. Lower: less latency, more CPU.
    std::chrono::microseconds max_poll_interval{std::chrono::microseconds{200}};
    /// Finalise MPI at shutdown when the cluster initialised it (not when the program did).
    bool finalize = true;
    /// Called with the exception when a continuation of a cluster future (`then`, a resumed
    /// coroutine) throws on the transport's thread; unset: ignored.
    std::function<void(std::exception_ptr)> on_continuation_error{};
    ClusterTestHooks test_hooks{};
};

/// What the leader knows about one rank (`Cluster::ranks`).
struct RankInfo {
    int rank = 0;
    /// Up (answering), or failed (missed a deadline, or not heard from at start).
    bool up = true;
    /// The rank's `local_rank` (its index among the ranks of its host) and its engine's
    /// CPU workers and GPUs, as it reported them at start.
    int local_rank = 0;
    std::size_t cpu_workers = 0;
    std::size_t gpus = 0;
    /// Measured interconnect cost from the leader: what a slice's round trip adds to the
    /// rank's own time, as a latency per slice plus nanoseconds per byte moved (the latter
    /// learned from slices of 1 MiB or more only; 0: not measured yet).
    double link_fixed_ns = 0;
    double link_ns_per_byte = 0;
    /// Per op: the rank's learned cost (fixed + per task, as the engine's `CostModelInfo`).
    std::vector<CostModelInfo> ops;
};

/// The rank's index among the processes of its host, from the launcher's environment
/// (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, MPI_LOCALRANKID, PMI_LOCAL_RANK); 0 when none is
/// set. Needs no MPI call, so it can choose the GPU before the engine starts:
/// `config.gpu.first_device = local_rank() * gpus_per_rank; config.gpu.max_devices = gpus_per_rank;`
int local_rank() noexcept;

namespace detail {

/// What a rank's engine gave back for one piece (or the leader's local slice).
struct PieceOutcome {
    /// The outputs, `tasks` of `out_size` bytes each, in task order; valid while `keep` lives.
    const void* outputs = nullptr;
    std::size_t tasks = 0;
    std::shared_ptr<void> keep;
    std::error_code error;  // batch-level
    std::uint64_t cpu_tasks = 0, gpu_tasks = 0;
    /// Task failures: (position in the piece, message).
    std::vector<std::pair<std::size_t, std::string>> task_errors;
};

/// A type-erased op registered with a cluster: its identity on the wire and a way to run raw
/// payloads on an engine.
class ClusterOp {
public:
    virtual ~ClusterOp() = default;
    virtual const std::string& name() const noexcept = 0;
    virtual std::size_t in_size() const noexcept = 0;
    virtual std::size_t out_size() const noexcept = 0;
    /// The payload and output types' names as this compiler spells them (compared across ranks).
    virtual std::string type_names() const = 0;
    /// True when the op has a GPU kernel (its columns then go to page-locked memory).
    virtual bool has_gpu() const noexcept = 0;
    /// Submits `n` payloads at `in` to `engine` if it has room, their outputs written at
    /// `out`: nothing is copied (`Batch::borrow`, `OutputSpan`). `in_owner` and `out_owner`
    /// keep the two alive while the engine holds the batch; `in_memory`, `out_memory` say
    /// where they live (the engine's page-locked memory, or null). `done` runs once, on the
    /// thread that completes the batch. False (nothing submitted, `done` kept) when the engine
    /// is at its admission limit. `cancel` (when not null) gets the batch's cancel handle.
    virtual bool try_run(Engine& engine, const void* in, std::size_t n, std::shared_ptr<const void> in_owner,
                         std::pmr::memory_resource* in_memory, void* out, std::shared_ptr<void> out_owner,
                         std::pmr::memory_resource* out_memory, std::function<void(PieceOutcome&&)>& done,
                         CancelHandle* cancel) const = 0;
};

template <class T, class R>
class TypedClusterOp final : public ClusterOp {
public:
    explicit TypedClusterOp(Op<T, R> op) : op_{std::move(op)} {}
    const std::string& name() const noexcept override { return op_.name(); }
    std::size_t in_size() const noexcept override { return sizeof(T); }
    std::size_t out_size() const noexcept override { return sizeof(R); }
    std::string type_names() const override { return std::string{typeid(T).name()} + " -> " + typeid(R).name(); }
    bool has_gpu() const noexcept override { return op_.has_gpu(); }
    bool try_run(Engine& engine, const void* in, std::size_t n, std::shared_ptr<const void> in_owner,
                 std::pmr::memory_resource* in_memory, void* out, std::shared_ptr<void> out_owner,
                 std::pmr::memory_resource* out_memory, std::function<void(PieceOutcome&&)>& done,
                 CancelHandle* cancel) const override {
        auto batch = Batch<T>::borrow(std::span<const T>{static_cast<const T*>(in), n}, std::move(in_owner), in_memory);
        OutputSpan<R> outputs{std::span<R>{static_cast<R*>(out), n}, out_owner, out_memory};
        auto future = engine.submit_if_room(op_, batch, outputs);
        if (!future) return false;
        if (cancel) *cancel = future->cancel_handle();
        future->then([done = std::move(done), out_owner = std::move(out_owner)](std::error_code ec,
                                                                               BatchResult<R> result) mutable {
            PieceOutcome o;
            o.error = ec;
            if (!ec) {
                o.tasks = result.results.size();
                o.cpu_tasks = result.stats.cpu_tasks;
                o.gpu_tasks = result.stats.gpu_tasks;
                // The outputs are where the caller asked: its owner keeps them.
                o.outputs = result.results.outputs().data();
                o.keep = std::move(out_owner);
                try {
                    for (const TaskError& e : result.results.errors()) o.task_errors.emplace_back(e.index, e.message);
                } catch (...) {
                    o.error = make_error_code(ExecError::OutOfMemory);
                    o.task_errors.clear();
                }
            }
            done(std::move(o));
        });
        return true;
    }

private:
    Op<T, R> op_;
};

/// The typed end of a leader-mode batch, seen by the transport through this interface.
class ClusterPromise {
public:
    virtual ~ClusterPromise() = default;
    virtual void* outputs() noexcept = 0;
    virtual bool cancel_requested() const noexcept = 0;
    virtual void task_error(std::size_t index, std::string message) noexcept = 0;
    virtual void set_value(ExecStats stats) noexcept = 0;
    virtual void set_error(std::error_code why, ExecStats stats) noexcept = 0;
};

template <class R>
class TypedClusterPromise final : public ClusterPromise {
public:
    explicit TypedClusterPromise(BatchPromise<R> p) : promise_{std::move(p)} {}
    void* outputs() noexcept override { return promise_.outputs(); }
    bool cancel_requested() const noexcept override { return promise_.cancel_requested(); }
    void task_error(std::size_t index, std::string message) noexcept override {
        try {
            promise_.set_task_error(index, std::make_exception_ptr(std::runtime_error{std::move(message)}));
        } catch (...) {
            promise_.set_task_error(index, nullptr);
        }
    }
    void set_value(ExecStats stats) noexcept override { promise_.set_value(std::move(stats)); }
    void set_error(std::error_code why, ExecStats stats) noexcept override { promise_.set_error(why, std::move(stats)); }

private:
    BatchPromise<R> promise_;
};

/// A leader-mode batch handed to the transport: raw payloads kept alive by `keep`.
struct LeaderSubmission {
    std::size_t op_index = 0;
    const void* in = nullptr;
    std::size_t tasks = 0;
    std::shared_ptr<void> keep;          // the payloads
    std::pmr::memory_resource* in_memory = nullptr;  // where they live (page-locked or not)
    /// The output column (the promise's results view it): every writer of it holds `out`.
    std::shared_ptr<void> out;
    std::pmr::memory_resource* out_memory = nullptr;
    std::unique_ptr<ClusterPromise> promise;
};

/// Storage for `bytes` of a column from `memory` (null: the heap), freed when the last holder
/// lets go. When `memory` cannot give it (page-locked memory ran out), the heap does: `used`
/// says which (null: the heap). Throws `std::bad_alloc` only when the heap fails too.
std::shared_ptr<void> output_storage(std::shared_ptr<std::pmr::memory_resource> memory, std::size_t bytes,
                                     std::pmr::memory_resource*& used);

/// Where a gather's outcome goes (the typed end, seen by the transport).
class GatherSink {
public:
    virtual ~GatherSink() = default;
    /// On the root: the output column of the gathered result for `ids` (in rank order).
    virtual void* prepare(IdColumn ids) = 0;
    virtual void task_error(std::size_t index, std::string message) noexcept = 0;
    /// Completes: on the root with the prepared result, elsewhere with an empty one.
    virtual void set_value(ExecStats stats) noexcept = 0;
    virtual void set_error(std::error_code why) noexcept = 0;
};

template <class R>
class TypedGatherSink final : public GatherSink {
public:
    std::future<BatchResult<R>> get_future() { return promise_.get_future(); }
    void* prepare(IdColumn ids) override {
        BatchPromise<R> p{"gather", std::move(ids)};
        future_ = p.get_future();
        result_.emplace(std::move(p));
        return result_->outputs();
    }
    void task_error(std::size_t index, std::string message) noexcept override {
        if (result_) result_->task_error(index, std::move(message));
    }
    void set_value(ExecStats stats) noexcept override {
        if (std::exchange(done_, true)) return;
        try {
            if (result_) {
                result_->set_value(std::move(stats));
                promise_.set_value(future_.get());
            } else {
                promise_.set_value(BatchResult<R>{});
            }
        } catch (...) {
            promise_.set_exception(std::current_exception());
        }
    }
    void set_error(std::error_code why) noexcept override {
        if (std::exchange(done_, true)) return;
        if (result_) result_->set_error(why, {});
        try {
            promise_.set_exception(std::make_exception_ptr(Error{why, "tandem gather"}));
        } catch (...) {
        }
    }
    ~TypedGatherSink() override { set_error(make_error_code(ExecError::ShutDown)); }

private:
    std::promise<BatchResult<R>> promise_;
    std::optional<TypedClusterPromise<R>> result_;
    BatchFuture<R> future_;
    bool done_ = false;
};

/// One rank's part of a gather.
struct GatherSubmission {
    int root = 0;
    std::size_t out_size = 0;
    std::size_t tasks = 0;
    const void* outputs = nullptr;
    std::vector<std::uint64_t> ids;
    std::vector<std::pair<std::size_t, std::string>> task_errors;
    ExecStats stats;
    std::shared_ptr<void> keep;
    std::unique_ptr<GatherSink> sink;
};

}  // namespace detail

/// A cluster of engines, one per MPI rank. Every rank constructs one (over its own engine),
/// registers the same ops with `add`, and calls `start()`; `shutdown()` (or the destructor)
/// is collective too. The engine must outlive the cluster.
///
/// Leader mode: `submit` on the leader rank splits a batch across every rank that is up; the
/// future is an ordinary `BatchFuture<R>` (get, wait, then, co_await, cancel,
/// `async_submit`-style adapters over it). Its continuations run on the leader's transport
/// thread (or on the calling thread if the batch has completed). Payload and output types must
/// be trivially copyable (they travel as bytes); ops match by name, and their types are checked
/// across ranks at `start()`.
///
/// SPMD mode: each rank submits to its own `engine()`; `gather` collects one result from
/// every rank on a root rank.
///
/// Thread-safe: submit and gather from any thread (gathers in the same order on every rank).
/// From a continuation (which runs on the transport thread) `shutdown()` only starts the
/// shutdown (a later call from another thread waits for it), and destroying the cluster there
/// leaves the rest of the shutdown to that thread, which frees the cluster when it is done:
/// the engine must then outlive it, and the program must not call MPI until it is done.
class Cluster {
public:
    /// Starts the transport thread, which initialises MPI (unless the program did, with at
    /// least MPI_THREAD_SERIALIZED: then the program must not call MPI while the cluster
    /// runs). Throws `tandem::Error` (`ClusterError::MpiUnavailable`) when MPI cannot start,
    /// `std::invalid_argument` for a configuration value out of range.
    explicit Cluster(Engine& engine, ClusterConfig config = {});
    Cluster(const Cluster&) = delete;
    Cluster& operator=(const Cluster&) = delete;
    /// `shutdown()`.
    ~Cluster();

    /// Registers `op` under its name, before `start()`. Throws `tandem::Error`
    /// (`ClusterError::BadRegistration`) after `start()` or for a second op of the same name.
    template <class T, class R>
    void add(const Op<T, R>& op) {
        static_assert(std::is_trivially_copyable_v<T>, "cluster payloads travel as bytes: T must be trivially copyable");
        static_assert(std::is_trivially_copyable_v<R>, "cluster outputs travel as bytes: R must be trivially copyable");
        add_op(std::make_shared<const detail::TypedClusterOp<T, R>>(op));
    }

    /// Sends this rank's op table to the leader. On the leader, waits (up to
    /// `startup_timeout`) for every rank's table and checks them: an op missing on a rank, or
    /// with other types there, makes batches of that op fail at submit with a clear error
    /// (`describe_op` says which rank). Collective: every rank calls it once.
    void start();

    /// This rank, the number of ranks, and the leader's rank.
    int rank() const noexcept;
    int size() const noexcept;
    int leader() const noexcept;
    bool is_leader() const noexcept { return rank() == leader(); }
    /// This rank's engine.
    Engine& engine() noexcept;
    const ClusterConfig& config() const noexcept;

    /// Leader mode: runs `batch` across the ranks; the future completes with the results in
    /// task order and `ExecStats::ranks`. Never throws for bad input: the future fails with
    /// `EmptyBatch`, `DuplicateTaskId`, `ShutDown`, `ClusterError::NotLeader` (not the leader,
    /// or before `start()`), `OpNotRegistered` or `OpTypeMismatch`.
    template <class T, class R>
    BatchFuture<R> submit(const Op<T, R>& op, Batch<T> batch) {
        static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_copyable_v<R>,
                      "cluster payloads and outputs must be trivially copyable");
        std::size_t index = 0;
        std::error_code why = check_submit(op.name(), sizeof(T), sizeof(R), batch.size(), index);
        if (!why && !batch.ids().unique()) why = make_error_code(ExecError::DuplicateTaskId);
        const std::size_t n = batch.size();
        const std::uint64_t cost = batch.total_cost();
        if (why) {
            BatchPromise<R> promise{op.name(), IdColumn{}, cost, config().on_continuation_error};
            BatchFuture<R> future = promise.get_future();
            promise.set_error(why);
            return future;
        }
        // The output column in the engine's memory for outputs (page-locked with a GPU): the
        // leader's own slice runs straight into it and the other ranks' results land in it.
        std::pmr::memory_resource* out_memory = nullptr;
        std::shared_ptr<void> out;
        try {
            out = detail::output_storage(engine().output_memory(n * sizeof(R), op.has_gpu()), n * sizeof(R), out_memory);
        } catch (const std::bad_alloc&) {
            BatchPromise<R> promise{op.name(), IdColumn{}, cost, config().on_continuation_error};
            BatchFuture<R> future = promise.get_future();
            promise.set_error(make_error_code(ExecError::OutOfMemory));
            return future;
        }
        BatchPromise<R> promise{op.name(), batch.take_ids(), cost, config().on_continuation_error,
                                OutputSpan<R>{std::span<R>{static_cast<R*>(out.get()), n}, out, out_memory}};
        BatchFuture<R> future = promise.get_future();
        std::pmr::memory_resource* in_memory = batch.memory();
        auto held = std::make_shared<Batch<T>>(std::move(batch));
        detail::LeaderSubmission s;
        s.op_index = index;
        s.in = std::as_const(*held).payloads().data();
        s.tasks = n;
        s.keep = std::move(held);
        s.in_memory = in_memory;
        s.out = std::move(out);
        s.out_memory = out_memory;
        s.promise = std::make_unique<detail::TypedClusterPromise<R>>(std::move(promise));
        hand_over(std::move(s));
        return future;
    }

    /// SPMD mode, collective: every rank calls `gather` with its own result (the k-th call on
    /// each rank pairs with the k-th on the others; results of one type R everywhere). On
    /// `root` the future gets every rank's results concatenated in rank order (their ids as
    /// they were: ids need not be unique across ranks), their task errors, summed stats and
    /// `ExecStats::ranks`; on the other ranks an empty result, once this rank's part has been
    /// sent. Errors arrive as `tandem::Error` from `get()`: `ClusterError::RankFailed` when a
    /// rank failed before its part arrived (or, elsewhere, when the root did), `ShutDown`.
    /// A `std::future`: the root learns the gathered size only as the parts arrive.
    template <class R>
    std::future<BatchResult<R>> gather(BatchResult<R> mine, int root = 0) {
        static_assert(std::is_trivially_copyable_v<R>, "gathered outputs travel as bytes: R must be trivially copyable");
        auto held = std::make_shared<BatchResult<R>>(std::move(mine));
        detail::GatherSubmission g;
        g.root = root;
        g.out_size = sizeof(R);
        g.tasks = held->results.size();
        g.outputs = held->results.outputs().data();
        g.ids.reserve(g.tasks);
        for (std::size_t i = 0; i < g.tasks; ++i) g.ids.push_back(held->results.ids()[i]);
        for (const TaskError& e : held->results.errors()) g.task_errors.emplace_back(e.index, e.message);
        g.stats = held->stats;
        g.keep = held;
        auto sink = std::make_unique<detail::TypedGatherSink<R>>();
        std::future<BatchResult<R>> future = sink->get_future();
        g.sink = std::move(sink);
        hand_over_gather(std::move(g));
        return future;
    }

    /// On the leader: what it knows about every rank (up or failed, speed models per op).
    std::vector<RankInfo> ranks() const;
    /// On the leader, after `start()`: which ranks have the op named `name`, with which types
    /// ("" when every rank has it with the leader's types).
    std::string describe_op(std::string_view name) const;

    /// Collective: completes every batch and gather still in flight (`ExecError::ShutDown`),
    /// says goodbye to the other ranks (waiting up to `shutdown_grace` for theirs), stops the
    /// transport and finalises MPI if the cluster initialised it. Idempotent.
    void shutdown();

    struct Impl;

private:
    void add_op(std::shared_ptr<const detail::ClusterOp> op);
    std::error_code check_submit(const std::string& name, std::size_t in_size, std::size_t out_size,
                                 std::size_t tasks, std::size_t& index) const;
    void hand_over(detail::LeaderSubmission s);
    void hand_over_gather(detail::GatherSubmission g);

    std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
