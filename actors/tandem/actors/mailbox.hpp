#pragma once
/// \file
/// A multi-producer, single-consumer mailbox on moodycamel::ConcurrentQueue.

#include <tandem/actors/parker.hpp>

#include <concurrentqueue.h>

#include <atomic>
#include <cstddef>
#include <utility>

namespace tandem::actors {

/// A multi-producer, single-consumer queue of messages with spin-then-park wake-up.
///
/// Order: messages from one producer arrive in the order they were sent (moodycamel keeps a
/// sub-queue per producer); messages from different producers interleave in no fixed order.
/// Sending is lock-free and makes no system call unless the consumer is parked.
/// The mailbox does not bound itself: its owner bounds what may be in flight (the engine's
/// admission limit bounds every mailbox it owns).
template <class Message>
class Mailbox {
public:
    using Queue = moodycamel::ConcurrentQueue<Message>;
    /// A producer token gives a thread its own sub-queue: cheaper sends, FIFO per token.
    using ProducerToken = moodycamel::ProducerToken;

    Mailbox() = default;
    Mailbox(const Mailbox&) = delete;
    Mailbox& operator=(const Mailbox&) = delete;

    /// Makes a token for a thread that sends often (one token per sending thread).
    ProducerToken make_producer_token() { return ProducerToken{queue_}; }

    /// Sends from any thread. Returns false only if memory for the queue ran out; the
    /// message is then left with the caller. `notify()` ends with a seq_cst fence, which the
    /// actor's late-send check relies on.
    bool send(Message& message) {
        if (!queue_.enqueue(std::move(message))) return false;
        parker_.notify();
        return true;
    }

    /// Sends through the caller's token (the token must belong to this mailbox).
    bool send(ProducerToken& token, Message& message) {
        if (!queue_.enqueue(token, std::move(message))) return false;
        parker_.notify();
        return true;
    }

    bool send(Message&& message) { return send(message); }

    /// Whether the consumer is parked (or about to park): a message sent now costs it a
    /// wake-up. A hint, for senders that choose how to wait for the answer.
    bool consumer_parked() const noexcept { return parker_.sleepers() != 0; }
    bool send(ProducerToken& token, Message&& message) { return send(token, message); }

    /// Takes one message without waiting. Any thread (the queue is multi-consumer); used to
    /// drain a stopped actor's mailbox.
    bool try_receive(Message& out) { return queue_.try_dequeue(out); }

    /// Takes up to `max` messages without waiting. Consumer thread only.
    template <class OutputIt>
    std::size_t try_receive_bulk(OutputIt out, std::size_t max) {
        return queue_.try_dequeue_bulk(out, max);
    }

    /// Parks the consumer until a message arrives or `wake_early()` returns true.
    /// Consumer thread only.
    template <class WakeEarly>
    void wait(WakeEarly&& wake_early, SpinPolicy policy = {}) {
        parker_.wait([&] { return queue_.size_approx() != 0 || wake_early(); }, policy);
    }

    /// Wakes the consumer even though no message was sent (used to deliver a stop request).
    void poke() noexcept { parker_.notify(); }

    /// An estimate of the messages waiting; exact when no one is sending or receiving.
    std::size_t size_approx() const { return queue_.size_approx(); }

private:
    Queue queue_;
    Parker parker_;
};

}  // namespace tandem::actors
