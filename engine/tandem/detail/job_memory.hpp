#pragma once
/// \file
/// Where batch jobs live (engine-internal; installed only because the templates need it).
///
/// A job (its control block included) is 1.5-2 KiB, above what glibc's per-thread cache
/// keeps (1 KiB), so every batch took the arena's locked path, and a thread's arena grew and
/// shrank its heap (mprotect, page faults) as batches came and went: with two submitters on a
/// 2-core machine, a third of the engine's CPU went to malloc. Jobs are allocated instead from
/// a small cache per thread of recently freed job-sized blocks, refilled across threads: a job
/// is usually made on a submitter's thread and freed on a worker's.

#include <cstddef>
#include <new>

namespace tandem::detail {

/// The per-thread cache of job-sized blocks (engine/src/job_memory.cpp). Blocks come from
/// `::operator new` and are kept by size class (256-byte steps up to `max_bytes`), at most
/// `per_class` per class and thread; beyond that a thread hands a batch of them to a queue
/// shared by every thread (bounded; past its bound they go back to `::operator delete`), from
/// which a thread whose own list is empty takes a batch. A thread's list goes back to the heap
/// when the thread exits. Larger requests go straight to the heap.
struct JobMemory {
    static constexpr std::size_t step = 256;
    static constexpr std::size_t max_bytes = 4096;
    static constexpr std::size_t per_class = 64;
    static void* allocate(std::size_t bytes);
    static void deallocate(void* p, std::size_t bytes) noexcept;
};

/// An allocator for `std::allocate_shared` of jobs, through `JobMemory`.
template <class T>
struct JobAllocator {
    using value_type = T;
    JobAllocator() noexcept = default;
    template <class U>
    JobAllocator(const JobAllocator<U>&) noexcept {}  // NOLINT: rebinding is implicit
    T* allocate(std::size_t n) {
        static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__, "job blocks have the default alignment");
        return static_cast<T*>(JobMemory::allocate(n * sizeof(T)));
    }
    void deallocate(T* p, std::size_t n) noexcept { JobMemory::deallocate(p, n * sizeof(T)); }
    template <class U>
    bool operator==(const JobAllocator<U>&) const noexcept {
        return true;
    }
};

}  // namespace tandem::detail
