#pragma once
/// \file
/// Tasks and batches. A batch keeps its columns apart (payloads contiguous, ids and costs
/// compressed while they follow a pattern), so a map over it streams memory like a raw array
/// and a GPU chunk is one contiguous copy.

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <memory_resource>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

namespace tandem {

/// One unit of work: an id the caller chooses, the payload, and a relative cost estimate.
template <class T>
struct Task {
    /// Identifies the task in its batch's results; unique within a batch.
    std::uint64_t id = 0;
    /// The input handed to the op.
    T payload{};
    /// Relative cost (any unit, the same for every task of an op); 1 when unknown. Where the
    /// tasks of a batch differ in cost, the engine cuts the batch's shares and chunks by cost,
    /// not by count, and its performance models count cost (README, "Where a batch runs"). A
    /// cost of 0 counts as 1: no task is free.
    std::uint32_t est_cost = 1;
};

/// Task ids of a batch: stored as a dense range `first, first+1, …` until an id breaks the
/// pattern, then as a vector. Moves from the batch to its results without a copy.
class IdColumn {
public:
    /// The id at position `i`.
    std::uint64_t operator[](std::size_t i) const noexcept {
        return ids_.empty() ? first_ + i : ids_[i];
    }
    /// Number of ids.
    std::size_t size() const noexcept { return size_; }
    /// True while ids strictly increase (then no two can be equal).
    bool strictly_increasing() const noexcept { return increasing_; }
    /// True while ids are `first, first+1, …` (nothing stored per task).
    bool dense() const noexcept { return ids_.empty(); }

    /// Appends an id.
    void push(std::uint64_t id) {
        if (size_ == 0) {
            first_ = id;
        } else {
            const std::uint64_t last = (*this)[size_ - 1];
            if (id <= last) increasing_ = false;
            if (ids_.empty() && id != last + 1) materialize();
        }
        if (!ids_.empty()) ids_.push_back(id);
        ++size_;
    }

    /// Makes the ids `first, first+1, …, first+n-1` (nothing stored per task).
    static IdColumn dense_range(std::uint64_t first, std::size_t n) {
        IdColumn c;
        c.first_ = first;
        c.size_ = n;
        return c;
    }

    /// Reserves room for `n` ids once they no longer follow the dense pattern.
    void reserve(std::size_t n) { reserve_ = n; }

    /// True when no id appears twice. O(1) for ascending ids, else O(n) expected (hashing).
    bool unique() const;

private:
    void materialize() {
        ids_.reserve(reserve_ > size_ + 1 ? reserve_ : size_ + 1);
        for (std::size_t i = 0; i < size_; ++i) ids_.push_back(first_ + i);
    }

    std::uint64_t first_ = 0;
    std::size_t size_ = 0;
    std::size_t reserve_ = 0;
    bool increasing_ = true;
    std::vector<std::uint64_t> ids_;
};

/// Estimated costs of a batch: one shared value until a task differs, then a vector.
class CostColumn {
public:
    /// The cost of task `i`.
    std::uint32_t operator[](std::size_t i) const noexcept {
        return costs_.empty() ? uniform_ : costs_[i];
    }
    /// Sum of all costs.
    std::uint64_t total() const noexcept { return total_; }
    /// The costs, one per task, or null while every task has the same cost (`uniform_cost()`).
    const std::uint32_t* data() const noexcept { return costs_.empty() ? nullptr : costs_.data(); }
    /// The cost every task has, while `data()` is null.
    std::uint32_t uniform_cost() const noexcept { return uniform_; }

    /// `n` tasks of cost `cost` each.
    static CostColumn uniform(std::uint32_t cost, std::size_t n) {
        CostColumn c;
        c.uniform_ = cost;
        c.total_ = std::uint64_t{cost} * n;
        return c;
    }

