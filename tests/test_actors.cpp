// The actor runtime: mailbox ordering and loss-freedom, parking, orderly stop.
#define BOOST_TEST_MODULE actors
#include <boost/test/unit_test.hpp>

#include <tandem/actors/actor.hpp>
#include <tandem/actors/mailbox.hpp>
#include <tandem/actors/parker.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace tandem::actors;

namespace {

struct Note {
    std::uint32_t producer = 0;
    std::uint64_t seq = 0;
};

/// Records every message it handles, per producer, and checks the thread it runs on.
class Recorder final : public Behavior<Note> {
public:
    explicit Recorder(std::size_t producers) : last_(producers, 0), count_(producers, 0) {}

    void on_message(Note& n) override {
        if (std::this_thread::get_id() != owner.load()) wrong_thread = true;
        if (n.seq <= last_[n.producer] && count_[n.producer] != 0) out_of_order = true;
        last_[n.producer] = n.seq;
        ++count_[n.producer];
        handled.fetch_add(1, std::memory_order_relaxed);
    }
    void on_stop() override { stopped = true; }

    std::atomic<std::thread::id> owner{};
    std::atomic<std::uint64_t> handled{0};
    bool out_of_order = false;
    bool wrong_thread = false;
    bool stopped = false;
    std::vector<std::uint64_t> last_;
    std::vector<std::uint64_t> count_;
};

}  // namespace

BOOST_AUTO_TEST_CASE(mailbox_keeps_each_producers_order) {
    Mailbox<Note> box;
    constexpr std::uint64_t per_producer = 20000;
    std::vector<std::thread> producers;
    for (std::uint32_t p = 0; p < 4; ++p) {
        producers.emplace_back([&, p] {
            auto token = box.make_producer_token();
            for (std::uint64_t i = 1; i <= per_producer; ++i) {
                box.send(token, Note{p, i});
            }
        });
    }
    for (auto& t : producers) t.join();
    std::vector<std::uint64_t> last(4, 0);
    std::uint64_t total = 0;
    Note buf[32];
    for (std::size_t n; (n = box.try_receive_bulk(buf, 32)) != 0;) {
        for (std::size_t i = 0; i < n; ++i) {
            BOOST_REQUIRE_GT(buf[i].seq, last[buf[i].producer]);
            last[buf[i].producer] = buf[i].seq;
        }
        total += n;
    }
    BOOST_TEST(total == 4 * per_producer);
}

BOOST_AUTO_TEST_CASE(actor_loses_no_message_from_many_producers) {
    constexpr std::size_t producers = 8;
    constexpr std::uint64_t per_producer = 25000;
    Recorder rec{producers};
    {
        Actor<Note> actor{rec, ActorOptions{64, SpinPolicy{std::chrono::microseconds{5}}}};
        rec.owner = actor.thread_id();
        std::vector<std::thread> threads;
        for (std::uint32_t p = 0; p < producers; ++p) {
            threads.emplace_back([&, p] {
                // Half the producers use tokens, half the implicit per-thread queue.
                if (p % 2) {
                    auto token = actor.make_producer_token();
                    for (std::uint64_t i = 1; i <= per_producer; ++i) actor.send(token, Note{p, i});
                } else {
                    for (std::uint64_t i = 1; i <= per_producer; ++i) actor.send(Note{p, i});
                }
            });
        }
        for (auto& t : threads) t.join();
    }  // the destructor stops the actor after draining
    BOOST_TEST(rec.handled.load() == producers * per_producer);
    BOOST_TEST(!rec.out_of_order);
    BOOST_TEST(!rec.wrong_thread);
    for (auto c : rec.count_) BOOST_TEST(c == per_producer);
}

BOOST_AUTO_TEST_CASE(stop_handles_messages_already_pending) {
    // A behaviour that is slow at first, so messages pile up before stop() is called.
    struct Slow final : Behavior<Note> {
        void on_message(Note&) override {
            if (handled.fetch_add(1) == 0) std::this_thread::sleep_for(std::chrono::milliseconds{50});
        }
        void on_stop() override { stopped_after = handled.load(); }
        std::atomic<std::uint64_t> handled{0};
        std::uint64_t stopped_after = 0;
    } slow;
    Actor<Note> actor{slow};
    for (std::uint64_t i = 1; i <= 1000; ++i) actor.send(Note{0, i});
    actor.stop();
    BOOST_TEST(slow.handled.load() == 1000u);
    BOOST_TEST(slow.stopped_after == 1000u);
}

