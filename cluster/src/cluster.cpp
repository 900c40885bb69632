// The cluster's transport actor: one thread per rank that owns MPI (see cluster.hpp).
//
// Everything that touches MPI, and every piece of the cluster's state, lives on that thread.
// Other threads talk to it through its mailbox: `submit` and `gather` from the program's
// threads, piece completions from the engine's threads (their continuations). Nothing it
// owns is shared, except
//   - a leader batch's output column, which the leader's own slices' engine batches write
//     in place (the transport completes the batch only after they have completed, a failed
//     batch too: their cancel makes that soon), and
//   - the published facts the program's threads read (`ranks()`, the op checks of `submit`),
//     under `published_mutex`.
//
// The loop: take mailbox messages; test every outstanding request (MPI_Testsome) and run the
// completion of each one done; timers, heartbeats and deadlines; then, if nothing happened,
// park on the mailbox for a poll interval that doubles up to `max_poll_interval`.
#include <tandem/cluster.hpp>

#include "split.hpp"
#include "wire.hpp"

#include <concurrentqueue.h>
// The C API only: MPI's deprecated C++ bindings are not used (and do not compile warning-free).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <tandem/actors/parker.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <variant>

namespace tandem {

// ---- errors -------------------------------------------------------------------------------

namespace {

class ClusterCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "tandem.cluster"; }
    std::string message(int value) const override {
        switch (static_cast<ClusterError>(value)) {
            case ClusterError::OpNotRegistered:
                return "the op is not registered on every rank of the cluster (Cluster::describe_op says where)";
            case ClusterError::OpTypeMismatch:
                return "the op's payload or output type differs between ranks (Cluster::describe_op says where)";
            case ClusterError::NotLeader:
                return "leader-mode call on a rank that is not the leader, or before Cluster::start";
            case ClusterError::RankFailed:
                return "a rank did not answer within the cluster's deadline and its part could not run elsewhere";
            case ClusterError::MpiUnavailable:
                return "MPI could not be initialised with MPI_THREAD_SERIALIZED";
            case ClusterError::BadRegistration:
                return "cluster op registration after start, or two ops of one name";
        }
        return "unknown cluster error";
    }
};

}  // namespace

const std::error_category& cluster_category() noexcept {
    static const ClusterCategory category;
    return category;
}

std::error_code make_error_code(ClusterError e) noexcept { return {static_cast<int>(e), cluster_category()}; }

namespace detail {

std::shared_ptr<void> output_storage(std::shared_ptr<std::pmr::memory_resource> memory, std::size_t bytes,
                                     std::pmr::memory_resource*& used) {
    bytes = std::max<std::size_t>(bytes, 1);
    constexpr std::size_t align = alignof(std::max_align_t) > 64 ? alignof(std::max_align_t) : 64;
    used = nullptr;
    if (memory) {
        void* p = nullptr;
        try {
            p = memory->allocate(bytes, align);
        } catch (const std::bad_alloc&) {
            p = nullptr;  // page-locked memory ran out: the heap will do
        }
        if (p) {
            used = memory.get();
            return std::shared_ptr<void>(p, [memory = std::move(memory), bytes](void* q) { memory->deallocate(q, bytes, align); });
        }
    }
    void* p = ::operator new(bytes, std::align_val_t{align});
    return std::shared_ptr<void>(p, [](void* q) { ::operator delete(q, std::align_val_t{align}); });
}

}  // namespace detail

int local_rank() noexcept {
    for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"}) {
        if (const char* v = std::getenv(name)) {
            char* end = nullptr;
            const long r = std::strtol(v, &end, 10);
            if (end != v && r >= 0 && r < 1 << 20) return static_cast<int>(r);
        }
    }
    return 0;
}

namespace cluster_detail {
namespace {

using Clock = std::chrono::steady_clock;
using detail::ClusterOp;
using detail::PieceOutcome;

constexpr int ctrl_tag = 0;
/// Data tags: 16 .. tag_ub, even for tags the sender chose, odd for tags the receiver chose
/// (each rank numbers both kinds from its own counters, so the two cannot collide between
/// the same pair of ranks).
int data_tag(std::uint64_t counter, int receiver_chose, int tag_ub) noexcept {
    const std::uint64_t span = static_cast<std::uint64_t>(tag_ub - 16) / 2;
    return 16 + static_cast<int>(2 * (counter % span)) + receiver_chose;
}

/// Buffers MPI may still write or read after shutdown gave up on a peer (a request freed with
/// MPI_Request_free stays live inside MPI): kept until the process exits, never freed.
void keep_until_exit(std::shared_ptr<void> p) noexcept {
    try {
        static auto* kept = new std::vector<std::shared_ptr<void>>;
        static std::mutex mutex;
        std::lock_guard lock{mutex};
        kept->push_back(std::move(p));
    } catch (...) {
        new std::shared_ptr<void>(std::move(p));
    }
}

std::size_t pieces_of(std::size_t tasks, std::size_t piece_tasks) noexcept {
    return tasks == 0 ? 0 : (tasks + piece_tasks - 1) / piece_tasks;
}

// ---- mailbox messages -------------------------------------------------------------------

struct StartCmd {
    std::shared_ptr<std::promise<void>> done;
};
struct SubmitCmd {
    detail::LeaderSubmission s;
};
struct GatherCmd {
    detail::GatherSubmission g;
};
/// The leader's own slice came back from its engine (outputs already copied into the batch).
struct LocalDone {
    std::uint64_t slice;
    PieceOutcome outcome;
    Clock::time_point started, ended;
};
/// A piece of a slice this rank runs for the leader came back from its engine.
struct PieceDone {
    std::uint64_t work;
    std::size_t piece;
    PieceOutcome outcome;
    Clock::time_point ended;
};
struct ShutdownCmd {
    std::shared_ptr<std::promise<void>> done;
};
using Message = std::variant<std::monostate, StartCmd, SubmitCmd, GatherCmd, LocalDone, PieceDone, ShutdownCmd>;

/// The transport's mailbox; shared with the continuations that post into it, which may run
/// after the transport has stopped (they then post into a mailbox nobody reads, harmlessly).
struct Inbox {
    moodycamel::ConcurrentQueue<Message> queue;
    actors::Parker parker;
    void post(Message&& m) {
        if (!queue.enqueue(std::move(m))) throw std::bad_alloc{};
        parker.notify();
    }
};

/// Completes what was posted after the transport stopped (a submit racing the shutdown).
void drain_after_stop(Inbox& inbox) {
    Message m;
    while (inbox.queue.try_dequeue(m)) {
        if (auto* s = std::get_if<SubmitCmd>(&m)) s->s.promise->set_error(make_error_code(ExecError::ShutDown), {});
        if (auto* g = std::get_if<GatherCmd>(&m)) g->g.sink->set_error(make_error_code(ExecError::ShutDown));
    }
}

// ---- leader state -----------------------------------------------------------------------

struct LeaderBatch {
    std::uint64_t id = 0;
    std::size_t op = 0;
    std::size_t in_size = 0, out_size = 0;
    const std::byte* in = nullptr;
    std::size_t tasks = 0;
    std::shared_ptr<void> keep;
    std::pmr::memory_resource* in_memory = nullptr;
    std::unique_ptr<detail::ClusterPromise> promise;
    /// The output column. Every writer holds `out_owner`: the leader's own slices (its
    /// engine writes their outputs in place) and the receives of the other ranks' results,
    /// so a writer that outlives the batch (a receive MPI could not cancel) writes into
    /// storage that is still there.
    std::byte* out = nullptr;
    std::shared_ptr<void> out_owner;
    std::pmr::memory_resource* out_memory = nullptr;
    std::size_t slices_open = 0;  // slices not yet done (their reruns included)
    std::size_t retiring = 0;     // receives into `out` being cancelled
    bool failing = false;
    std::error_code error;
    std::vector<RankStats> ranks;
    std::uint64_t cpu_tasks = 0, gpu_tasks = 0;
};

struct Slice {
    std::uint64_t id = 0;
    std::shared_ptr<LeaderBatch> batch;
    int rank = 0;
    std::size_t first = 0, tasks = 0, piece_tasks = 0, pieces = 0;
    Clock::time_point sent;
    double predicted_ns = 0;
    /// A remote slice: how long past the deadline its rank may go without progress while
    /// this slice is open (twice what the slice was predicted to wait and run), so a rank
    /// that answers heartbeats while its engine hangs is failed too.
    double allowance_ns = 0;
    /// A remote slice's task errors (position in the slice, message), held until the slice
    /// completes: a slice rerun after its rank failed must not leave them twice, or leave
    /// those of pieces whose results never came.
    std::vector<std::pair<std::size_t, std::string>> task_errors;
    std::size_t error_blobs_pending = 0;
    std::uint64_t result_tag = 0;                // counter of piece 0's result tag (receiver-chosen)
    std::vector<std::uint64_t> result_requests;  // per piece: its receive (0 once complete)
    std::size_t receives_left = 0;               // result pieces and error blobs
    bool done_seen = false;
    Ctrl done{};
    bool failed = false;
    std::size_t retiring = 0;
    /// The leader's own slice, while its engine batch runs: that batch writes into the
    /// outputs until it completes, so a failed batch waits for it (`after_engine`).
    bool in_engine = false;
    CancelHandle engine_cancel;
    std::function<void()> after_engine;
};

// ---- worker state (a slice this rank runs for the leader) -------------------------------

struct Work {
    std::uint64_t id = 0;
    int leader = 0;
    std::size_t op = 0;
    std::size_t tasks = 0, piece_tasks = 0, pieces = 0;
    std::uint64_t result_tag = 0;
    std::vector<std::shared_ptr<void>> buffers;  // payload pieces until their engine batch is made
    std::vector<std::pmr::memory_resource*> in_memory;  // where each is (page-locked with a GPU)
    std::deque<std::size_t> ready;                      // received, waiting for engine room
    std::size_t in_engine = 0, finished = 0;
    bool started = false;
    Clock::time_point first_start, last_end;
    std::uint64_t cpu_tasks = 0, gpu_tasks = 0;
    std::int32_t error = 0;
    long number = 0;  // which slice this rank received it as (from 1), for the test hooks
};

// ---- gather state (on the root) -----------------------------------------------------------

/// What a rank's gather part is received into. Every receive into it holds it: a receive
/// MPI could not cancel at shutdown keeps it (with the request, until the process exits)
/// after the gather itself is gone, since the peer may still write.
struct GatherData {
    std::vector<std::byte> outputs;
    std::vector<std::uint64_t> ids;
    std::vector<std::byte> errors;
};

struct GatherPart {
    bool header = false;
    std::size_t out_size = 0;
    bool complete = false;
    std::size_t tasks = 0;
    std::size_t receives_left = 0;
    std::shared_ptr<GatherData> data = std::make_shared<GatherData>();
    std::int64_t time_ns = 0;
    std::uint64_t cpu_tasks = 0, gpu_tasks = 0;
};

struct Gather {
    std::uint64_t seq = 0;
    bool own = false;
    std::optional<detail::GatherSubmission> mine;
    std::size_t out_size = 0;
    std::vector<GatherPart> parts;
    bool done = false;
};

// ---- outstanding MPI requests -----------------------------------------------------------

struct Pending {
    std::uint64_t id = 0;
    int peer = -1;
    bool send = false;
    std::function<void(const MPI_Status&)> done;
    std::shared_ptr<void> keep;  // what the request reads or writes
    bool into_gather = false;    // a receive into a gather part (test hook gather_receives_uncancellable)
};

struct RankState {
    bool up = true;
    bool hello = false;
    bool bye = false;
    bool heartbeat_out = false;
    Clock::time_point last_heard{};
    int local_rank = 0;
    std::size_t cpu_workers = 0, gpus = 0;
    struct OpEntry {
        std::string name, types;
        std::size_t in_size = 0, out_size = 0;
    };
    std::vector<OpEntry> ops;
    LinkCost link;
    double backlog_ns = 0;
    std::vector<LinearCost> models;  // per op of the leader's table
    /// The leader's slices open there, and when the rank last made progress on them (a piece
    /// of results, errors or a slice's end came; or it got work while it had none).
    std::size_t open_slices = 0;
    Clock::time_point progress_at{};
};

}  // namespace
}  // namespace cluster_detail

