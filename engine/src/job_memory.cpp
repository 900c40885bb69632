// The per-thread cache of job-sized blocks (see tandem/detail/job_memory.hpp).
#include <tandem/detail/job_memory.hpp>

#include <concurrentqueue.h>

#include <array>
#include <cstdint>

// Every job from the heap under a sanitizer, so that it sees a job used after free (ASan,
// HWASan) and each job's synchronisation afresh (TSan: a reused block would carry the clocks
// of the job before). -DTANDEM_JOB_CACHE=0 does the same for Valgrind.
#if !defined(TANDEM_JOB_CACHE)
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(__SANITIZE_HWADDRESS__)
#define TANDEM_JOB_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer) || \
    __has_feature(hwaddress_sanitizer)
#define TANDEM_JOB_CACHE 0
#endif
#endif
#endif
#ifndef TANDEM_JOB_CACHE
#define TANDEM_JOB_CACHE 1
#endif

namespace tandem::detail {

namespace {

constexpr std::size_t classes = JobMemory::max_bytes / JobMemory::step;

struct Block {
    Block* next;
};

/// Zero-initialised and trivially destructible: reading it costs no guard. `Cleaner`, made on
/// the thread's first push, gives its blocks back when the thread exits; `gone` is set then, so
/// a job freed later on that thread (by another thread-local's destructor) goes to the heap.
struct Cache {
    Block* heads[classes];
    std::uint16_t counts[classes];
    bool cleaner;
    bool gone;
};
thread_local Cache cache;

struct Cleaner {
    ~Cleaner() {
        for (std::size_t c = 0; c < classes; ++c) {
            while (Block* b = cache.heads[c]) {
                cache.heads[c] = b->next;
                ::operator delete(b);
            }
            cache.counts[c] = 0;
        }
        cache.gone = true;
    }
};

bool try_make_cleaner() noexcept {
    try {
        thread_local Cleaner cleaner;
        (void)cleaner;
        cache.cleaner = true;
    } catch (...) {
    }
    return cache.cleaner;
}

void push(std::size_t c, void* p) noexcept {
    auto* b = ::new (p) Block{cache.heads[c]};
    cache.heads[c] = b;
    ++cache.counts[c];
}

void* pop(std::size_t c) noexcept {
    Block* b = cache.heads[c];
    cache.heads[c] = b->next;
    --cache.counts[c];
    return b;
}

std::size_t class_of(std::size_t bytes) noexcept { return (bytes + JobMemory::step - 1) / JobMemory::step - 1; }

/// Blocks move between threads in batches through one shared queue per size class: a job is
/// usually made on its submitter's thread and freed on a worker's (whichever drops it last),
/// so a cache per thread alone would fill on the workers and stay empty on the submitters.
/// Never destroyed (reachable from a static: leak checkers see the blocks as reachable).
constexpr std::size_t move_batch = 32;
constexpr std::size_t shared_cap = 8192;  // blocks per class in the shared queue

using SharedQueue = moodycamel::ConcurrentQueue<void*>;
SharedQueue& shared_queue(std::size_t c) {
    static auto* queues = new std::array<SharedQueue, classes>{};
    return (*queues)[c];
}

}  // namespace

void* JobMemory::allocate(std::size_t bytes) {
    if (!TANDEM_JOB_CACHE || bytes == 0 || bytes > max_bytes) return ::operator new(bytes);
    const std::size_t c = class_of(bytes);
    if (Block* b = cache.heads[c]) {
        cache.heads[c] = b->next;
        --cache.counts[c];
        return b;
    }
    // Empty here: take a batch freed on other threads, keep all but one.
    void* got[move_batch];
    const std::size_t n = shared_queue(c).try_dequeue_bulk(got, move_batch);
    if (n == 0) return ::operator new((c + 1) * step);
    if (n > 1 && !cache.gone && (cache.cleaner || try_make_cleaner())) {
        for (std::size_t i = 1; i < n; ++i) push(c, got[i]);
    } else {
        for (std::size_t i = 1; i < n; ++i) ::operator delete(got[i]);
    }
    return got[0];
}

void JobMemory::deallocate(void* p, std::size_t bytes) noexcept {
    if (!TANDEM_JOB_CACHE || bytes == 0 || bytes > max_bytes || cache.gone) {
        ::operator delete(p);
        return;
    }
    const std::size_t c = class_of(bytes);
    if (!cache.cleaner && !try_make_cleaner()) {  // no record to free them at exit: keep nothing
        ::operator delete(p);
        return;
    }
    if (cache.counts[c] >= per_class) {
        // Full here: hand a batch to the threads that allocate (or to the heap, past the cap).
        void* out[move_batch];
        std::size_t n = 0;
        for (; n < move_batch; ++n) out[n] = pop(c);
        SharedQueue& q = shared_queue(c);
        if (q.size_approx() >= shared_cap || !q.enqueue_bulk(out, n)) {
            for (std::size_t i = 0; i < n; ++i) ::operator delete(out[i]);
        }
    }
    push(c, p);
}

}  // namespace tandem::detail