BOOST_AUTO_TEST_CASE(parked_actor_wakes_for_a_late_message) {
    Recorder rec{1};
    Actor<Note> actor{rec, ActorOptions{64, SpinPolicy{std::chrono::microseconds{1}}}};
    rec.owner = actor.thread_id();
    std::this_thread::sleep_for(std::chrono::milliseconds{20});  // long past the spin: parked
    actor.send(Note{0, 1});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
    while (rec.handled.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    BOOST_TEST(rec.handled.load() == 1u);
}

BOOST_AUTO_TEST_CASE(idle_hook_keeps_actor_polling_until_background_work_is_done) {
    struct Poller final : Behavior<Note> {
        void on_message(Note&) override { pending = 3; }
        bool on_idle() override {
            if (pending == 0) return false;
            --pending;
            ++polls;
            return true;
        }
        int pending = 0;
        std::atomic<int> polls{0};
    } poller;
    Actor<Note> actor{poller};
    actor.send(Note{0, 1});
    actor.stop();
    BOOST_TEST(poller.polls.load() == 3);
}

BOOST_AUTO_TEST_CASE(parker_wakes_every_waiter_parked_before_the_notify) {
    // Each round waits until every waiter has announced itself as a sleeper (it is then between
    // its announcement and the condition variable, or inside it: the windows a lost wake-up
    // would hide in) and only then publishes and notifies.
    for (int round = 0; round < 200; ++round) {
        Parker parker;
        std::atomic<bool> flag{false};
        std::atomic<int> woke{0};
        std::vector<std::thread> waiters;
        for (int i = 0; i < 4; ++i) {
            waiters.emplace_back([&] {
                parker.wait([&] { return flag.load(); }, SpinPolicy{std::chrono::nanoseconds{0}});
                woke.fetch_add(1);
            });
        }
        while (parker.sleepers() != 4) std::this_thread::yield();
        flag.store(true);
        parker.notify();
        for (auto& t : waiters) t.join();
        BOOST_REQUIRE_EQUAL(woke.load(), 4);
    }
}

BOOST_AUTO_TEST_CASE(parker_wait_until_returns_false_at_the_deadline_without_a_notify) {
    Parker parker;
    const bool ready = parker.wait_until([] { return false; },
                                         std::chrono::steady_clock::now() + std::chrono::milliseconds{5},
                                         SpinPolicy{std::chrono::nanoseconds{0}});
    BOOST_TEST(!ready);
    BOOST_TEST(parker.sleepers() == 0u);
}

BOOST_AUTO_TEST_CASE(spin_history_stops_spinning_after_long_waits_and_resumes_after_short_ones) {
    SpinHistory h;
    BOOST_TEST(h.pays());  // a new waiter spins
    for (int i = 0; i < 6; ++i) h.record(false);
    BOOST_TEST(h.pays());  // two of the last eight were (the initial) short ones
    h.record(false);
    BOOST_TEST(!h.pays());  // seven long waits of the last eight: park at once
    h.record(true);
    BOOST_TEST(!h.pays());  // one short wait is not yet a pattern
    h.record(true);
    BOOST_TEST(h.pays());  // two of the last eight: spin again
}

BOOST_AUTO_TEST_CASE(timed_waits_that_end_soon_turn_spinning_back_on) {
    // A thread that only polls with deadlines (wait_for) must still teach its history: two
    // timed waits that end at once make spinning pay again after eight long waits.
    Parker parker;
    SpinHistory history;
    for (int i = 0; i < 8; ++i) history.record(false);
    BOOST_REQUIRE(!history.pays());
    SpinPolicy policy{std::chrono::microseconds{100}};
    policy.history = &history;
    for (int i = 0; i < 2; ++i) {
        BOOST_TEST(parker.wait_until([] { return true; }, std::chrono::steady_clock::now() + std::chrono::seconds{5},
                                     policy));
    }
    BOOST_TEST(history.pays());
}

BOOST_AUTO_TEST_CASE(a_waiter_whose_waits_were_long_parks_without_spinning_its_window) {
    // With a 30 s window, a waiter that spins cannot be parked within the first seconds; one
    // whose history says spinning does not pay parks at once.
    Parker parker;
    SpinHistory history;
    for (int i = 0; i < 8; ++i) history.record(false);
    std::atomic<bool> flag{false};
    SpinPolicy policy{std::chrono::seconds{30}};
    policy.history = &history;
    std::thread waiter{[&] { parker.wait([&] { return flag.load(); }, policy); }};
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
    while (parker.sleepers() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    const bool parked = parker.sleepers() == 1;
    flag.store(true);
    parker.notify();
    waiter.join();
    BOOST_TEST(parked);
}

BOOST_AUTO_TEST_CASE(a_waiter_whose_waits_were_short_spins_before_it_parks) {
    // The same wait with a history of short waits spins: it is not parked while its window runs.
    Parker parker;
    SpinHistory history;
    std::atomic<bool> flag{false};
    SpinPolicy policy{std::chrono::seconds{30}};
    policy.history = &history;
    std::atomic<bool> waiting{false};
    std::thread waiter{[&] {
        waiting = true;
        parker.wait([&] { return flag.load(); }, policy);
    }};
    while (!waiting.load()) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds{200});
    const bool parked = parker.sleepers() != 0;
    flag.store(true);
    parker.notify();
    waiter.join();
    BOOST_TEST(!parked);
}

namespace {

/// Counts what reaches on_message and what is rejected, by reason.
struct Ledger final : Behavior<Note> {
    void on_message(Note&) override { handled.fetch_add(1); }
    void on_rejected(Note&, Rejection why) noexcept override {
        (why == Rejection::Stopped ? stopped : no_memory).fetch_add(1);
        rejected_on.store(std::this_thread::get_id());
    }
    std::atomic<std::uint64_t> handled{0}, stopped{0}, no_memory{0};
    std::atomic<std::thread::id> rejected_on{};
};

}  // namespace

BOOST_AUTO_TEST_CASE(a_message_sent_after_stop_is_rejected_not_lost) {
    Ledger ledger;
    Actor<Note> actor{ledger};
    actor.stop();
    BOOST_TEST(actor.stopped());
    BOOST_TEST(!actor.send(Note{0, 1}));
    BOOST_TEST(ledger.handled.load() == 0u);
    BOOST_TEST(ledger.stopped.load() == 1u);
}

BOOST_AUTO_TEST_CASE(every_message_racing_with_stop_is_handled_or_rejected_exactly_once) {
    for (int round = 0; round < 20; ++round) {
        Ledger ledger;
        constexpr std::uint64_t per_producer = 5000;
        std::uint64_t sent = 0;
        {
            Actor<Note> actor{ledger, ActorOptions{64, SpinPolicy{std::chrono::microseconds{1}}}};
            std::atomic<int> started{0};
            std::vector<std::thread> producers;
            for (std::uint32_t p = 0; p < 3; ++p) {
                producers.emplace_back([&, p] {
                    started.fetch_add(1);
                    for (std::uint64_t i = 1; i <= per_producer; ++i) actor.send(Note{p, i});
                });
            }
            while (started.load() != 3) std::this_thread::yield();
            actor.stop();  // while the producers are still sending
            for (auto& t : producers) t.join();
            sent = 3 * per_producer;
            // Checked before the destructor's own stop() could mop up a stranded message.
            BOOST_REQUIRE_EQUAL(ledger.handled.load() + ledger.stopped.load(), sent);
        }
        BOOST_REQUIRE_EQUAL(ledger.no_memory.load(), 0u);
    }
}

BOOST_AUTO_TEST_CASE(a_send_whose_mailbox_cannot_allocate_is_rejected_on_the_senders_thread) {
    Ledger ledger;
    Actor<Note> actor{ledger};
    actor.inject_send_failures(2);
    BOOST_TEST(!actor.send(Note{0, 1}));
    BOOST_TEST(!actor.send(Note{0, 2}));
    BOOST_TEST(actor.send(Note{0, 3}));
    actor.stop();
    BOOST_TEST(ledger.no_memory.load() == 2u);
    BOOST_TEST((ledger.rejected_on.load() == std::this_thread::get_id()));
    BOOST_TEST(ledger.handled.load() == 1u);
}

BOOST_AUTO_TEST_CASE(an_exception_from_on_message_goes_to_on_exception_and_the_actor_goes_on) {
    struct Thrower final : Behavior<Note> {
        void on_message(Note& n) override {
            if (n.seq == 1) throw std::runtime_error{"boom"};
            handled.fetch_add(1);
        }
        void on_exception(Note& n, std::exception_ptr e) noexcept override {
            failed_seq = n.seq;
            try {
                std::rethrow_exception(e);
            } catch (const std::runtime_error& ex) {
                what = ex.what();
            } catch (...) {
            }
        }
        std::atomic<std::uint64_t> handled{0};
        std::uint64_t failed_seq = 0;
        std::string what;
    } thrower;
    Actor<Note> actor{thrower};
    actor.send(Note{0, 1});
    actor.send(Note{0, 2});
    actor.stop();
    BOOST_TEST(thrower.failed_seq == 1u);
    BOOST_TEST(thrower.what == "boom");
    BOOST_TEST(thrower.handled.load() == 1u);
}