using namespace cluster_detail;

struct Cluster::Impl {
    Engine& engine;
    ClusterConfig config;
    std::vector<std::shared_ptr<const ClusterOp>> ops;
    std::shared_ptr<Inbox> inbox = std::make_shared<Inbox>();
    std::thread thread;

    // Set once by the transport before the constructor returns.
    int rank = 0, size = 1, tag_ub = 32767;
    bool initialised_mpi = false;
    MPI_Comm comm = MPI_COMM_NULL;

    std::atomic<bool> started{false};
    std::atomic<bool> closing{false};
    /// Posting into the mailbox (submit, gather, start) holds it shared; shutdown sets
    /// `closing` under it exclusively, so every message posted before is in the mailbox
    /// when the shutdown's is, and none is posted after (those complete with ShutDown).
    std::shared_mutex post_gate;
    std::atomic<bool> stopped{false};
    std::mutex shutdown_mutex;

    // Published for the program's threads.
    mutable std::mutex published_mutex;
    std::vector<RankInfo> published_ranks;
    std::map<std::string, std::pair<std::error_code, std::string>, std::less<>> op_checks;

    // ---- transport thread only ----
    std::vector<MPI_Request> requests;
    std::vector<Pending> pending;
    std::vector<int> indices;  // MPI_Testsome's scratch, kept between polls
    std::vector<MPI_Status> statuses, by_index;
    /// This rank's gather parts still being sent (their futures complete when the sends do).
    std::map<std::uint64_t, std::shared_ptr<detail::GatherSubmission>> outgoing;
    std::uint64_t next_request = 1;
    std::uint64_t send_counter = 0, recv_counter = 0;
    Ctrl ctrl_in{};
    std::vector<RankState> peers;
    std::unordered_map<std::uint64_t, std::shared_ptr<LeaderBatch>> batches;
    std::unordered_map<std::uint64_t, std::shared_ptr<Slice>> slices;
    /// The leader's own slices whose engine batch has not completed (abandoned ones too).
    std::unordered_map<std::uint64_t, std::shared_ptr<Slice>> local_slices;
    std::unordered_map<std::uint64_t, std::shared_ptr<Work>> works;  // by the leader's slice id
    std::map<std::uint64_t, Gather> gathers;
    std::uint64_t next_batch = 1, next_slice = 1, next_gather = 0;
    std::vector<std::pair<Clock::time_point, std::function<void()>>> timers;
    Clock::time_point next_heartbeat{}, next_sweep{};
    std::shared_ptr<std::promise<void>> start_waiter;
    Clock::time_point start_deadline{};
    std::shared_ptr<std::promise<void>> shutdown_waiter;
    /// shutdown() was called here. A rank that is not the leader goes on serving the
    /// leader's slices until the leader says goodbye (or fails): only then is it `leaving`.
    bool shutting_down = false;
    bool leaving = false;
    Clock::time_point last_housekeeping{};
    bool bye_sent = false;
    Clock::time_point shutdown_deadline{};
    long slices_received = 0;
    /// Set (on this thread) when the Cluster was destroyed from a continuation running here.
    bool detached = false;

    Impl(Engine& e, ClusterConfig c) : engine{e}, config{std::move(c)} {}

    // ---- requests ------------------------------------------------------------------------

    std::uint64_t add_request(MPI_Request r, int peer, bool send, std::function<void(const MPI_Status&)> done,
                              std::shared_ptr<void> keep) {
        Pending p;
        p.id = next_request++;
        p.peer = peer;
        p.send = send;
        p.done = std::move(done);
        p.keep = std::move(keep);
        requests.push_back(r);
        pending.push_back(std::move(p));
        return pending.back().id;
    }

    /// Isend of `bytes` at `data` (kept alive by `keep`).
    std::uint64_t send_bytes(const void* data, std::size_t bytes, int peer, int tag, std::shared_ptr<void> keep,
                             std::function<void(const MPI_Status&)> done = {}) {
        MPI_Request r;
        MPI_Isend(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm, &r);
        return add_request(r, peer, true, std::move(done), std::move(keep));
    }

    std::uint64_t recv_bytes(void* data, std::size_t bytes, int peer, int tag, std::shared_ptr<void> keep,
                             std::function<void(const MPI_Status&)> done) {
        MPI_Request r;
        MPI_Irecv(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm, &r);
        return add_request(r, peer, false, std::move(done), std::move(keep));
    }

    /// A receive into a gather part's `data` (which it holds).
    void recv_gather_data(void* into, std::size_t bytes, int peer, int tag, std::shared_ptr<GatherData> data,
                          std::function<void(const MPI_Status&)> done) {
        recv_bytes(into, bytes, peer, tag, std::move(data), std::move(done));
        pending.back().into_gather = true;
        if (config.test_hooks.gather_receives_posted) config.test_hooks.gather_receives_posted->fetch_add(1);
    }

    void send_ctrl(int peer, const Ctrl& c) {
        auto held = std::make_shared<Ctrl>(c);
        const Ctrl* p = held.get();
        send_bytes(p, sizeof(Ctrl), peer, ctrl_tag, std::move(held));
    }

    /// A receive whose data nobody wants any more (the peer may still send it): into a buffer
    /// of its own, dropped when it completes.
    void discard_receive(int peer, int tag, std::size_t bytes) {
        auto buffer = std::shared_ptr<std::byte[]>(new std::byte[std::max<std::size_t>(bytes, 1)]);
        std::byte* p = buffer.get();
        recv_bytes(p, bytes, peer, tag, std::move(buffer), [](const MPI_Status&) {});
    }

    /// Cancels receive `id`; `after(cancelled)` runs once MPI is done with it (cancelled, or
    /// completed after all: its data then landed).
    void retire_receive(std::uint64_t id, std::function<void(bool cancelled, const MPI_Status&)> after) {
        for (std::size_t i = 0; i < pending.size(); ++i) {
            if (pending[i].id != id) continue;
            MPI_Cancel(&requests[i]);
            pending[i].done = [after = std::move(after)](const MPI_Status& st) {
                int cancelled = 0;
                MPI_Test_cancelled(&st, &cancelled);
                after(cancelled != 0, st);
            };
            return;
        }
        // No longer pending: it completed (in this progress pass, its completion not run yet),
        // so its data landed. Without this, `after` never ran and the batch never completed.
        MPI_Status none{};
        after(false, none);
    }

    /// Tests every request; runs the completions. True if any completed.
    bool progress() {
        if (requests.empty()) return false;
        indices.resize(requests.size());
        statuses.resize(requests.size());
        int count = 0;
        MPI_Testsome(static_cast<int>(requests.size()), requests.data(), &count, indices.data(), statuses.data());
        if (count == MPI_UNDEFINED || count == 0) return false;
        // Take the completed ones out first (their completions may post new requests).
        std::vector<std::pair<Pending, MPI_Status>> done;
        done.reserve(static_cast<std::size_t>(count));
        std::vector<int> order(indices.begin(), indices.begin() + count);
        std::sort(order.begin(), order.end(), std::greater<>{});
        by_index.resize(requests.size());
        for (int k = 0; k < count; ++k) by_index[static_cast<std::size_t>(indices[k])] = statuses[k];
        for (int i : order) {
            const auto u = static_cast<std::size_t>(i);
            done.emplace_back(std::move(pending[u]), by_index[u]);
            pending[u] = std::move(pending.back());
            pending.pop_back();
            requests[u] = requests.back();
            requests.pop_back();
        }
        for (auto& [p, st] : done) {
            if (!p.send && p.peer < 0 && st.MPI_SOURCE >= 0 && st.MPI_SOURCE < size) heard(st.MPI_SOURCE);
            if (!p.send && p.peer >= 0) heard(p.peer);
            if (p.done) p.done(st);
        }
        return true;
    }

    void heard(int r) {
        if (r >= 0 && r < size) peers[static_cast<std::size_t>(r)].last_heard = Clock::now();
    }

    // ---- the loop ------------------------------------------------------------------------

    void run(const std::shared_ptr<std::promise<void>>& ready_promise) {
        std::promise<void>& ready = *ready_promise;
        try {
            init_mpi();
        } catch (...) {
            ready.set_exception(std::current_exception());
            return;
        }
        ready.set_value();
        post_ctrl_receive();
        const auto now = Clock::now();
        for (auto& p : peers) p.last_heard = now;
        next_heartbeat = now;
        std::chrono::nanoseconds backoff{0};
        for (;;) {
            bool busy = drain_mailbox();
            for (int i = 0; i < 64 && progress(); ++i) busy = true;
            busy |= run_timers();
            housekeeping();
            if (shutting_down) maybe_leave();
            if (leaving && try_finish()) break;
            if (busy) {
                backoff = std::chrono::nanoseconds{0};
                continue;
            }
            backoff = std::min<std::chrono::nanoseconds>(std::max<std::chrono::nanoseconds>(backoff * 2, std::chrono::microseconds{1}),
                                                         config.max_poll_interval);
            auto until = Clock::now() + backoff;
            for (const auto& t : timers) until = std::min(until, t.first);
            inbox->parker.wait_until([this] { return inbox->queue.size_approx() != 0; }, until, actors::SpinPolicy{std::chrono::nanoseconds{0}});
        }
        finish_mpi();
        if (detached) {
            // The cluster was destroyed from one of its own continuations, on this thread:
            // what is left in the mailbox completes here, and this thread frees the state.
            drain_after_stop(*inbox);
            delete this;
        }
    }

