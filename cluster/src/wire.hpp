#pragma once
// Internal: what the ranks say to each other. Every control message is one fixed-size `Ctrl`
// on tag 0, received by one receive the transport keeps posted (from any source); bulk data
// (payload pieces, result pieces, op tables, task errors, gathered parts) follows on tags of
// its own, named in the control message that announces it. MPI keeps messages between two
// ranks on one tag in order, and a control message always precedes the data it announces
// (or, for results the leader asked for, the leader posts their receives before it sends the
// slice), so every data message meets a receive posted for it.
#include <cstdint>
#include <type_traits>

namespace tandem::cluster_detail {

enum class Kind : std::uint32_t {
    /// A rank's op table (data: `bytes` on `tag`) and what its engine has (`cpu_tasks` =
    /// workers, `gpu_tasks` = GPUs, `aux` = its local rank). To the leader, at `start()`.
    Hello = 1,
    /// Leader → rank: run tasks [first, first + tasks) of batch `id` (a slice id) with op `op`;
    /// its payload comes in `pieces` pieces of `piece_tasks` tasks on tags `tag` + 2i; send
    /// piece i's results on tags `tag2` + 2i.
    Slice,
    /// Rank → leader: task failures of piece `aux` of slice `id`; `tasks` of them, `bytes` of
    /// data on `tag`.
    TaskErrors,
    /// Rank → leader: slice `id` is done; `time_ns` on the rank, `cpu_tasks` / `gpu_tasks`,
    /// `error` (an ExecError value) when its engine failed it.
    SliceDone,
    /// Any rank → every other: still here.
    Heartbeat,
    /// Rank → root: its part of gather `id`: `tasks` results in `pieces` pieces of `piece_tasks`
    /// on tags `tag` + 2i, their ids on `tag2` + 2i (pieces of `aux` ids), task errors (`bytes`
    /// of data, when not 0) on `tag3`; `time_ns` its batch's wall time.
    GatherPart,
    /// Any rank → every other: it will send nothing more.
    Bye,
};

struct Ctrl {
    Kind kind = Kind::Heartbeat;
    std::int32_t error = 0;
    std::uint64_t id = 0;
    std::uint64_t op = 0;
    std::uint64_t first = 0;
    std::uint64_t tasks = 0;
    std::uint64_t piece_tasks = 0;
    std::uint64_t pieces = 0;
    std::uint64_t tag = 0, tag2 = 0, tag3 = 0;
    std::uint64_t bytes = 0;
    std::uint64_t aux = 0;
    std::int64_t time_ns = 0;
    std::uint64_t cpu_tasks = 0, gpu_tasks = 0;
};
static_assert(std::is_trivially_copyable_v<Ctrl>);

}  // namespace tandem::cluster_detail
