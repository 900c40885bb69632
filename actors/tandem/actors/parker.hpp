#pragma once
/// \file
/// Spin-then-park wake-up for one or more waiting threads: the one waiting mechanism of Tandem
/// (mailboxes, futures, admission and shutdown all wait through it).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

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

/// A wake-up signal between producers and parked waiters: `notify()` costs a fence and an
/// atomic load, and no lock or system call unless a waiter is actually parked.
///
/// Protocol (Dekker-style): a producer publishes its data and then calls `notify()`, which
/// issues a seq_cst fence and reads the sleeper counts; a waiter increments its count, issues a
/// seq_cst fence and re-checks its condition before it sleeps. The two fences guarantee that at
/// least one side sees the other, so a wake-up is never lost.
///
/// Two ways to sleep, one protocol: an untimed wait sleeps on `epoch_` (a futex: the wake-up is
/// one system call and the woken thread runs at once; measured on a 2-core box, a condition
/// variable there made a 1-task round trip 70 µs instead of 6 µs). `epoch_` is read before the
/// waiter announces itself, so a notify that lands between the announcement and the sleep
/// changes it and the sleep returns at once. A wait with a deadline (rare: `wait_for` on a
/// future) sleeps on a condition variable, which has timeouts; the notifier takes and drops its
/// mutex before notifying, which puts every such waiter that checked too early inside its wait.
class Parker {
public:
    using Clock = std::chrono::steady_clock;

    /// Waits until `ready()` returns true: spins for `policy.spin`, then parks.
    /// `ready` must be safe to call repeatedly and from this thread only.
    template <class Ready>
    void wait(Ready&& ready, SpinPolicy policy = {}) {
        if (spin(ready, policy, Clock::time_point::max())) return;
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

    /// Waits until `ready()` returns true or `deadline` passes; returns `ready()`.
    template <class Ready>
    bool wait_until(Ready&& ready, Clock::time_point deadline, SpinPolicy policy = {}) {
        if (deadline == Clock::time_point::max()) {
            wait(ready, policy);
            return true;
        }
        if (spin(ready, policy, deadline)) return true;
        timed_sleepers_.fetch_add(1, std::memory_order_seq_cst);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        bool ok;
        {
            std::unique_lock lock{mutex_};
            ok = cv_.wait_until(lock, deadline, ready);
        }
        timed_sleepers_.fetch_sub(1, std::memory_order_relaxed);
        return ok;
    }

    /// Wakes every parked waiter; call it after publishing what the waiters check.
    void notify() noexcept {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (sleepers_.load(std::memory_order_relaxed) != 0) {
            epoch_.fetch_add(1, std::memory_order_release);
            epoch_.notify_all();
        }
        if (timed_sleepers_.load(std::memory_order_relaxed) != 0) {
            { std::lock_guard lock{mutex_}; }
            cv_.notify_all();
        }
    }

    /// Threads parked or about to park (for tests that need every waiter parked).
    std::uint32_t sleepers() const noexcept {
        return sleepers_.load(std::memory_order_acquire) + timed_sleepers_.load(std::memory_order_acquire);
    }

private:
    template <class Ready>
    static bool spin(Ready& ready, SpinPolicy policy, Clock::time_point deadline) {
        if (ready()) return true;
        if (policy.spin.count() <= 0) return false;
        const auto now = Clock::now();
        const auto end = deadline - now < policy.spin ? deadline : now + policy.spin;
        for (unsigned i = 1;; ++i) {
            cpu_relax();
            if (ready()) return true;
            // Reading the clock costs ~20 ns; every 64 pauses (~2-8 µs) is often enough.
            if ((i & 63u) == 0 && Clock::now() >= end) return false;
        }
    }

    std::atomic<std::uint32_t> epoch_{0};
    std::atomic<std::uint32_t> sleepers_{0};
    std::atomic<std::uint32_t> timed_sleepers_{0};
    std::mutex mutex_;
    std::condition_variable cv_;
};

}  // namespace tandem::actors