    void init_mpi() {
        int inited = 0;
        MPI_Initialized(&inited);
        int provided = 0;
        if (!inited) {
            if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
                throw Error{make_error_code(ClusterError::MpiUnavailable), "MPI_Init_thread"};
            }
            initialised_mpi = true;
        } else {
            MPI_Query_thread(&provided);
        }
        if (provided < MPI_THREAD_SERIALIZED) {
            if (initialised_mpi) MPI_Finalize();
            throw Error{make_error_code(ClusterError::MpiUnavailable),
                        "MPI gives thread level " + std::to_string(provided) + " (MPI_THREAD_SERIALIZED needed)"};
        }
        // The cluster's own communicator, so its tags never meet the program's messages. Its
        // error handler stays MPI_ERRORS_ARE_FATAL: an MPI call that fails (not a peer that
        // goes quiet: that is the deadline's business) ends the job, as without a fault-
        // tolerant MPI there is nothing sound to go on with.
        MPI_Comm_dup(MPI_COMM_WORLD, &comm);
        MPI_Comm_rank(comm, &rank);
        MPI_Comm_size(comm, &size);
        void* attr = nullptr;
        int flag = 0;
        MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &attr, &flag);
        if (flag && attr) tag_ub = *static_cast<int*>(attr);
        peers.resize(static_cast<std::size_t>(size));
    }

    void post_ctrl_receive() {
        recv_bytes(&ctrl_in, sizeof(Ctrl), MPI_ANY_SOURCE, ctrl_tag, nullptr, [this](const MPI_Status& st) {
            const Ctrl c = ctrl_in;
            post_ctrl_receive();
            on_ctrl(st.MPI_SOURCE, c);
        });
    }

    bool drain_mailbox() {
        Message batch[32];
        const std::size_t n = inbox->queue.try_dequeue_bulk(batch, 32);
        for (std::size_t i = 0; i < n; ++i) handle(std::move(batch[i]));
        return n != 0;
    }

    bool run_timers() {
        if (timers.empty()) return false;
        const auto now = Clock::now();
        bool any = false;
        for (std::size_t i = 0; i < timers.size();) {
            if (timers[i].first <= now) {
                auto fn = std::move(timers[i].second);
                timers.erase(timers.begin() + static_cast<std::ptrdiff_t>(i));
                fn();
                any = true;
            } else {
                ++i;
            }
        }
        return any;
    }

    void handle(Message&& m) {
        std::visit(
            [this](auto&& msg) {
                using M = std::decay_t<decltype(msg)>;
                if constexpr (std::is_same_v<M, StartCmd>) {
                    on_start(msg.done);
                } else if constexpr (std::is_same_v<M, SubmitCmd>) {
                    on_submit(std::move(msg.s));
                } else if constexpr (std::is_same_v<M, GatherCmd>) {
                    on_gather(std::move(msg.g));
                } else if constexpr (std::is_same_v<M, LocalDone>) {
                    on_local_done(std::move(msg));
                } else if constexpr (std::is_same_v<M, PieceDone>) {
                    on_piece_done(std::move(msg));
                } else if constexpr (std::is_same_v<M, ShutdownCmd>) {
                    on_shutdown(msg.done);
                }
            },
            std::move(m));
    }

    void housekeeping() {
        const auto now = Clock::now();
        if (!bye_sent && now >= next_heartbeat) {
            next_heartbeat = now + config.heartbeat;
            Ctrl c;
            c.kind = Kind::Heartbeat;
            // To every rank that has not said goodbye, a failed one included (it may be alive
            // and waiting to hear from us); at most one heartbeat in flight per rank, so one
            // that is gone for good does not pile up requests.
            for (int r = 0; r < size; ++r) {
                RankState& p = peers[static_cast<std::size_t>(r)];
                if (r == rank || p.bye || p.heartbeat_out) continue;
                p.heartbeat_out = true;
                auto held = std::make_shared<Ctrl>(c);
                const Ctrl* data = held.get();
                send_bytes(data, sizeof(Ctrl), r, ctrl_tag, std::move(held),
                           [this, r](const MPI_Status&) { peers[static_cast<std::size_t>(r)].heartbeat_out = false; });
            }
        }
        if (now < next_sweep) return;
        next_sweep = now + std::min<std::chrono::milliseconds>(config.heartbeat, std::chrono::milliseconds{10});
        // Deadlines: a rank silent for longer than the deadline is failed (only once the
        // cluster has started: before, the leader's start() has its own timeout).
        // This thread itself was held up (a stalled rank, a machine that stopped it): its
        // silence says nothing about the others, so it restarts their clocks.
        if (now - last_housekeeping > config.deadline / 2) {
            for (auto& p : peers) p.last_heard = p.progress_at = now;
        }
        last_housekeeping = now;
        if (started.load(std::memory_order_relaxed) && !leaving) {
            for (int r = 0; r < size; ++r) {
                RankState& p = peers[static_cast<std::size_t>(r)];
                if (r != rank && p.up && now - p.last_heard > config.deadline) fail_rank(r);
            }
            // A rank that answers but makes no progress on its slices (its engine hangs) past
            // the deadline and twice the time its open slices were predicted to take. Per
            // rank: a busy engine keeps delivering pieces of its earlier slices.
            std::vector<double> allowance(static_cast<std::size_t>(size), -1);
            for (const auto& [id, s] : slices) {
                if (s->rank == rank || s->failed || s->done_seen) continue;
                double& a = allowance[static_cast<std::size_t>(s->rank)];
                a = std::max(a, s->allowance_ns);
            }
            const double deadline_ns = std::chrono::duration<double, std::nano>(config.deadline).count();
            for (int r = 0; r < size; ++r) {
                const double a = allowance[static_cast<std::size_t>(r)];
                const RankState& p = peers[static_cast<std::size_t>(r)];
                if (a >= 0 && p.up && std::chrono::duration<double, std::nano>(now - p.progress_at).count() > deadline_ns + a) {
                    fail_rank(r);
                }
            }
        }
        // Cancelled batches.
        std::vector<std::shared_ptr<LeaderBatch>> cancelled;
        for (auto& [id, b] : batches) {
            if (!b->failing && b->promise->cancel_requested()) cancelled.push_back(b);
        }
        for (auto& b : cancelled) fail_batch(b, make_error_code(ExecError::Cancelled));
        // Pieces waiting for engine room.
        for (auto& [id, w] : works) submit_ready(*w);
        // The leader's start.
        if (start_waiter && (all_hellos() || now >= start_deadline)) finish_start();
    }

    // ---- startup -------------------------------------------------------------------------

    void on_start(std::shared_ptr<std::promise<void>> done) {
        for (auto& p : peers) p.models.resize(ops.size());
        // The op table, to the leader (the leader reads its own directly).
        if (rank != config.leader) {
            auto table = std::make_shared<std::vector<std::byte>>(encode_ops());
            Ctrl c;
            c.kind = Kind::Hello;
            c.tasks = ops.size();
            c.bytes = table->size();
            c.tag = send_counter++;
            c.cpu_tasks = engine.cpu_workers();
            c.gpu_tasks = engine.gpu_count();
            c.aux = static_cast<std::uint64_t>(local_rank());
            send_ctrl(config.leader, c);
            const std::byte* p = table->data();
            const std::size_t bytes = table->size();
            send_bytes(p, bytes, config.leader, data_tag(c.tag, 0, tag_ub), std::move(table));
            started.store(true, std::memory_order_relaxed);
            done->set_value();
            return;
        }
        RankState& me = peers[static_cast<std::size_t>(rank)];
        me.hello = true;
        me.cpu_workers = engine.cpu_workers();
        me.gpus = engine.gpu_count();
        me.local_rank = local_rank();
        for (const auto& op : ops) me.ops.push_back({op->name(), op->type_names(), op->in_size(), op->out_size()});
        start_waiter = std::move(done);
        start_deadline = Clock::now() + config.startup_timeout;
        if (all_hellos()) finish_start();
    }

    std::vector<std::byte> encode_ops() const {
        std::vector<std::byte> out;
        auto put = [&out](const void* p, std::size_t n) {
            const auto* b = static_cast<const std::byte*>(p);
            out.insert(out.end(), b, b + n);
        };
        for (const auto& op : ops) {
            const std::string types = op->type_names();
            const std::uint64_t sizes[4] = {op->name().size(), types.size(), op->in_size(), op->out_size()};
            put(sizes, sizeof sizes);
            put(op->name().data(), op->name().size());
            put(types.data(), types.size());
        }
        return out;
    }

    static std::vector<RankState::OpEntry> decode_ops(const std::vector<std::byte>& in, std::size_t count) {
        std::vector<RankState::OpEntry> ops;
        std::size_t at = 0;
        for (std::size_t i = 0; i < count; ++i) {
            std::uint64_t sizes[4];
            if (at + sizeof sizes > in.size()) break;
            std::memcpy(sizes, in.data() + at, sizeof sizes);
            at += sizeof sizes;
            if (sizes[0] + sizes[1] > in.size() - at) break;
            RankState::OpEntry e;
            e.name.assign(reinterpret_cast<const char*>(in.data() + at), sizes[0]);
            at += sizes[0];
            e.types.assign(reinterpret_cast<const char*>(in.data() + at), sizes[1]);
            at += sizes[1];
            e.in_size = sizes[2];
            e.out_size = sizes[3];
            ops.push_back(std::move(e));
        }
        return ops;
    }

    bool all_hellos() const {
        for (const auto& p : peers) {
            if (p.up && !p.hello) return false;
        }
        return true;
    }

    void finish_start() {
        const auto now = Clock::now();
        for (int r = 0; r < size; ++r) {
            RankState& p = peers[static_cast<std::size_t>(r)];
            if (!p.hello) p.up = false;  // not heard from in time
            p.last_heard = now;
        }
        {
            std::lock_guard lock{published_mutex};
            op_checks.clear();
            for (std::size_t i = 0; i < ops.size(); ++i) op_checks[ops[i]->name()] = check_op(*ops[i], i);
        }
        publish();
        started.store(true, std::memory_order_release);
        auto w = std::exchange(start_waiter, nullptr);
        w->set_value();
    }

    /// `index`: the op's place in the leader's table. Slices name an op by that place, so it
    /// must be the op's place on every rank too (ops are added in the same order everywhere).
    std::pair<std::error_code, std::string> check_op(const ClusterOp& op, std::size_t index) const {
        std::error_code ec;
        std::string text;
        const std::string types = op.type_names();
        for (int r = 0; r < size; ++r) {
            const RankState& p = peers[static_cast<std::size_t>(r)];
            if (!p.up) continue;
            auto it = std::find_if(p.ops.begin(), p.ops.end(), [&](const auto& e) { return e.name == op.name(); });
            if (it == p.ops.end()) {
                if (!ec) ec = make_error_code(ClusterError::OpNotRegistered);
                text += "rank " + std::to_string(r) + ": op '" + op.name() + "' not registered; ";
            } else if (it->in_size != op.in_size() || it->out_size != op.out_size() || it->types != types) {
                if (!ec) ec = make_error_code(ClusterError::OpTypeMismatch);
                text += "rank " + std::to_string(r) + ": op '" + op.name() + "' has types " + it->types + " (" +
                        std::to_string(it->in_size) + " -> " + std::to_string(it->out_size) + " bytes), leader " +
                        types + " (" + std::to_string(op.in_size()) + " -> " + std::to_string(op.out_size()) +
                        " bytes); ";
            } else if (static_cast<std::size_t>(it - p.ops.begin()) != index) {
                // Same name and types at another place: a slice would run another op there.
                if (!ec) ec = make_error_code(ClusterError::OpTypeMismatch);
                text += "rank " + std::to_string(r) + ": op '" + op.name() + "' was added as op #" +
                        std::to_string(it - p.ops.begin()) + ", on the leader as op #" + std::to_string(index) +
                        " (add the ops in the same order on every rank); ";
            }
        }
        return {ec, text};
    }

    void publish() {
        std::vector<RankInfo> info;
        for (int r = 0; r < size; ++r) {
            const RankState& p = peers[static_cast<std::size_t>(r)];
            RankInfo i;
            i.rank = r;
            i.up = p.up;
            i.local_rank = p.local_rank;
            i.cpu_workers = p.cpu_workers;
            i.gpus = p.gpus;
            i.link_fixed_ns = p.link.fixed_ns();
            i.link_ns_per_byte = p.link.per_byte_ns();
            for (std::size_t o = 0; o < ops.size() && o < p.models.size(); ++o) {
                const LinearCost& m = p.models[o];
                CostModelInfo c;
                c.device = ops[o]->name() + " on rank " + std::to_string(r);
                c.fixed_ns = m.fixed_ns();
                c.per_task_ns = m.per_task_ns();
                c.samples = m.samples();
                c.outliers = m.outliers();
                c.calibrated = m.calibrated(config.model);
                i.ops.push_back(std::move(c));
            }
            info.push_back(std::move(i));
        }
        std::lock_guard lock{published_mutex};
        published_ranks = std::move(info);
    }

    // ---- control messages ----------------------------------------------------------------

    void on_ctrl(int from, const Ctrl& c) {
        if (from < 0 || from >= size) return;
        RankState& p = peers[static_cast<std::size_t>(from)];
        switch (c.kind) {
            case Kind::Hello: {
                auto table = std::make_shared<std::vector<std::byte>>(static_cast<std::size_t>(c.bytes));
                std::byte* d = table->data();
                recv_bytes(d, table->size(), from, data_tag(c.tag, 0, tag_ub), table,
                           [this, from, c, table](const MPI_Status&) {
                               RankState& q = peers[static_cast<std::size_t>(from)];
                               q.ops = decode_ops(*table, static_cast<std::size_t>(c.tasks));
                               q.cpu_workers = c.cpu_tasks;
                               q.gpus = c.gpu_tasks;
                               q.local_rank = static_cast<int>(c.aux);
                               // A rank that starts after the leader gave up on it stays out.
                               if (!started.load(std::memory_order_relaxed) || rank != config.leader) q.hello = true;
                           });
                break;
            }
            case Kind::Slice: on_slice(from, c); break;
            case Kind::TaskErrors: on_task_errors(from, c); break;
            case Kind::SliceDone: on_slice_done(from, c); break;
            case Kind::GatherPart: on_gather_part(from, c); break;
            case Kind::Bye:
                p.bye = true;
                // A rank other than the leader leaving before we do will send nothing more:
                // what it still owed us runs elsewhere. (The leader's goodbye is the normal end.)
                if (from != config.leader && p.up && !leaving) fail_rank(from);
                break;
            case Kind::Heartbeat: break;
        }
    }

    // ---- leader: submit and split --------------------------------------------------------

    void on_submit(detail::LeaderSubmission s) {
        auto b = std::make_shared<LeaderBatch>();
        b->id = next_batch++;
        b->op = s.op_index;
        b->in_size = ops[s.op_index]->in_size();
        b->out_size = ops[s.op_index]->out_size();
        b->in = static_cast<const std::byte*>(s.in);
        b->tasks = s.tasks;
        b->keep = std::move(s.keep);
        b->in_memory = s.in_memory;
        b->promise = std::move(s.promise);
        b->out = static_cast<std::byte*>(b->promise->outputs());
        b->out_owner = std::move(s.out);
        b->out_memory = s.out_memory;
        if (leaving) {
            b->promise->set_error(make_error_code(ExecError::ShutDown), {});
            return;
        }
        batches.emplace(b->id, b);
        dispatch(b, 0, b->tasks);
    }

    /// Splits tasks [first, first + n) of `b` across the ranks that are up.
    void dispatch(const std::shared_ptr<LeaderBatch>& b, std::size_t first, std::size_t n) {
        std::vector<int> ranks_up;
        std::vector<Lane> lanes;
        const double bytes_per_task = static_cast<double>(b->in_size + b->out_size);
        // The leader first: it takes the remainder of an equal split and every batch too
        // small to be worth sending.
        auto add_lane = [&](int r) {
            RankState& p = peers[static_cast<std::size_t>(r)];
            Lane lane;
            lane.cost = p.models[b->op];
            lane.calibrated = lane.cost.calibrated(config.model);
            lane.link_fixed_ns = r == rank ? 0 : p.link.fixed_ns();
            lane.link_ns_per_byte = r == rank ? 0 : p.link.per_byte_ns();
            lane.bytes_per_task = bytes_per_task;
            lane.backlog_ns = p.backlog_ns;
            lanes.push_back(lane);
            ranks_up.push_back(r);
        };
        add_lane(rank);
        for (int r = 0; r < size; ++r) {
            if (r != rank && peers[static_cast<std::size_t>(r)].up) add_lane(r);
        }
        bool explored = false;
        const std::vector<std::size_t> shares = split(lanes, n, explored);
        std::size_t at = first;
        // Remote slices first, so their transfers are under way while the leader copies its own.
        std::vector<std::pair<int, std::pair<std::size_t, std::size_t>>> plan;
        for (std::size_t i = 0; i < shares.size(); ++i) {
            if (shares[i] == 0) continue;
            plan.push_back({ranks_up[i], {at, shares[i]}});
            at += shares[i];
        }
        for (int pass = 0; pass < 2; ++pass) {
            for (std::size_t i = 0; i < plan.size(); ++i) {
                const bool local = plan[i].first == rank;
                if (local != (pass == 1)) continue;
                const std::size_t lane = static_cast<std::size_t>(
                    std::find(ranks_up.begin(), ranks_up.end(), plan[i].first) - ranks_up.begin());
                // The backlog a slice adds to its rank: its busy time, not the link's latency.
                const double predicted = lanes[lane].busy(static_cast<double>(plan[i].second.second));
                start_slice(b, plan[i].first, plan[i].second.first, plan[i].second.second, predicted);
            }
        }
    }

    RankStats& rank_stats(LeaderBatch& b, int r) {
        for (auto& s : b.ranks) {
            if (s.rank == r) return s;
        }
        RankStats s;
        s.rank = r;
        auto it = std::find_if(b.ranks.begin(), b.ranks.end(), [r](const RankStats& x) { return x.rank > r; });
        return *b.ranks.insert(it, s);
    }

    void start_slice(const std::shared_ptr<LeaderBatch>& b, int r, std::size_t first, std::size_t n, double predicted) {
        auto s = std::make_shared<Slice>();
        s->id = next_slice++;
        s->batch = b;
        s->rank = r;
        s->first = first;
        s->tasks = n;
        s->sent = Clock::now();
        s->predicted_ns = predicted;
        slices.emplace(s->id, s);
        ++b->slices_open;
        RankState& target = peers[static_cast<std::size_t>(r)];
        if (r != rank) {
            // Until the rank's line for the op is measured, the leader's own time for the
            // slice stands in; with neither, three deadlines.
            double expect = predicted > 0 ? predicted : peers[static_cast<std::size_t>(rank)].models[b->op].predict(static_cast<double>(n));
            if (!(expect > 0)) expect = 1.5 * std::chrono::duration<double, std::nano>(config.deadline).count();
            s->allowance_ns = 2 * (target.backlog_ns + expect);
            if (target.open_slices++ == 0) target.progress_at = s->sent;  // idle until now
        }
        target.backlog_ns += predicted;
        RankStats& st = rank_stats(*b, r);
        ++st.slices;
        if (r == rank) {
            run_local_slice(s);
            return;
        }
        const std::size_t biggest = std::max(b->in_size, b->out_size);
        s->piece_tasks = std::max<std::size_t>(1, config.piece_bytes / std::max<std::size_t>(biggest, 1));
        s->pieces = pieces_of(n, s->piece_tasks);
        st.pieces += static_cast<std::uint32_t>(s->pieces);
        Ctrl c;
        c.kind = Kind::Slice;
        c.id = s->id;
        c.op = b->op;
        c.first = first;
        c.tasks = n;
        c.piece_tasks = s->piece_tasks;
        c.pieces = s->pieces;
        c.tag = send_counter;
        send_counter += s->pieces;
        c.tag2 = recv_counter;
        recv_counter += s->pieces;
        s->result_tag = c.tag2;
        // The result receives first: the rank may answer before our sends are tested again.
        s->result_requests.assign(s->pieces, 0);
        for (std::size_t k = 0; k < s->pieces; ++k) {
            const std::size_t t0 = k * s->piece_tasks, t = std::min(s->piece_tasks, n - t0);
            std::byte* dst = b->out + (first + t0) * b->out_size;
            s->result_requests[k] = recv_bytes(dst, t * b->out_size, r, data_tag(c.tag2 + k, 1, tag_ub), b->out_owner,
                                               [this, s, k, t](const MPI_Status&) {
                                                   s->result_requests[k] = 0;
                                                   peers[static_cast<std::size_t>(s->rank)].progress_at = Clock::now();
                                                   rank_stats(*s->batch, s->rank).bytes_received += t * s->batch->out_size;
                                                   --s->receives_left;
                                                   maybe_slice_done(s);
                                               });
            ++s->receives_left;
        }
        send_ctrl(r, c);
        for (std::size_t k = 0; k < s->pieces; ++k) {
            const std::size_t t0 = k * s->piece_tasks, t = std::min(s->piece_tasks, n - t0);
            const std::byte* src = b->in + (first + t0) * b->in_size;
            // The batch's payloads stay alive while the send is out (a failed rank's included).
            send_bytes(src, t * b->in_size, r, data_tag(c.tag + k, 0, tag_ub), b->keep);
        }
        st.bytes_sent += n * b->in_size;
    }

    void run_local_slice(const std::shared_ptr<Slice>& s) {
        const std::shared_ptr<LeaderBatch>& b = s->batch;
        const auto started_at = Clock::now();
        std::function<void(PieceOutcome&&)> done = [inbox = inbox, id = s->id, started_at](PieceOutcome&& o) {
            const auto ended = Clock::now();
            o.keep.reset();  // the outputs are in the batch's column already
            o.outputs = nullptr;
            try {
                inbox->post(LocalDone{id, std::move(o), started_at, ended});
            } catch (...) {
                // Out of memory for the mailbox: the batch then waits for shutdown.
            }
        };
        // The slice's payloads and outputs in place: the engine copies neither.
        if (!ops[b->op]->try_run(engine, b->in + s->first * b->in_size, s->tasks, b->keep, b->in_memory,
                                 b->out + s->first * b->out_size, b->out_owner, b->out_memory, done, &s->engine_cancel)) {
            // The engine is full: run it when the transport next looks (a timer, not a wait).
            timers.emplace_back(Clock::now() + std::chrono::microseconds{200}, [this, s] {
                if (!s->failed && !s->batch->failing) run_local_slice(s);
            });
            return;
        }
        s->in_engine = true;
        local_slices.emplace(s->id, s);
    }

    void on_local_done(LocalDone&& d) {
        if (auto running = local_slices.find(d.slice); running != local_slices.end()) {
            auto s = running->second;
            local_slices.erase(running);
            s->in_engine = false;
            s->engine_cancel = CancelHandle{};  // it holds the engine's job
            if (s->failed) {
                // Abandoned (its batch failed) while its engine batch wrote the outputs: the
                // batch may complete now.
                if (auto after = std::exchange(s->after_engine, nullptr)) after();
                return;
            }
        }
        auto it = slices.find(d.slice);
        if (it == slices.end()) return;
        auto s = it->second;
        const auto took = d.ended - d.started;
        auto complete = [this, s, took, o = std::move(d.outcome)]() mutable {
            Ctrl c;
            c.kind = Kind::SliceDone;
            c.id = s->id;
            c.time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(took).count();
            c.time_ns = static_cast<std::int64_t>(static_cast<double>(c.time_ns) * config.slowdown);
            c.cpu_tasks = o.cpu_tasks;
            c.gpu_tasks = o.gpu_tasks;
            c.error = o.error ? (o.error.category() == error_category() ? o.error.value() : static_cast<int>(ExecError::DeviceFailed)) : 0;
            if (s->failed) return;  // its batch failed (or shut down) meanwhile
            if (!o.error) {
                for (auto& [index, message] : o.task_errors) s->batch->promise->task_error(s->first + index, std::move(message));
            }
            s->done_seen = true;
            s->done = c;
            maybe_slice_done(s);
        };
        if (config.slowdown > 1) {
            const auto wait = std::chrono::duration_cast<Clock::duration>(took * (config.slowdown - 1));
            timers.emplace_back(Clock::now() + wait, std::move(complete));
        } else {
            complete();
        }
    }

    void on_task_errors(int from, const Ctrl& c) {
        auto blob = std::make_shared<std::vector<std::byte>>(static_cast<std::size_t>(c.bytes));
        auto it = slices.find(c.id);
        std::shared_ptr<Slice> s = it == slices.end() ? nullptr : it->second;
        if (!s || s->failed || s->rank != from) {
            discard_receive(from, data_tag(c.tag, 0, tag_ub), blob->size());
            return;
        }
        ++s->receives_left;
        ++s->error_blobs_pending;
        std::byte* d = blob->data();
        recv_bytes(d, blob->size(), from, data_tag(c.tag, 0, tag_ub), blob, [this, s, blob, c](const MPI_Status&) {
            --s->receives_left;
            --s->error_blobs_pending;
            peers[static_cast<std::size_t>(s->rank)].progress_at = Clock::now();
            // Kept even once the slice failed: whether its arrived pieces stand is decided
            // later, and they need their errors then.
            const auto at = static_cast<std::size_t>(c.first);
            for_each_error(*blob, [&](std::size_t index, std::string message) {
                if (at + index < s->tasks) {
                    s->task_errors.emplace_back(at + index, "rank " + std::to_string(s->rank) + ": " + message);
                }
            });
            maybe_slice_done(s);
        });
    }

    void on_slice_done(int from, const Ctrl& c) {
        auto it = slices.find(c.id);
        if (it == slices.end() || it->second->rank != from || it->second->failed) return;  // late, after a failure
        peers[static_cast<std::size_t>(from)].progress_at = Clock::now();
        it->second->done_seen = true;
        it->second->done = c;
        maybe_slice_done(it->second);
    }

    // By value (here and below): erasing it from `slices` must not free what the caller holds.
    void maybe_slice_done(std::shared_ptr<Slice> s) {
        if (s->failed || !s->done_seen || s->receives_left != 0) return;
        slices.erase(s->id);
        if (s->rank != rank) --peers[static_cast<std::size_t>(s->rank)].open_slices;
        LeaderBatch& b = *s->batch;
        RankState& p = peers[static_cast<std::size_t>(s->rank)];
        p.backlog_ns = std::max(0.0, p.backlog_ns - s->predicted_ns);
        const auto round_trip = Clock::now() - s->sent;
        RankStats& st = rank_stats(b, s->rank);
        if (s->done.error != 0) {
            // Its engine failed the slice: run it again on the leader.
            --b.slices_open;
            if (!b.failing) {
                if (s->rank == rank) {
                    fail_batch(s->batch, static_cast<ExecError>(s->done.error));
                } else {
                    st.failed = true;
                    start_slice(s->batch, rank, s->first, s->tasks, 0);
                }
            }
            maybe_batch_done(s->batch);
            return;
        }
        for (auto& [index, message] : s->task_errors) b.promise->task_error(s->first + index, std::move(message));
        st.tasks += s->tasks;
        st.cpu_tasks += s->done.cpu_tasks;
        st.gpu_tasks += s->done.gpu_tasks;
        st.time += std::chrono::nanoseconds{s->done.time_ns};
        st.round_trip += std::chrono::duration_cast<std::chrono::nanoseconds>(round_trip);
        b.cpu_tasks += s->done.cpu_tasks;
        b.gpu_tasks += s->done.gpu_tasks;
        // Learn: the rank's own time for the op, and what the interconnect added.
        p.models[b.op].add(static_cast<double>(s->tasks), static_cast<double>(s->done.time_ns), config.model);
        if (s->rank != rank) {
            const double bytes = static_cast<double>(s->tasks * (b.in_size + b.out_size));
            const double extra = std::max(0.0, static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(round_trip).count()) -
                                                   static_cast<double>(s->done.time_ns));
            p.link.add(bytes, extra, config.model.forgetting);
        }
        publish();
        --b.slices_open;
        maybe_batch_done(s->batch);
    }

    void maybe_batch_done(std::shared_ptr<LeaderBatch> b) {
        if (b->slices_open != 0 || b->retiring != 0) return;
        if (batches.erase(b->id) == 0) return;
        ExecStats stats;
        stats.cpu_tasks = b->cpu_tasks;
        stats.gpu_tasks = b->gpu_tasks;
        stats.device = stats.gpu_tasks == 0 ? DeviceKind::Cpu : (stats.cpu_tasks == 0 ? DeviceKind::Gpu : DeviceKind::Hybrid);
        stats.ranks = std::move(b->ranks);
        if (b->failing) {
            b->promise->set_error(b->error, std::move(stats));
        } else {
            b->promise->set_value(std::move(stats));
        }
        b->promise.reset();
        b->keep.reset();
    }

    /// Completes `b` with `why` once the receives into its outputs are cancelled.
    void fail_batch(std::shared_ptr<LeaderBatch> b, std::error_code why) {
        if (b->failing) return;
        b->failing = true;
        b->error = why;
        std::vector<std::shared_ptr<Slice>> mine;
        for (auto& [id, s] : slices) {
            if (s->batch == b) mine.push_back(s);
        }
        for (auto& s : mine) {
            ++b->retiring;
            --b->slices_open;
            abandon_slice(s, [this, b] {
                --b->retiring;
                maybe_batch_done(b);
            });
        }
        maybe_batch_done(b);
    }

    /// Stops waiting for slice `s`: cancels its result receives (re-posting them into
    /// buffers of their own, as its rank may still send them); `after` runs once none can
    /// write into the batch's outputs any more.
    void abandon_slice(std::shared_ptr<Slice> s, std::function<void()> after) {
        s->failed = true;
        if (slices.erase(s->id) != 0 && s->rank != rank) --peers[static_cast<std::size_t>(s->rank)].open_slices;
        RankState& p = peers[static_cast<std::size_t>(s->rank)];
        p.backlog_ns = std::max(0.0, p.backlog_ns - s->predicted_ns);
        if (s->in_engine) {
            // The leader's own slice: its engine batch writes the outputs until it completes
            // (cancelled, it completes soon: running chunks finish, the rest is skipped).
            s->after_engine = std::move(after);
            s->engine_cancel.cancel();
            return;
        }
        auto left = std::make_shared<std::size_t>(1);
        auto finish_one = [left, after = std::move(after)]() {
            if (--*left == 0) after();
        };
        for (std::size_t k = 0; k < s->result_requests.size(); ++k) {
            if (s->result_requests[k] == 0) continue;
            ++*left;
            const std::size_t t0 = k * s->piece_tasks, t = std::min(s->piece_tasks, s->tasks - t0);
            const std::size_t bytes = t * s->batch->out_size;
            const int tag = data_tag(s->result_tag + k, 1, tag_ub);
            retire_receive(s->result_requests[k], [this, s, k, bytes, tag, finish_one](bool cancelled, const MPI_Status&) mutable {
                if (cancelled) {
                    discard_receive(s->rank, tag, bytes);  // the rank may still send it
                } else {
                    s->result_requests[k] = 0;  // its data landed after all
                }
                finish_one();
            });
        }
        finish_one();
    }

    /// Rank `r` missed its deadline (or said goodbye early): its slices run elsewhere, its
    /// gather parts fail, and it gets no more work.
    void fail_rank(int r) {
        RankState& p = peers[static_cast<std::size_t>(r)];
        if (!p.up) return;
        p.up = false;
        publish();
        std::vector<std::shared_ptr<Slice>> theirs;
        for (auto& [id, s] : slices) {
            if (s->rank == r) theirs.push_back(s);
        }
        for (auto& s : theirs) {
            auto b = s->batch;
            rank_stats(*b, r).failed = true;
            ++b->retiring;
            abandon_slice(s, [this, s, b] {
                --b->retiring;
                --b->slices_open;
                if (!b->failing && !(s->done_seen && s->done.error == 0 && s->error_blobs_pending == 0)) {
                    // Its end did not come back clean (or some of its task errors did not
                    // come): a piece that arrived may be one its engine failed (sent as zeros),
                    // or lack its errors. The whole slice runs again.
                    dispatch(b, s->first, s->tasks);
                } else if (!b->failing) {
                    // Every piece that arrived is good, with its errors: those stand; rerun
                    // the pieces whose results never came, spread over the ranks up.
                    for (auto& [index, message] : s->task_errors) {
                        if (s->result_requests[index / s->piece_tasks] == 0) b->promise->task_error(s->first + index, std::move(message));
                    }
                    std::size_t k = 0;
                    while (k < s->result_requests.size()) {
                        if (s->result_requests[k] == 0) {
                            ++k;
                            continue;
                        }
                        std::size_t end = k;
                        while (end < s->result_requests.size() && s->result_requests[end] != 0) ++end;
                        const std::size_t t0 = k * s->piece_tasks;
                        const std::size_t t1 = std::min(s->tasks, end * s->piece_tasks);
                        dispatch(b, s->first + t0, t1 - t0);
                        k = end;
                    }
                }
                maybe_batch_done(b);
            });
        }
        fail_gathers_of(r);
        // Parts on their way to it will not arrive: their futures fail (the sends stay posted,
        // holding their buffers, in case it is alive after all).
        std::vector<std::uint64_t> lost;
        for (auto& [seq, part] : outgoing) {
            if (part->root == r) lost.push_back(seq);
        }
        for (std::uint64_t seq : lost) {
            outgoing[seq]->sink->set_error(make_error_code(ClusterError::RankFailed));
            outgoing.erase(seq);
        }
    }

    // ---- a rank running slices for the leader --------------------------------------------

    void on_slice(int from, const Ctrl& c) {
        ++slices_received;
        const auto& hooks = config.test_hooks;
        if (hooks.exit_after_slices >= 0 && slices_received >= hooks.exit_after_slices) std::_Exit(0);
        if (hooks.stall_after_slices >= 0 && slices_received == hooks.stall_after_slices) {
            std::this_thread::sleep_for(hooks.stall_for);  // the test's hung rank: nothing moves meanwhile
        }
        auto w = std::make_shared<Work>();
        w->number = slices_received;
        w->id = c.id;
        w->leader = from;
        w->op = static_cast<std::size_t>(c.op);
        w->tasks = static_cast<std::size_t>(c.tasks);
        w->piece_tasks = static_cast<std::size_t>(c.piece_tasks);
        w->pieces = static_cast<std::size_t>(c.pieces);
        w->result_tag = c.tag2;
        const bool usable = !leaving && w->op < ops.size();
        const std::size_t in_size = usable ? ops[w->op]->in_size() : 1;
        w->buffers.resize(w->pieces);
        w->in_memory.resize(w->pieces);
        if (usable) works.emplace(w->id, w);
        for (std::size_t k = 0; k < w->pieces; ++k) {
            const std::size_t t0 = k * w->piece_tasks, t = std::min(w->piece_tasks, w->tasks - t0);
            const int tag = data_tag(c.tag + k, 0, tag_ub);
            if (!usable) {
                // Shutting down (or a table the leader should never have used): take the
                // payload so the leader's sends complete, and drop it.
                discard_receive(from, tag, t * in_size);
                continue;
            }
            // In the engine's memory (page-locked with a GPU): the engine runs the piece in place.
            w->buffers[k] = detail::output_storage(engine.output_memory(t * in_size, ops[w->op]->has_gpu()), t * in_size,
                                                   w->in_memory[k]);
            recv_bytes(w->buffers[k].get(), t * in_size, from, tag, w->buffers[k], [this, w, k](const MPI_Status&) {
                w->ready.push_back(k);
                submit_ready(*w);
            });
        }
    }

    void submit_ready(Work& w) {
        if (leaving) {
            for (std::size_t k : w.ready) w.buffers[k].reset();
            w.ready.clear();
            return;
        }
        const long hang = config.test_hooks.hang_engine_after_slices;
        if (hang >= 0 && w.number >= hang) return;  // the test's hung engine: nothing goes in
        while (!w.ready.empty()) {
            const std::size_t k = w.ready.front();
            const std::size_t t0 = k * w.piece_tasks, t = std::min(w.piece_tasks, w.tasks - t0);
            if (!w.started) {
                w.started = true;
                w.first_start = Clock::now();
            }
            std::function<void(PieceOutcome&&)> done = [inbox = inbox, id = w.id, k](PieceOutcome&& o) {
                try {
                    inbox->post(PieceDone{id, k, std::move(o), Clock::now()});
                } catch (...) {
                }
            };
            const std::size_t out_bytes = t * ops[w.op]->out_size();
            std::pmr::memory_resource* out_memory = nullptr;
            std::shared_ptr<void> out =
                detail::output_storage(engine.output_memory(out_bytes, ops[w.op]->has_gpu()), out_bytes, out_memory);
            void* out_data = out.get();
            if (!ops[w.op]->try_run(engine, w.buffers[k].get(), t, w.buffers[k], w.in_memory[k], out_data, std::move(out),
                                    out_memory, done, nullptr)) {
                return;  // full: next round
            }
            w.buffers[k].reset();  // the engine's batch holds it
            w.ready.pop_front();
            ++w.in_engine;
        }
    }

    void on_piece_done(PieceDone&& d) {
        auto it = works.find(d.work);
        if (it == works.end()) return;
        auto w = it->second;
        --w->in_engine;
        ++w->finished;
        w->last_end = std::max(w->last_end, d.ended);
        PieceOutcome& o = d.outcome;
        const long sabotage = config.test_hooks.fail_pieces_then_stall_after_slices;
        const bool sabotaged = sabotage >= 0 && w->number >= sabotage;
        if (sabotaged && !o.error) o.error = make_error_code(ExecError::DeviceFailed);  // the test's failing engine
        const std::size_t out_size = ops[w->op]->out_size();
        const std::size_t t0 = d.piece * w->piece_tasks, t = std::min(w->piece_tasks, w->tasks - t0);
        if (!leaving) {
            if (o.error) {
                if (w->error == 0) {
                    w->error = o.error.category() == error_category() ? o.error.value()
                                                                       : static_cast<int>(ExecError::DeviceFailed);
                }
                // The leader's receive still waits for this piece: send it zeros (it reruns the slice).
                auto zeros = std::shared_ptr<std::byte[]>(new std::byte[std::max<std::size_t>(t * out_size, 1)]());
                const std::byte* z = zeros.get();
                send_bytes(z, t * out_size, w->leader, data_tag(w->result_tag + d.piece, 1, tag_ub), std::move(zeros));
            } else {
                w->cpu_tasks += o.cpu_tasks;
                w->gpu_tasks += o.gpu_tasks;
                send_bytes(o.outputs, t * out_size, w->leader, data_tag(w->result_tag + d.piece, 1, tag_ub), o.keep);
                if (!o.task_errors.empty()) send_task_errors(*w, d.piece, o.task_errors);
            }
        }
        if (w->finished < w->pieces) return;
        works.erase(w->id);
        if (leaving) return;
        if (sabotaged) {
            // The test's rank that fails after its failed pieces went out: let them arrive,
            // then stop answering before the slice's end is reported.
            for (const auto until = Clock::now() + std::chrono::seconds{5}; Clock::now() < until;) {
                progress();
                const bool sending = std::any_of(pending.begin(), pending.end(), [&](const Pending& p) {
                    return p.send && p.peer == w->leader && p.keep != nullptr;
                });
                if (!sending) break;
                std::this_thread::yield();
            }
            std::this_thread::sleep_for(config.test_hooks.stall_for);
            return;
        }
        const auto took = w->last_end - w->first_start;
        auto report = [this, w, took] {
            Ctrl c;
            c.kind = Kind::SliceDone;
            c.id = w->id;
            c.time_ns = static_cast<std::int64_t>(
                static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(took).count()) * config.slowdown);
            c.cpu_tasks = w->cpu_tasks;
            c.gpu_tasks = w->gpu_tasks;
            c.error = w->error;
            if (!bye_sent) send_ctrl(w->leader, c);
        };
        if (config.slowdown > 1) {
            timers.emplace_back(Clock::now() + std::chrono::duration_cast<Clock::duration>(took * (config.slowdown - 1)),
                                std::move(report));
        } else {
            report();
        }
    }

    void send_task_errors(const Work& w, std::size_t piece, const std::vector<std::pair<std::size_t, std::string>>& errors) {
        auto blob = std::make_shared<std::vector<std::byte>>(encode_errors(errors));
        Ctrl c;
        c.kind = Kind::TaskErrors;
        c.id = w.id;
        c.first = piece * w.piece_tasks;
        c.tasks = errors.size();
        c.bytes = blob->size();
        c.tag = send_counter++;
        send_ctrl(w.leader, c);
        const std::byte* p = blob->data();
        const std::size_t bytes = blob->size();
        send_bytes(p, bytes, w.leader, data_tag(c.tag, 0, tag_ub), std::move(blob));
    }

    // ---- SPMD gather ---------------------------------------------------------------------

    void on_gather(detail::GatherSubmission g) {
        const std::uint64_t seq = next_gather++;
        if (leaving || g.root < 0 || g.root >= size) {
            g.sink->set_error(leaving ? make_error_code(ExecError::ShutDown) : make_error_code(ClusterError::NotLeader));
            return;
        }
        if (g.root != rank) {
            send_gather_part(seq, std::move(g));
            return;
        }
        Gather& gather = gathers[seq];
        gather.seq = seq;
        gather.own = true;
        gather.out_size = g.out_size;
        gather.parts.resize(static_cast<std::size_t>(size));
        gather.mine.emplace(std::move(g));
        maybe_gather_done(seq);
    }

    void send_gather_part(std::uint64_t seq, detail::GatherSubmission g) {
        const int root = g.root;
        if (!peers[static_cast<std::size_t>(root)].up) {
            g.sink->set_error(make_error_code(ClusterError::RankFailed));
            return;
        }
        auto held = std::make_shared<detail::GatherSubmission>(std::move(g));
        outgoing.emplace(seq, held);
        const std::size_t piece_tasks = std::max<std::size_t>(1, config.piece_bytes / std::max<std::size_t>(held->out_size, 8));
        const std::size_t pieces = pieces_of(held->tasks, piece_tasks);
        auto blob = std::make_shared<std::vector<std::byte>>(encode_errors(held->task_errors));
        Ctrl c;
        c.kind = Kind::GatherPart;
        c.id = seq;
        c.tasks = held->tasks;
        c.piece_tasks = piece_tasks;
        c.pieces = pieces;
        c.tag = send_counter;
        send_counter += pieces;
        c.tag2 = send_counter;
        send_counter += pieces;
        c.tag3 = send_counter++;
        c.bytes = blob->size();
        c.aux = held->task_errors.size();
        c.op = held->out_size;
        c.time_ns = held->stats.wall_time.count();
        c.cpu_tasks = held->stats.cpu_tasks;
        c.gpu_tasks = held->stats.gpu_tasks;
        send_ctrl(root, c);
        if (config.test_hooks.stall_before_gather_data) std::this_thread::sleep_for(config.test_hooks.stall_for);
        auto left = std::make_shared<std::size_t>(2 * pieces + (blob->empty() ? 0 : 1) + 1);
        auto one_sent = [this, held, left, seq](const MPI_Status&) {
            if (--*left == 0) {
                held->sink->set_value({});  // once: a sink completes only the first time
                outgoing.erase(seq);
            }
        };
        for (std::size_t k = 0; k < pieces; ++k) {
            const std::size_t t0 = k * piece_tasks, t = std::min(piece_tasks, held->tasks - t0);
            send_bytes(static_cast<const std::byte*>(held->outputs) + t0 * held->out_size, t * held->out_size, root,
                       data_tag(c.tag + k, 0, tag_ub), held, one_sent);
            send_bytes(held->ids.data() + t0, t * sizeof(std::uint64_t), root, data_tag(c.tag2 + k, 0, tag_ub), held,
                       one_sent);
        }
        if (!blob->empty()) {
            const std::byte* p = blob->data();
            send_bytes(p, blob->size(), root, data_tag(c.tag3, 0, tag_ub), blob, one_sent);
        }
        one_sent(MPI_Status{});
    }

    void on_gather_part(int from, const Ctrl& c) {
        const std::uint64_t seq = c.id;
        Gather& g = gathers[seq];
        g.seq = seq;
        if (g.parts.empty()) g.parts.resize(static_cast<std::size_t>(size));
        GatherPart& part = g.parts[static_cast<std::size_t>(from)];
        const bool wanted = !leaving && !g.done && peers[static_cast<std::size_t>(from)].up && !part.header;
        const auto tasks = static_cast<std::size_t>(c.tasks);
        const auto out_size = static_cast<std::size_t>(c.op);
        const auto piece_tasks = static_cast<std::size_t>(std::max<std::uint64_t>(c.piece_tasks, 1));
        if (!wanted) {
            // Nobody waits for it: take it anyway (the sender's requests then complete), and drop it.
            for (std::size_t k = 0; k < c.pieces; ++k) {
                const std::size_t t0 = k * piece_tasks, t = std::min(piece_tasks, tasks - t0);
                discard_receive(from, data_tag(c.tag + k, 0, tag_ub), t * out_size);
                discard_receive(from, data_tag(c.tag2 + k, 0, tag_ub), t * sizeof(std::uint64_t));
            }
            if (c.bytes != 0) discard_receive(from, data_tag(c.tag3, 0, tag_ub), static_cast<std::size_t>(c.bytes));
            return;
        }
        part.header = true;
        part.tasks = tasks;
        part.out_size = out_size;
        part.time_ns = c.time_ns;
        part.cpu_tasks = c.cpu_tasks;
        part.gpu_tasks = c.gpu_tasks;
        GatherData& data = *part.data;
        data.outputs.resize(tasks * out_size);
        data.ids.resize(tasks);
        data.errors.resize(static_cast<std::size_t>(c.bytes));
        part.receives_left = 0;
        auto received = [this, seq, from](const MPI_Status&) {
            auto it = gathers.find(seq);
            if (it == gathers.end()) return;
            GatherPart& p = it->second.parts[static_cast<std::size_t>(from)];
            if (--p.receives_left == 0) p.complete = true;
            maybe_gather_done(seq);
        };
        for (std::size_t k = 0; k < c.pieces; ++k) {
            const std::size_t t0 = k * piece_tasks, t = std::min(piece_tasks, tasks - t0);
            part.receives_left += 2;
            recv_gather_data(data.outputs.data() + t0 * out_size, t * out_size, from,
                             data_tag(c.tag + k, 0, tag_ub), part.data, received);
            recv_gather_data(data.ids.data() + t0, t * sizeof(std::uint64_t), from,
                             data_tag(c.tag2 + k, 0, tag_ub), part.data, received);
        }
        if (c.bytes != 0) {
            ++part.receives_left;
            recv_gather_data(data.errors.data(), data.errors.size(), from, data_tag(c.tag3, 0, tag_ub), part.data,
                             received);
        }
        if (part.receives_left == 0) part.complete = true;
        maybe_gather_done(seq);
    }

    /// The root's gather `seq` completes once its own call came and every rank's part is in
    /// (or has failed: then the gather fails).
    void maybe_gather_done(std::uint64_t seq) {
        auto it = gathers.find(seq);
        if (it == gathers.end()) return;
        Gather& g = it->second;
        if (!g.own || g.done) return;
        bool failed = false;
        for (int r = 0; r < size; ++r) {
            if (r == rank) continue;
            const GatherPart& p = g.parts[static_cast<std::size_t>(r)];
            if (p.complete) continue;
            // A failed rank's part, unless it is all here: the gather fails (once nothing of
            // it is still being received: the receives write into the part's buffers).
            if (!peers[static_cast<std::size_t>(r)].up && !(p.header && p.receives_left != 0)) {
                failed = true;
                continue;
            }
            return;
        }
        g.done = true;
        detail::GatherSubmission& mine = *g.mine;
        if (failed) {
            mine.sink->set_error(make_error_code(ClusterError::RankFailed));
            gathers.erase(it);
            return;
        }
        for (int r = 0; r < size; ++r) {
            if (r != rank && g.parts[static_cast<std::size_t>(r)].out_size != mine.out_size &&
                g.parts[static_cast<std::size_t>(r)].tasks != 0) {
                mine.sink->set_error(make_error_code(ClusterError::OpTypeMismatch));
                gathers.erase(it);
                return;
            }
        }
        try {
            IdColumn ids;
            std::size_t total = 0;
            for (int r = 0; r < size; ++r) {
                if (r == rank) {
                    for (std::uint64_t id : mine.ids) ids.push(id);
                    total += mine.tasks;
                } else {
                    for (std::uint64_t id : g.parts[static_cast<std::size_t>(r)].data->ids) ids.push(id);
                    total += g.parts[static_cast<std::size_t>(r)].tasks;
                }
            }
            detail::GatherSink* promise = mine.sink.get();
            auto* out = static_cast<std::byte*>(promise->prepare(std::move(ids)));
            ExecStats stats;
            std::size_t at = 0;
            for (int r = 0; r < size; ++r) {
                RankStats rs;
                rs.rank = r;
                if (r == rank) {
                    if (mine.tasks != 0) std::memcpy(out + at * mine.out_size, mine.outputs, mine.tasks * mine.out_size);
                    for (auto& [index, message] : mine.task_errors) promise->task_error(at + index, message);
                    rs.tasks = mine.tasks;
                    rs.cpu_tasks = mine.stats.cpu_tasks;
                    rs.gpu_tasks = mine.stats.gpu_tasks;
                    rs.time = mine.stats.wall_time;
                } else {
                    GatherPart& p = g.parts[static_cast<std::size_t>(r)];
                    const GatherData& d = *p.data;
                    if (!d.outputs.empty()) std::memcpy(out + at * mine.out_size, d.outputs.data(), d.outputs.size());
                    for_each_error(d.errors, [&](std::size_t index, std::string message) {
                        promise->task_error(at + index, "rank " + std::to_string(r) + ": " + message);
                    });
                    rs.tasks = p.tasks;
                    rs.cpu_tasks = p.cpu_tasks;
                    rs.gpu_tasks = p.gpu_tasks;
                    rs.time = std::chrono::nanoseconds{p.time_ns};
                    rs.bytes_received = d.outputs.size() + d.ids.size() * sizeof(std::uint64_t) + d.errors.size();
                }
                at += rs.tasks;
                stats.cpu_tasks += rs.cpu_tasks;
                stats.gpu_tasks += rs.gpu_tasks;
                stats.ranks.push_back(rs);
            }
            (void)total;
            stats.device = stats.gpu_tasks == 0 ? DeviceKind::Cpu : (stats.cpu_tasks == 0 ? DeviceKind::Gpu : DeviceKind::Hybrid);
            promise->set_value(std::move(stats));
        } catch (...) {
            mine.sink->set_error(make_error_code(ExecError::OutOfMemory));
        }
        gathers.erase(it);
    }

    /// Task errors on the wire: for each, its position and its message's length (two
    /// uint64), then the message.
    static std::vector<std::byte> encode_errors(const std::vector<std::pair<std::size_t, std::string>>& errors) {
        std::vector<std::byte> blob;
        for (const auto& [index, message] : errors) {
            const std::uint64_t head[2] = {index, message.size()};
            const auto* h = reinterpret_cast<const std::byte*>(head);
            blob.insert(blob.end(), h, h + sizeof head);
            const auto* m = reinterpret_cast<const std::byte*>(message.data());
            blob.insert(blob.end(), m, m + message.size());
        }
        return blob;
    }

    template <class F>
    static void for_each_error(const std::vector<std::byte>& blob, F&& f) {
        std::size_t at = 0;
        while (at + 2 * sizeof(std::uint64_t) <= blob.size()) {
            std::uint64_t head[2];
            std::memcpy(head, blob.data() + at, sizeof head);
            at += sizeof head;
            const std::size_t len = std::min<std::size_t>(head[1], blob.size() - at);
            f(static_cast<std::size_t>(head[0]), std::string{reinterpret_cast<const char*>(blob.data() + at), len});
            at += len;
        }
    }

    void fail_gathers_of(int) {
        std::vector<std::uint64_t> seqs;
        for (auto& [seq, g] : gathers) seqs.push_back(seq);
        for (std::uint64_t seq : seqs) maybe_gather_done(seq);
    }

    // ---- shutdown ------------------------------------------------------------------------

    void on_shutdown(std::shared_ptr<std::promise<void>> done) {
        if (done) shutdown_waiter = std::move(done);  // none: started from this thread
        if (shutting_down) return;
        shutting_down = true;
        if (start_waiter) finish_start();
        maybe_leave();
    }

    /// Leaves once shutdown() was called here and, on a rank that is not the leader, the
    /// leader has said goodbye or failed: what is still in flight completes with ShutDown.
    void maybe_leave() {
        if (!shutting_down || leaving) return;
        const RankState& leader_state = peers[static_cast<std::size_t>(config.leader)];
        if (rank != config.leader && !leader_state.bye && leader_state.up) return;
        leaving = true;
        shutdown_deadline = Clock::now() + config.shutdown_grace;
        std::vector<std::shared_ptr<LeaderBatch>> open;
        for (auto& [id, b] : batches) open.push_back(b);
        for (auto& b : open) fail_batch(b, make_error_code(ExecError::ShutDown));
        for (auto& [seq, g] : gathers) {
            if (g.own && !g.done && g.mine) {
                g.done = true;
                g.mine->sink->set_error(make_error_code(ExecError::ShutDown));
            }
        }
        for (auto& [id, w] : works) submit_ready(*w);  // drops what is not in the engine yet
    }

    /// True when the transport may stop: our goodbye sent, every other rank's received, every
    /// request done -- or the grace period over.
    bool try_finish() {
        const bool grace_over = Clock::now() >= shutdown_deadline;
        std::size_t in_engine = 0;
        for (auto& [id, w] : works) in_engine += w->in_engine;
        // The leader's own slices still in its engine (cancelled) write their batch's outputs
        // until they complete: their batches complete after them.
        in_engine += local_slices.size();
        // Completions of pieces still in the engine come through the mailbox: wait for them
        // (the engine finishes running chunks), unless the grace is over.
        if (!bye_sent) {
            // Sends to ranks that are down do not hold the goodbye up (a heartbeat to a rank
            // that is gone never completes); the final wait below still gives them the grace.
            bool sends_out = false;
            for (const Pending& p : pending) sends_out |= p.send && peers[static_cast<std::size_t>(p.peer)].up;
            if ((in_engine == 0 && !sends_out) || grace_over) {
                Ctrl c;
                c.kind = Kind::Bye;
                for (int r = 0; r < size; ++r) {
                    if (r != rank) send_ctrl(r, c);
                }
                bye_sent = true;
            }
            return false;
        }
        bool all_byes = true;
        for (int r = 0; r < size; ++r) {
            if (r != rank && !peers[static_cast<std::size_t>(r)].bye) all_byes = false;
        }
        bool sends_out = false;
        for (const Pending& p : pending) sends_out |= p.send;
        bool gathers_open = false;
        for (auto& [seq, g] : gathers) {
            for (const GatherPart& p : g.parts) gathers_open |= p.header && !p.complete;
        }
        // The leader's own slices in its engine are waited for even past the grace: their
        // batches may complete only once nothing writes their outputs, and the engine
        // completes every batch (cancelled, soon: running chunks finish, the rest is skipped).
        if (!local_slices.empty()) return false;
        return (all_byes && !sends_out && !gathers_open) || grace_over;
    }

    void finish_mpi() {
        // Receives nobody will match any more (the persistent control receive, and discard
        // receives for pieces a failed rank never sent): cancelled; MPI is given a moment to
        // confirm, then whatever is left is freed and its memory kept until exit.
        const bool hold_gathers = config.test_hooks.gather_receives_uncancellable;
        for (std::size_t i = 0; i < requests.size(); ++i) {
            if (!pending[i].send && !(hold_gathers && pending[i].into_gather)) MPI_Cancel(&requests[i]);
        }
        const auto until = Clock::now() + std::chrono::milliseconds{500};
        while (!requests.empty() && Clock::now() < until) {
            for (std::size_t i = 0; i < requests.size();) {
                int flag = 0;
                MPI_Status st;
                MPI_Test(&requests[i], &flag, &st);
                if (flag) {
                    requests[i] = requests.back();
                    requests.pop_back();
                    pending[i] = std::move(pending.back());
                    pending.pop_back();
                } else {
                    ++i;
                }
            }
            if (!requests.empty()) std::this_thread::sleep_for(std::chrono::microseconds{100});
        }
        for (std::size_t i = 0; i < requests.size(); ++i) {
            if (pending[i].into_gather && config.test_hooks.gather_receives_left) {
                config.test_hooks.gather_receives_left->fetch_add(1);
            }
            MPI_Request_free(&requests[i]);
            // Its buffer, and whatever its completion holds, stay for the rest of the process.
            keep_until_exit(std::make_shared<Pending>(std::move(pending[i])));
        }
        const bool clean = requests.empty();
        requests.clear();
        pending.clear();
        // Whatever is still open has waited out the grace period: a batch whose cancelled
        // receives MPI never confirmed (their only writer is a peer that is gone), a gather
        // part whose sends never completed. Their futures complete now, with ShutDown.
        for (auto& [id, b] : batches) {
            if (b->promise) b->promise->set_error(make_error_code(ExecError::ShutDown), {});
        }
        for (auto& [seq, part] : outgoing) part->sink->set_error(make_error_code(ExecError::ShutDown));
        outgoing.clear();
        batches.clear();
        slices.clear();
        works.clear();
        gathers.clear();
        if (clean) MPI_Comm_free(&comm);
        // A rank that left without its goodbye (exited, or never woke up): Open MPI 4.1's
        // MPI_Finalize ends with a fence over every process, which then may wait for it for
        // ever (seen with 4.1.4 under --enable-recovery, now and then). So MPI is left
        // unfinalised; under `mpirun --enable-recovery` the job still ends normally.
        bool lost = false;
        for (int r = 0; r < size; ++r) lost |= r != rank && !peers[static_cast<std::size_t>(r)].bye;
        if (initialised_mpi && config.finalize && !lost) MPI_Finalize();
        if (shutdown_waiter) shutdown_waiter->set_value();
    }
};

