#pragma once
/// \file
/// An actor: a thread that owns a mailbox and handles its messages one at a time.

#include <tandem/actors/mailbox.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <functional>
#include <string>
#include <thread>
#include <utility>

namespace tandem::actors {

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
};

/// Tuning for one actor.
struct ActorOptions {
    /// Messages taken from the mailbox per dequeue.
    std::size_t bulk = 64;
    /// How long an idle actor spins before parking.
    SpinPolicy idle_spin{};
};

/// A thread with a mailbox. Messages are handled in per-producer order, one at a time.
///
/// Stop is orderly: `stop()` lets the actor drain every message already in its mailbox, calls
/// `on_stop()`, and joins the thread. Whoever owns the actor guarantees that nothing is sent
/// after `stop()` begins (a message sent later is destroyed unhandled with the mailbox).
template <class Message>
class Actor {
public:
    /// Starts the actor's thread. `behavior` must outlive the actor.
    Actor(Behavior<Message>& behavior, ActorOptions options = {})
        : behavior_{behavior}, options_{options}, thread_{[this] { run(); }} {}

    Actor(const Actor&) = delete;
    Actor& operator=(const Actor&) = delete;

    ~Actor() { stop(); }

    /// Sends a message from any thread.
    bool send(Message message) { return mailbox_.send(std::move(message)); }

    /// Sends through a producer token made by `make_producer_token()`.
    bool send(typename Mailbox<Message>::ProducerToken& token, Message message) {
        return mailbox_.send(token, std::move(message));
    }

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
    }

    /// The id of the actor's thread (for "runs on which thread" checks).
    std::thread::id thread_id() const noexcept { return thread_.get_id(); }

private:
    void run() {
        std::array<Message, 64> buffer{};
        const std::size_t bulk = options_.bulk < buffer.size() ? options_.bulk : buffer.size();
        behavior_.on_start();
        for (;;) {
            const std::size_t n = mailbox_.try_receive_bulk(buffer.begin(), bulk);
            for (std::size_t i = 0; i < n; ++i) {
                behavior_.on_message(buffer[i]);
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
            mailbox_.wait([this] { return stop_requested_.load(std::memory_order_acquire); },
                          options_.idle_spin);
        }
        behavior_.on_stop();
    }

    Behavior<Message>& behavior_;
    ActorOptions options_;
    Mailbox<Message> mailbox_;
    std::atomic<bool> stop_requested_{false};
    std::thread thread_;  // last: starts after every other member is built
};

}  // namespace tandem::actors
