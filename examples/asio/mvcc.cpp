// The seed's MVCC scenario in miniature: transactions become tasks, results become commit or
// abort, and the outcome is the same however the engine splits the work.
//
//   store (balance, version per key) --snapshot at block start--+
//                                                               v
//   block k: Tx[0..n) --Batch<TxTask>--async_submit--> verify(tx) on CPU workers, in parallel:
//                                                       - read versions == snapshot's?  (else Stale)
//                                                       - enough balance?    (else Insufficient)
//                                                       - check the "signature", compute writes
//                                                               | results, in tx order
//                                                               v
//   commit phase, on the io thread, in tx order: a verified tx commits only if no tx before it
//   in this block wrote a key it read (first committer wins; else Conflict); a commit applies
//   its writes and stamps each key with the commit's sequence number as its new version.
//
// What it shows: the expensive, independent part (verification) runs as one batch per block;
// the cheap, order-dependent part (commit) stays sequential; results map back to their
// transactions by position. The run is repeated with 1 worker, with 2 workers and tiny chunks,
// and with no engine at all: every decision and the final state must be identical.
//
// Run: mvcc [--blocks B] [--txs N] [--keys K]   (defaults 20, 2000, 20000). Exits 0 when the
// three runs agree and money is conserved.

#include <tandem/asio.hpp>
#include <tandem/tandem.hpp>

#include <asio.hpp>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace {

struct Account {
    std::int64_t balance = 0;
    std::uint64_t version = 0;  // sequence number of the commit that last wrote it
};
using Store = std::vector<Account>;

/// A transfer, as a client built it after reading `from` and `to` at the versions it saw.
struct Tx {
    std::uint32_t from = 0, to = 0;
    std::int64_t amount = 0;
    std::uint64_t read_version_from = 0, read_version_to = 0;
    std::uint64_t signature = 0;
};

/// A task: the transaction and the snapshot it is verified against (alive for the batch).
struct TxTask {
    Tx tx;
    const Store* snapshot = nullptr;
};

enum class Decision : std::uint8_t { Commit, Stale, Insufficient, BadSignature, Conflict };

/// What verification produces: a verdict and, when valid, the write set.
struct Verified {
    Decision verdict = Decision::Stale;
    std::int64_t new_from = 0, new_to = 0;
};

/// A stand-in for signature checking: enough arithmetic to be worth a worker's time.
std::uint64_t sign(const Tx& tx) {
    std::uint64_t h = 0x9e3779b97f4a7c15ull ^ (std::uint64_t{tx.from} << 32 | tx.to);
    for (int i = 0; i < 500; ++i) {
        h ^= static_cast<std::uint64_t>(tx.amount) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        h *= 0xff51afd7ed558ccdull;
    }
    return h;
}

/// Runs on a worker: reads only the task and its snapshot, writes only the result.
Verified verify(const TxTask& task) {
    const Tx& tx = task.tx;
    const Store& s = *task.snapshot;
    if (sign(tx) != tx.signature) return {Decision::BadSignature};
    if (s[tx.from].version != tx.read_version_from || s[tx.to].version != tx.read_version_to) return {Decision::Stale};
    if (s[tx.from].balance < tx.amount) return {Decision::Insufficient};
    return {Decision::Commit, s[tx.from].balance - tx.amount, s[tx.to].balance + tx.amount};
}

/// A deterministic stream of random numbers (xorshift64*).
struct Rng {
    std::uint64_t x;
    std::uint64_t next() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        return x * 2685821657736338717ull;
    }
    std::uint32_t below(std::uint32_t n) { return static_cast<std::uint32_t>(next() % n); }
};

/// Block k's transactions, built by clients that read `store` (some of them long ago: stale).
/// One key in 16 is one of 16 hot keys, so transactions in one block collide.
std::vector<Tx> make_block(const Store& store, std::uint64_t block, std::size_t n) {
    Rng rng{0x1234567ull + block * 0x9e3779b97f4a7c15ull};
    const auto keys = static_cast<std::uint32_t>(store.size());
    std::vector<Tx> txs(n);
    for (Tx& tx : txs) {
        auto pick = [&] { return rng.below(16) == 0 ? rng.below(16) : rng.below(keys); };
        tx.from = pick();
        do tx.to = pick();
        while (tx.to == tx.from);
        tx.amount = 1 + rng.below(rng.below(10) == 0 ? 5000 : 300);
        tx.read_version_from = store[tx.from].version;
        tx.read_version_to = store[tx.to].version;
        if (rng.below(10) == 0 && tx.read_version_from > 0) --tx.read_version_from;  // read long ago
        tx.signature = sign(tx);
        if (rng.below(100) == 0) tx.signature ^= 1;  // forged
    }
    return txs;
}

/// Applies one block's verification results in transaction order; returns the decisions.
std::vector<Decision> commit_block(Store& store, std::uint64_t& sequence, const std::vector<Tx>& txs,
                                   const std::vector<Verified>& verified) {
    std::vector<Decision> decisions(txs.size());
    for (std::size_t i = 0; i < txs.size(); ++i) {
        const Tx& tx = txs[i];
        Decision d = verified[i].verdict;
        // Verified against the snapshot; a commit earlier in this block may have moved on.
        if (d == Decision::Commit &&
            (store[tx.from].version != tx.read_version_from || store[tx.to].version != tx.read_version_to)) {
            d = Decision::Conflict;
        }
        if (d == Decision::Commit) {
            ++sequence;
            store[tx.from] = {verified[i].new_from, sequence};
            store[tx.to] = {verified[i].new_to, sequence};
        }
        decisions[i] = d;
    }
    return decisions;
}