// ---- the public class ---------------------------------------------------------------------

namespace {


void check_config(const ClusterConfig& c) {
    using std::chrono::milliseconds;
    auto bad = [](const char* field, const std::string& value, const char* range) {
        throw std::invalid_argument(std::string{"tandem::ClusterConfig: "} + field + " = " + value +
                                    " is out of range; allowed: " + range);
    };
    auto ms = [](milliseconds d) { return std::to_string(d.count()) + " ms"; };
    if (c.leader < 0) bad("leader", std::to_string(c.leader), "0 .. size - 1");
    if (c.piece_bytes < 4096 || c.piece_bytes > (std::size_t{1} << 30)) bad("piece_bytes", std::to_string(c.piece_bytes), "4 KiB .. 1 GiB");
    if (c.deadline < milliseconds{10} || c.deadline > std::chrono::hours{1}) bad("deadline", ms(c.deadline), "10 ms .. 1 h");
    if (c.heartbeat < milliseconds{1} || c.heartbeat > std::chrono::minutes{1} || c.heartbeat >= c.deadline) {
        bad("heartbeat", ms(c.heartbeat), "1 ms .. 1 min, below deadline");
    }
    if (c.startup_timeout < milliseconds{10} || c.startup_timeout > std::chrono::hours{1}) {
        bad("startup_timeout", ms(c.startup_timeout), "10 ms .. 1 h");
    }
    if (c.shutdown_grace < milliseconds{10} || c.shutdown_grace > std::chrono::hours{1}) {
        bad("shutdown_grace", ms(c.shutdown_grace), "10 ms .. 1 h");
    }
    if (!(c.slowdown >= 1 && c.slowdown <= 1000)) bad("slowdown", std::to_string(c.slowdown), "1 .. 1000");
    if (c.max_poll_interval < std::chrono::microseconds{1} || c.max_poll_interval > milliseconds{100}) {
        bad("max_poll_interval", std::to_string(c.max_poll_interval.count()) + " us", "1 us .. 100 ms");
    }
    const ModelConfig& m = c.model;
    if (m.min_samples < 1 || m.min_samples > 1000) bad("model.min_samples", std::to_string(m.min_samples), "1 .. 1000");
    if (!(m.forgetting >= 0.5 && m.forgetting <= 0.999)) bad("model.forgetting", std::to_string(m.forgetting), "0.5 .. 0.999");
    if (!(m.outlier_factor >= 1.5 && m.outlier_factor <= 1000)) bad("model.outlier_factor", std::to_string(m.outlier_factor), "1.5 .. 1000");
    if (m.outlier_streak < 1 || m.outlier_streak > 16) bad("model.outlier_streak", std::to_string(m.outlier_streak), "1 .. 16");
}

}  // namespace