    /// Appends a cost; `size` is the number of costs before this one.
    void push(std::uint32_t cost, std::size_t size) {
        if (size == 0) uniform_ = cost;
        if (costs_.empty() && cost != uniform_) costs_.assign(size, uniform_);
        if (!costs_.empty()) costs_.push_back(cost);
        total_ += cost;
    }

private:
    std::uint32_t uniform_ = 1;
    std::uint64_t total_ = 0;
    std::vector<std::uint32_t> costs_;
};

/// The heap as a memory resource, like `std::pmr::new_delete_resource()` but with the plain
/// `operator new` for the alignments it gives anyway. (libstdc++'s new_delete_resource always
/// calls the aligned `operator new`, which glibc serves on its slower memalign path: ~10% of
/// the instructions of a 1-task batch, measured with callgrind.) Never destroyed, so a batch
/// may be freed at any time, even during static destruction.
class HeapMemory final : public std::pmr::memory_resource {
    static constexpr std::size_t plain = __STDCPP_DEFAULT_NEW_ALIGNMENT__;
    void* do_allocate(std::size_t bytes, std::size_t alignment) override {
        return alignment <= plain ? ::operator new(bytes) : ::operator new(bytes, std::align_val_t{alignment});
    }
    void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
        if (alignment <= plain) {
            ::operator delete(p, bytes);
        } else {
            ::operator delete(p, bytes, std::align_val_t{alignment});
        }
    }
    bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

/// The one `HeapMemory`.
inline std::pmr::memory_resource* heap_memory() noexcept {
    static HeapMemory* const heap = new HeapMemory{};
    return heap;
}

/// Where a batch's payloads go when no memory is named: `std::pmr::get_default_resource()`,
/// except that the standard default (new_delete_resource) is replaced by `heap_memory()`.
inline std::pmr::memory_resource* default_batch_memory() noexcept {
    std::pmr::memory_resource* r = std::pmr::get_default_resource();
    return r == std::pmr::new_delete_resource() ? heap_memory() : r;
}

/// A batch of tasks of one payload type, submitted as a whole.
///
/// Payloads live in one contiguous array allocated from `memory()` (by default the heap;
/// `Engine::pinned_memory()` gives page-locked memory a GPU can copy from directly).
template <class T>
class Batch {
public:
    using task_type = Task<T>;
    using payload_type = T;

    /// An empty batch on the heap (`default_batch_memory()`).
    Batch() : payloads_{default_batch_memory()} {}
    /// An empty batch whose payloads are allocated from `memory`.
    explicit Batch(std::pmr::memory_resource* memory) : payloads_{memory} {}
    /// A batch of the given tasks, in order.
    Batch(std::initializer_list<Task<T>> tasks) : Batch{} { append(tasks.begin(), tasks.end()); }
    /// A batch of the given tasks, in order.
    explicit Batch(const std::vector<Task<T>>& tasks) : Batch{} { append(tasks.begin(), tasks.end()); }

    Batch(const Batch&) = default;
    Batch& operator=(const Batch&) = default;
    /// A moved-from batch is empty (borrowed payloads included).
    Batch(Batch&& o) noexcept
        : payloads_{std::move(o.payloads_)}, borrowed_{std::exchange(o.borrowed_, false)},
          view_{std::exchange(o.view_, {})}, owner_{std::move(o.owner_)},
          view_memory_{std::exchange(o.view_memory_, nullptr)}, priority_{o.priority_},
          ids_{std::exchange(o.ids_, IdColumn{})}, costs_{std::exchange(o.costs_, CostColumn{})} {
        o.payloads_.clear();
    }
    Batch& operator=(Batch&& o) {
        if (this != &o) {
            payloads_ = std::move(o.payloads_);
            o.payloads_.clear();  // moved element by element when the two memories differ
            borrowed_ = std::exchange(o.borrowed_, false);
            view_ = std::exchange(o.view_, {});
            owner_ = std::move(o.owner_);
            view_memory_ = std::exchange(o.view_memory_, nullptr);
            priority_ = o.priority_;
            ids_ = std::exchange(o.ids_, IdColumn{});
            costs_ = std::exchange(o.costs_, CostColumn{});
        }
        return *this;
    }

    /// A batch of `payloads` in one go, with ids `first_id, first_id+1, …` and cost 1 each
    /// (a bulk copy: nothing is done per task but copying the payload).
    static Batch dense(std::span<const T> payloads, std::uint64_t first_id = 0,
                       std::pmr::memory_resource* memory = default_batch_memory()) {
        Batch b{memory};
        b.payloads_.assign(payloads.begin(), payloads.end());
        b.ids_ = IdColumn::dense_range(first_id, payloads.size());
        b.costs_ = CostColumn::uniform(1, payloads.size());
        return b;
    }