struct RunResult {
    std::vector<Decision> decisions;  // every transaction of every block, in order
    Store store;
    std::uint64_t sequence = 0;
};

Store initial_store(std::size_t keys) {
    Store s(keys);
    for (std::size_t k = 0; k < keys; ++k) s[k].balance = 1000 + static_cast<std::int64_t>(k % 7) * 100;
    return s;
}

struct Params {
    std::size_t blocks = 20, txs = 2000, keys = 20000;
};

/// The whole workload with verification on `engine`, driven by a coroutine on an io_context.
RunResult run_on_engine(const Params& p, tandem::EngineConfig config, bool print) {
    asio::io_context io;
    tandem::Engine engine{config};
    const tandem::Op<TxTask, Verified> verify_op{"verify_tx", [](const TxTask& t) { return verify(t); }};
    RunResult run{{}, initial_store(p.keys), 0};

    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            for (std::uint64_t b = 0; b < p.blocks; ++b) {
                const std::vector<Tx> txs = make_block(run.store, b, p.txs);
                const Store snapshot = run.store;  // what every task of this block reads
                tandem::Batch<TxTask> batch;
                batch.reserve(txs.size());
                for (std::size_t i = 0; i < txs.size(); ++i) batch.push({i, TxTask{txs[i], &snapshot}, 1});
                tandem::BatchResult<Verified> r =
                    co_await tandem::async_submit(engine, verify_op, std::move(batch), asio::use_awaitable);
                // Results are in task order: result i belongs to txs[i].
                const std::vector<Verified> verified(r.results.outputs().begin(), r.results.outputs().end());
                const auto decisions = commit_block(run.store, run.sequence, txs, verified);
                run.decisions.insert(run.decisions.end(), decisions.begin(), decisions.end());
                if (print) {
                    std::size_t count[5] = {};
                    for (Decision d : decisions) ++count[static_cast<int>(d)];
                    std::printf(
                        "block %2" PRIu64
                        ": %zu tx  %4zu commit  %4zu stale  %4zu conflict  %3zu insufficient  %2zu bad signature\n",
                        b, decisions.size(), count[0], count[1], count[4], count[2], count[3]);
                }
            }
        },
        asio::detached);
    io.run();
    return run;
}

/// The same workload with no engine: verification inline, one transaction after another.
RunResult run_sequentially(const Params& p) {
    RunResult run{{}, initial_store(p.keys), 0};
    for (std::uint64_t b = 0; b < p.blocks; ++b) {
        const std::vector<Tx> txs = make_block(run.store, b, p.txs);
        const Store snapshot = run.store;
        std::vector<Verified> verified;
        for (const Tx& tx : txs) verified.push_back(verify(TxTask{tx, &snapshot}));
        const auto decisions = commit_block(run.store, run.sequence, txs, verified);
        run.decisions.insert(run.decisions.end(), decisions.begin(), decisions.end());
    }
    return run;
}

std::uint64_t digest(const Store& store) {
    std::uint64_t h = 1469598103934665603ull;
    for (const Account& a : store) {
        h = (h ^ static_cast<std::uint64_t>(a.balance)) * 1099511628211ull;
        h = (h ^ a.version) * 1099511628211ull;
    }
    return h;
}

bool same(const RunResult& a, const RunResult& b) {
    if (a.decisions != b.decisions || a.sequence != b.sequence || a.store.size() != b.store.size()) return false;
    for (std::size_t k = 0; k < a.store.size(); ++k) {
        if (a.store[k].balance != b.store[k].balance || a.store[k].version != b.store[k].version) return false;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    Params p;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string_view a = argv[i];
        const std::size_t v = std::strtoull(argv[i + 1], nullptr, 10);
        if (a == "--blocks")
            p.blocks = v;
        else if (a == "--txs")
            p.txs = v;
        else if (a == "--keys" && v >= 17)
            p.keys = v;
        else {
            std::fprintf(stderr, "usage: %s [--blocks B] [--txs N] [--keys K>=17]\n", argv[0]);
            return 2;
        }
    }

    tandem::EngineConfig one_worker;
    one_worker.cpu_workers = 1;
    tandem::EngineConfig small_chunks;
    small_chunks.cpu_workers = 2;
    small_chunks.cpu_chunk = 7;  // many chunks, finishing in whatever order the threads run

    const RunResult a = run_on_engine(p, one_worker, true);
    const RunResult b = run_on_engine(p, small_chunks, false);
    const RunResult c = run_sequentially(p);

    std::int64_t money = 0, initial = 0;
    for (const Account& acc : a.store) money += acc.balance;
    for (const Account& acc : initial_store(p.keys)) initial += acc.balance;
    std::uint64_t commits = 0;
    for (Decision d : a.decisions) commits += d == Decision::Commit;

    std::printf("%zu transactions, %" PRIu64 " committed; final state digest %016" PRIx64 "\n", a.decisions.size(),
                commits, digest(a.store));
    int failures = 0;
    auto check = [&](bool ok, const char* what) {
        std::printf("%-60s %s\n", what, ok ? "ok" : "FAILED");
        if (!ok) ++failures;
    };
    check(a.decisions.size() == p.blocks * p.txs, "every transaction was decided");
    check(same(a, b), "1 worker and 2 workers with 7-task chunks agree");
    check(same(a, c), "the engine agrees with a sequential run");
    check(money == initial, "money is conserved");
    check(commits > 0 && commits < a.decisions.size(), "some transactions commit, some abort");
    std::printf("%s\n", failures == 0 ? "all checks passed" : "some checks FAILED");
    return failures == 0 ? 0 : 1;
}