Cluster::Cluster(Engine& engine, ClusterConfig config) {
    check_config(config);
    impl_ = std::make_unique<Impl>(engine, std::move(config));
    auto ready = std::make_shared<std::promise<void>>();
    auto ready_future = ready->get_future();
    Impl* impl = impl_.get();
    impl_->thread = std::thread{[impl, ready] { impl->run(ready); }};
    try {
        ready_future.get();
    } catch (...) {
        impl_->thread.join();
        throw;
    }
    if (impl_->config.leader >= impl_->size) {
        const int leader = impl_->config.leader;
        shutdown();
        throw std::invalid_argument("tandem::ClusterConfig: leader = " + std::to_string(leader) +
                                    " is out of range; allowed: 0 .. size - 1");
    }
}

Cluster::~Cluster() {
    if (impl_ && std::this_thread::get_id() == impl_->thread.get_id()) {
        // Destroyed from a continuation on the transport thread: it cannot wait for itself.
        // The shutdown finishes on that thread once the continuation returns, and the thread
        // frees the state (the engine must still outlive it).
        shutdown();
        impl_->detached = true;
        impl_->thread.detach();
        static_cast<void>(impl_.release());
        return;
    }
    shutdown();
}

void Cluster::add_op(std::shared_ptr<const detail::ClusterOp> op) {
    // Before start(): the transport reads `ops` only from start() on (the mailbox's send and
    // receive order the writes before its reads).
    if (impl_->started.load(std::memory_order_acquire) || impl_->closing.load(std::memory_order_acquire)) {
        throw Error{make_error_code(ClusterError::BadRegistration), "tandem::Cluster::add('" + op->name() + "') after start"};
    }
    for (const auto& o : impl_->ops) {
        if (o->name() == op->name()) {
            throw Error{make_error_code(ClusterError::BadRegistration), "tandem::Cluster::add: two ops named '" + op->name() + "'"};
        }
    }
    impl_->ops.push_back(std::move(op));
}