    /// A batch over payloads the caller keeps, with ids `first_id, first_id+1, …` and cost 1
    /// each: nothing is copied. `owner` keeps the payloads alive for as long as the batch,
    /// or the engine's job made from it, reads them (the engine lets go of it before the
    /// batch's future is ready, as it frees payloads in memory the program gave). `memory`
    /// says where they live: `Engine::pinned_memory()` when they are page-locked memory from
    /// it (a GPU then copies straight from them), null for any other memory. The payloads
    /// must not change until the batch's future is ready. Writing through `payloads()` or
    /// appending first copies them into storage of the batch's own (`default_batch_memory()`).
    static Batch borrow(std::span<const T> payloads, std::shared_ptr<const void> owner,
                        std::pmr::memory_resource* memory = nullptr, std::uint64_t first_id = 0) {
        static_assert(std::is_copy_constructible_v<T>, "borrowed payloads are read in place: T must be copyable");
        Batch b;
        b.borrowed_ = true;
        b.view_ = payloads;
        b.owner_ = std::move(owner);
        b.view_memory_ = memory;
        b.ids_ = IdColumn::dense_range(first_id, payloads.size());
        b.costs_ = CostColumn::uniform(1, payloads.size());
        return b;
    }

    /// True while the payloads are borrowed (`borrow`), not the batch's own.
    bool borrowed() const noexcept { return borrowed_; }

    /// Appends a task.
    void push(Task<T> task) { push(task.id, std::move(task.payload), task.est_cost); }

    /// Appends a task built from its parts.
    void push(std::uint64_t id, T payload, std::uint32_t est_cost = 1) {
        own();
        payloads_.push_back(std::move(payload));
        ids_.push(id);
        costs_.push(est_cost, payloads_.size() - 1);
    }

    /// Reserves room for `n` tasks.
    void reserve(std::size_t n) {
        own();
        payloads_.reserve(n);
        ids_.reserve(n);
    }

    /// Number of tasks.
    std::size_t size() const noexcept { return borrowed_ ? view_.size() : payloads_.size(); }
    /// True when the batch has no tasks.
    bool empty() const noexcept { return size() == 0; }

    /// The task at position `i`, copied out.
    Task<T> operator[](std::size_t i) const { return {ids_[i], payloads()[i], costs_[i]}; }
    /// The id of task `i`.
    std::uint64_t id(std::size_t i) const noexcept { return ids_[i]; }
    /// The cost of task `i`.
    std::uint32_t est_cost(std::size_t i) const noexcept { return costs_[i]; }
    /// The sum of every task's cost.
    std::uint64_t total_cost() const noexcept { return costs_.total(); }
    /// The costs, in task order.
    const CostColumn& costs() const noexcept { return costs_; }

    /// Every payload, in task order, contiguous.
    std::span<const T> payloads() const noexcept {
        return borrowed_ ? view_ : std::span<const T>{payloads_.data(), payloads_.size()};
    }
    /// Every payload, in task order, contiguous and writable (borrowed ones copied first).
    std::span<T> payloads() {
        own();
        return {payloads_.data(), payloads_.size()};
    }

    /// The ids, in task order.
    const IdColumn& ids() const noexcept { return ids_; }
    /// Takes the ids out (the engine moves them into the results).
    IdColumn take_ids() noexcept { return std::move(ids_); }

    /// Frees the payloads' memory (ids and costs stay; the batch then holds no payloads).
    void release_payloads() noexcept {
        payloads_.clear();
        payloads_.shrink_to_fit();
        view_ = {};
        owner_.reset();
    }

    /// Where the payloads are allocated (a borrowed batch: the memory `borrow` named, or
    /// `heap_memory()`, i.e. not page-locked, when it named none).
    std::pmr::memory_resource* memory() const noexcept {
        if (borrowed_) return view_memory_ ? view_memory_ : heap_memory();
        return payloads_.get_allocator().resource();
    }

    /// How a CPU worker orders this batch against the other batches it serves: it runs chunks
    /// of the highest-priority batches it holds, in turn among equals, before any of lower
    /// priority. Default 0; a latency-sensitive batch can go above it, background work below.
    void set_priority(int priority) noexcept { priority_ = priority; }
    int priority() const noexcept { return priority_; }

private:
    template <class It>
    void append(It first, It last) {
        reserve(static_cast<std::size_t>(last - first));
        for (; first != last; ++first) push(first->id, first->payload, first->est_cost);
    }

    /// Makes borrowed payloads the batch's own (a copy), before anything writes them.
    void own() {
        if (!borrowed_) return;
        if constexpr (std::is_copy_constructible_v<T>) payloads_.assign(view_.begin(), view_.end());
        borrowed_ = false;
        view_ = {};
        owner_.reset();
    }

    std::pmr::vector<T> payloads_;
    bool borrowed_ = false;
    std::span<const T> view_;              // borrowed payloads
    std::shared_ptr<const void> owner_;    // keeps them alive
    std::pmr::memory_resource* view_memory_ = nullptr;
    int priority_ = 0;
    IdColumn ids_;
    CostColumn costs_;
};

}  // namespace tandem
