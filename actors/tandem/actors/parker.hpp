#pragma once
/// \file
/// Spin-then-park wake-up for one or more waiting threads.

#include <atomic>
#include <chrono>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace tandem::actors {

/// Tells the core that this thread is spinning (PAUSE on x86), so a sibling hyper-thread runs.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

/// How long a waiter spins before it parks in the kernel.
///
/// Spinning keeps a busy pipeline free of system calls (a futex wake costs ~2-5 µs on the waker
/// and far more on the woken thread); parking keeps an idle one from burning a core.
struct SpinPolicy {
    std::chrono::nanoseconds spin{std::chrono::microseconds{50}};
};

/// A wake-up signal between producers and parked waiters: `notify()` costs an atomic load
/// and no system call unless a waiter is actually parked.
///
/// Protocol (Dekker-style): a producer publishes its data and then calls `notify()`, which
/// issues a seq_cst fence and reads `sleepers_`; a waiter increments `sleepers_`, issues a
/// seq_cst fence and re-checks its condition before it sleeps. The two fences guarantee that
/// at least one side sees the other, so a wake-up is never lost. `epoch_` is what the waiter
/// sleeps on: it is read before the waiter announces itself, so a notify that lands between
/// the announcement and the futex wait changes the value and the wait returns at once.
class Parker {
public:
    /// Waits until `ready()` returns true: spins for `policy.spin`, then parks.
    /// `ready` must be safe to call repeatedly and from this thread only.
    template <class Ready>
    void wait(Ready&& ready, SpinPolicy policy = {}) {
        if (spin(ready, policy)) return;
        for (;;) {
            const std::uint32_t seen = epoch_.load(std::memory_order_acquire);
            sleepers_.fetch_add(1, std::memory_order_seq_cst);
            std::atomic_thread_fence(std::memory_order_seq_cst);
            if (ready()) {
                sleepers_.fetch_sub(1, std::memory_order_relaxed);
                return;
            }
            epoch_.wait(seen, std::memory_order_acquire);
            sleepers_.fetch_sub(1, std::memory_order_relaxed);
            if (ready()) return;
        }
    }

    /// Wakes every parked waiter; call it after publishing what the waiters check.
    void notify() noexcept {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (sleepers_.load(std::memory_order_relaxed) != 0) {
            epoch_.fetch_add(1, std::memory_order_release);
            epoch_.notify_all();
        }
    }

private:
    template <class Ready>
    static bool spin(Ready& ready, SpinPolicy policy) {
        if (ready()) return true;
        if (policy.spin.count() <= 0) return false;
        const auto deadline = std::chrono::steady_clock::now() + policy.spin;
        for (unsigned i = 1;; ++i) {
            cpu_relax();
            if (ready()) return true;
            // Reading the clock costs ~20 ns; every 64 pauses (~2-8 µs) is often enough.
            if ((i & 63u) == 0 && std::chrono::steady_clock::now() >= deadline) return false;
        }
    }

    std::atomic<std::uint32_t> epoch_{0};
    std::atomic<std::uint32_t> sleepers_{0};
};

}  // namespace tandem::actors