void Cluster::start() {
    auto done = std::make_shared<std::promise<void>>();
    auto f = done->get_future();
    {
        std::shared_lock gate{impl_->post_gate};
        if (impl_->closing.load(std::memory_order_relaxed)) return;
        impl_->inbox->post(StartCmd{std::move(done)});
    }
    f.get();
}

int Cluster::rank() const noexcept { return impl_->rank; }
int Cluster::size() const noexcept { return impl_->size; }
int Cluster::leader() const noexcept { return impl_->config.leader; }
Engine& Cluster::engine() noexcept { return impl_->engine; }
const ClusterConfig& Cluster::config() const noexcept { return impl_->config; }

std::vector<RankInfo> Cluster::ranks() const {
    std::lock_guard lock{impl_->published_mutex};
    return impl_->published_ranks;
}

std::string Cluster::describe_op(std::string_view name) const {
    std::lock_guard lock{impl_->published_mutex};
    auto it = impl_->op_checks.find(name);
    if (it == impl_->op_checks.end()) return "op '" + std::string{name} + "' is not registered on the leader";
    return it->second.second;
}

std::error_code Cluster::check_submit(const std::string& name, std::size_t in_size, std::size_t out_size,
                                      std::size_t tasks, std::size_t& index) const {
    if (impl_->closing.load(std::memory_order_acquire)) return make_error_code(ExecError::ShutDown);
    if (!is_leader() || !impl_->started.load(std::memory_order_acquire)) return make_error_code(ClusterError::NotLeader);
    if (tasks == 0) return make_error_code(ExecError::EmptyBatch);
    const auto& ops = impl_->ops;
    auto it = std::find_if(ops.begin(), ops.end(), [&](const auto& o) { return o->name() == name; });
    if (it == ops.end()) return make_error_code(ClusterError::OpNotRegistered);
    if ((*it)->in_size() != in_size || (*it)->out_size() != out_size) return make_error_code(ClusterError::OpTypeMismatch);
    index = static_cast<std::size_t>(it - ops.begin());
    std::lock_guard lock{impl_->published_mutex};
    auto check = impl_->op_checks.find(name);
    if (check != impl_->op_checks.end() && check->second.first) return check->second.first;
    return {};
}

