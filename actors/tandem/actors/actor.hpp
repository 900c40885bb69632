#pragma once
/// \file
/// An actor: a thread that owns a mailbox and handles its messages one at a time.

#include <tandem/actors/mailbox.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

namespace tandem::actors {

/// Why a message was not delivered to `on_message`.
enum class Rejection : unsigned char {
    /// The actor had stopped (or was stopping and had already drained its mailbox).
    Stopped,
    /// The mailbox could not allocate room for the message.
    NoMemory,
};

/// What an actor does with its messages. Every call happens on the actor's own thread, one at
/// a time, so a behaviour needs no locks for its own state.
template <class Message>
class Behavior {
public:
    virtual ~Behavior() = default;
    /// Called once on the actor's thread before the first message (e.g. to bind a device).
    virtual void on_start() {}
    /// Handles one message.
    virtual void on_message(Message& message) = 0;
    /// Called whenever the mailbox is empty. Return true while the actor has background work
    /// to watch (e.g. GPU events in flight): the actor then polls instead of parking.
    virtual bool on_idle() { return false; }
    /// Called once, after the last message, before the thread exits.
    virtual void on_stop() {}
    /// Called for a message that will never reach `on_message` (see `Rejection`), exactly
    /// once per such message, on the sender's thread or on the thread that stops the actor.
    /// May run concurrently with itself, so it must be thread-safe. The default drops the
    /// message: override it whenever a message carries work that must not be lost.
    virtual void on_rejected(Message& /*message*/, Rejection /*why*/) noexcept {}
    /// Called on the actor's thread when `on_message` throws; the actor then goes on with the
    /// next message. The default ends the process: override it where an exception can happen.
    virtual void on_exception(Message& /*message*/, std::exception_ptr /*error*/) noexcept { std::terminate(); }
};

/// Tuning for one actor.
struct ActorOptions {
    /// Messages taken from the mailbox per dequeue.
    std::size_t bulk = 64;
    /// How long an idle actor spins before parking.
    SpinPolicy idle_spin{};
    /// Spin only while it pays: while at least two of the actor's last eight idle waits ended
    /// within the spin window (see `SpinHistory`); otherwise park at once.
    bool adaptive_spin = true;
};

/// A thread with a mailbox. Messages are handled in per-producer order, one at a time.
///
/// Every message sent is handed exactly once either to `on_message` or to `on_rejected`:
/// stop is orderly (`stop()` lets the actor drain every message already in its mailbox, calls
/// `on_stop()` and joins the thread), and a message that arrives too late for that -- sent
/// while the actor stops, or after -- is rejected with `Rejection::Stopped`. A send whose
/// mailbox cannot allocate is rejected with `Rejection::NoMemory` on the sender's thread.
///
/// How late messages are caught (a Dekker handshake, no counter on the send path): a sender
/// enqueues, issues a seq_cst fence (inside the mailbox's wake-up) and then reads `closed_`;
/// `stop()` joins the thread, stores `closed_`, issues a seq_cst fence and drains the
/// mailbox. Either the sender sees `closed_` and drains, or the stopper's drain sees the
/// message; the queue hands each message to one dequeuer only, so none is rejected twice, and
/// drains are serialised, so none is stranded between two of them.
template <class Message>
class Actor {
public:
    /// Starts the actor's thread. `behavior` must outlive the actor.
    Actor(Behavior<Message>& behavior, ActorOptions options = {})
        : behavior_{behavior}, options_{options}, thread_{[this] { run(); }} {}

    Actor(const Actor&) = delete;
    Actor& operator=(const Actor&) = delete;

    ~Actor() { stop(); }

    /// Sends a message from any thread. Returns false if it was rejected (see the class
    /// comment): `on_rejected` has then been called, or will be by `stop()`.
    bool send(Message message) {
        if (consume_injected_failure() || !mailbox_.send(message)) return reject(message, Rejection::NoMemory);
        return after_send();
    }

    /// Whether the actor's thread is parked (a hint: see `Mailbox::consumer_parked`).
    bool parked() const noexcept { return mailbox_.consumer_parked(); }

