#pragma once
/// \file
/// Spin-then-park wake-up for one or more waiting threads: the one waiting mechanism of Tandem
/// (mailboxes, futures, admission and shutdown all wait through it).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

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
///
/// `SpinHistory` makes the spin adaptive: it remembers, for one waiting thread, whether its
/// last waits ended within the spin window (whether spinning would have caught the wake-up).
/// A waiter spins only while at least two of its last eight waits did, so a thread whose work
/// comes back to back keeps spinning and one serving sparse arrivals parks at once; the length
/// of a parked wait is still measured, so short waits turn spinning back on (a parked wait
/// counts as short up to twice the window: it includes the wake-up's own latency). Waits with
/// no spin window at all are not recorded.
class SpinHistory {
public:
    /// Whether the next wait should spin.
    bool pays() const noexcept { return __builtin_popcount(bits_ & 0xffu) >= 2; }
    /// Records one wait: `short_wait` when it ended within the spin window.
    void record(bool short_wait) noexcept { bits_ = (bits_ << 1) | (short_wait ? 1u : 0u); }

private:
    std::uint32_t bits_ = ~0u;  // a new waiter spins
};

struct SpinPolicy {
    std::chrono::nanoseconds spin{std::chrono::microseconds{50}};
    /// When set, the spin is adaptive (see `SpinHistory`); the waiter's own, used by one
    /// thread at a time.
    SpinHistory* history = nullptr;
    /// Yield the core to another runnable thread every few microseconds of spinning: for
    /// machines with fewer cores than busy threads, where the thread this one waits for may be
    /// queued behind it on its own core.
    bool yield = false;
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
        if (policy.history == nullptr || policy.spin.count() <= 0) {
            if (spin(ready, policy, Clock::time_point::max())) return;
            park(ready);
            return;
        }
        if (ready()) return;
        if (policy.history->pays()) {
            if (spin(ready, policy, Clock::time_point::max())) {
                policy.history->record(true);
                return;
            }
            park(ready);
            policy.history->record(false);
            return;
        }
        // Not spinning: time the parked wait, so a run of short ones turns spinning back on.
        const auto start = Clock::now();
        park(ready);
        policy.history->record(Clock::now() - start <= 2 * policy.spin);
    }

    /// Waits until `ready()` returns true or `deadline` passes; returns `ready()`.
    template <class Ready>
    bool wait_until(Ready&& ready, Clock::time_point deadline, SpinPolicy policy = {}) {
        if (deadline == Clock::time_point::max()) {
            wait(ready, policy);
            return true;
        }
        const bool adaptive = policy.history != nullptr && policy.spin.count() > 0;
        const bool spun = !adaptive || policy.history->pays();
        const auto start = Clock::now();
        if (spun && spin(ready, policy, deadline)) {
            if (adaptive) policy.history->record(true);
            return true;
        }
        timed_sleepers_.fetch_add(1, std::memory_order_seq_cst);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        bool ok;
        {
            std::unique_lock lock{mutex_};
            ok = cv_.wait_until(lock, deadline, ready);
        }
        timed_sleepers_.fetch_sub(1, std::memory_order_relaxed);
        // A wait that timed out says nothing about how soon answers come.
        if (adaptive && ok) policy.history->record(!spun && Clock::now() - start <= 2 * policy.spin);
        return ok;
    }

    /// Wakes every parked waiter; call it after publishing what the waiters check. Returns
    /// whether a waiter was parked (or about to park) and had to be woken.
    bool notify() noexcept {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        bool woke = false;
        if (sleepers_.load(std::memory_order_relaxed) != 0) {
            epoch_.fetch_add(1, std::memory_order_release);
            epoch_.notify_all();
            woke = true;
        }
        if (timed_sleepers_.load(std::memory_order_relaxed) != 0) {
            { std::lock_guard lock{mutex_}; }
            cv_.notify_all();
            woke = true;
        }
        return woke;
    }

    /// Threads parked or about to park (for tests that need every waiter parked).
    std::uint32_t sleepers() const noexcept {
        return sleepers_.load(std::memory_order_acquire) + timed_sleepers_.load(std::memory_order_acquire);
    }

private:
    /// Sleeps on the futex until `ready()`.
    template <class Ready>
    void park(Ready& ready) {
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
            if ((i & 63u) == 0) {
                if (Clock::now() >= end) return false;
                if (policy.yield) std::this_thread::yield();
            }
        }
    }

    std::atomic<std::uint32_t> epoch_{0};
    std::atomic<std::uint32_t> sleepers_{0};
    std::atomic<std::uint32_t> timed_sleepers_{0};
    std::mutex mutex_;
    std::condition_variable cv_;
};

}  // namespace tandem::actors