void Cluster::hand_over(detail::LeaderSubmission s) {
    std::shared_lock gate{impl_->post_gate};
    if (impl_->closing.load(std::memory_order_relaxed)) {
        s.promise->set_error(make_error_code(ExecError::ShutDown), {});
        return;
    }
    Message m{SubmitCmd{std::move(s)}};
    if (!impl_->inbox->queue.enqueue(std::move(m))) {
        // Out of memory: moodycamel leaves the message with us.
        std::get<SubmitCmd>(m).s.promise->set_error(make_error_code(ExecError::OutOfMemory), {});
        return;
    }
    impl_->inbox->parker.notify();
}

void Cluster::hand_over_gather(detail::GatherSubmission g) {
    std::shared_lock gate{impl_->post_gate};
    if (impl_->closing.load(std::memory_order_relaxed)) {
        g.sink->set_error(make_error_code(ExecError::ShutDown));
        return;
    }
    Message m{GatherCmd{std::move(g)}};
    if (!impl_->inbox->queue.enqueue(std::move(m))) {
        std::get<GatherCmd>(m).g.sink->set_error(make_error_code(ExecError::OutOfMemory));
        return;
    }
    impl_->inbox->parker.notify();
}

void Cluster::shutdown() {
    if (!impl_) return;
    if (std::this_thread::get_id() == impl_->thread.get_id()) {
        // From a continuation on the transport thread: start it; it finishes after the
        // continuation returns (a later shutdown() from another thread waits for it).
        {
            std::unique_lock gate{impl_->post_gate};
            impl_->closing.store(true, std::memory_order_release);
        }
        impl_->inbox->post(ShutdownCmd{nullptr});
        return;
    }
    std::lock_guard lock{impl_->shutdown_mutex};
    if (impl_->stopped.load(std::memory_order_acquire)) return;
    {
        std::unique_lock gate{impl_->post_gate};
        impl_->closing.store(true, std::memory_order_release);
    }
    auto done = std::make_shared<std::promise<void>>();
    auto f = done->get_future();
    impl_->inbox->post(ShutdownCmd{std::move(done)});
    f.get();
    impl_->thread.join();
    // Anything posted after the transport stopped: complete it here.
    drain_after_stop(*impl_->inbox);
    impl_->stopped.store(true, std::memory_order_release);
}

}  // namespace tandem