    /// Sends through a producer token made by `make_producer_token()`.
    bool send(typename Mailbox<Message>::ProducerToken& token, Message message) {
        if (consume_injected_failure() || !mailbox_.send(token, message)) return reject(message, Rejection::NoMemory);
        return after_send();
    }

    /// Makes the next `n` sends fail as if the mailbox could not allocate (fault injection
    /// for tests of the `NoMemory` path).
    void inject_send_failures(std::size_t n) noexcept { failures_to_inject_.store(n, std::memory_order_relaxed); }

    /// A token for a thread that sends to this actor often.
    typename Mailbox<Message>::ProducerToken make_producer_token() {
        return mailbox_.make_producer_token();
    }

    /// Drains the mailbox, calls `on_stop()` and joins the thread. Idempotent; call it from
    /// any thread but the actor's own.
    void stop() {
        stop_requested_.store(true, std::memory_order_release);
        mailbox_.poke();
        if (thread_.joinable()) thread_.join();
        closed_.store(true, std::memory_order_seq_cst);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        drain_rejected();
    }

    /// True once `stop()` has joined the thread: sends are rejected from then on.
    bool stopped() const noexcept { return closed_.load(std::memory_order_acquire); }

    /// The id of the actor's thread (for "runs on which thread" checks).
    std::thread::id thread_id() const noexcept { return thread_.get_id(); }

private:
    bool consume_injected_failure() noexcept {
        std::size_t n = failures_to_inject_.load(std::memory_order_relaxed);
        while (n != 0 && !failures_to_inject_.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {}
        return n != 0;
    }

    bool reject(Message& message, Rejection why) noexcept {
        behavior_.on_rejected(message, why);
        return false;
    }

    /// The sender's half of the handshake; the mailbox's wake-up already issued the fence.
    bool after_send() noexcept {
        if (!closed_.load(std::memory_order_seq_cst)) return true;
        drain_rejected();  // may reject our message, or leave that to a concurrent drain
        return false;
    }

    /// Rejects whatever is left in the mailbox (after the thread has gone). One drainer at a
    /// time: moodycamel's dequeue may report a sub-queue empty while another consumer's failed
    /// attempt is still settling its counters, which could strand a message between two
    /// concurrent drains. A cold path (late messages only).
    void drain_rejected() noexcept {
        std::lock_guard lock{drain_mutex_};
        Message m{};
        while (mailbox_.try_receive(m)) {
            behavior_.on_rejected(m, Rejection::Stopped);
            m = Message{};
        }
    }

    void run() {
        std::array<Message, 64> buffer{};
        const std::size_t bulk = options_.bulk < buffer.size() ? options_.bulk : buffer.size();
        SpinHistory history;
        SpinPolicy idle = options_.idle_spin;
        if (options_.adaptive_spin) idle.history = &history;
        behavior_.on_start();
        for (;;) {
            const std::size_t n = mailbox_.try_receive_bulk(buffer.begin(), bulk);
            for (std::size_t i = 0; i < n; ++i) {
                try {
                    behavior_.on_message(buffer[i]);
                } catch (...) {
                    behavior_.on_exception(buffer[i], std::current_exception());
                }
                buffer[i] = Message{};  // drop references held by the message now
            }
            if (n != 0) continue;
            if (behavior_.on_idle()) {
                cpu_relax();
                continue;
            }
            // Read the stop flag after an empty dequeue: everything sent before stop() was
            // called is visible by now (the flag is released after those sends), so the
            // mailbox is drained once we get here with the flag set and still nothing to do.
            if (stop_requested_.load(std::memory_order_acquire)) {
                if (mailbox_.size_approx() != 0) continue;
                break;
            }
            mailbox_.wait([this] { return stop_requested_.load(std::memory_order_acquire); }, idle);
        }
        behavior_.on_stop();
    }

    Behavior<Message>& behavior_;
    ActorOptions options_;
    Mailbox<Message> mailbox_;
    std::atomic<bool> stop_requested_{false};
    std::atomic<bool> closed_{false};
    std::atomic<std::size_t> failures_to_inject_{0};
    std::mutex drain_mutex_;
    std::thread thread_;  // last: starts after every other member is built
};

}  // namespace tandem::actors
