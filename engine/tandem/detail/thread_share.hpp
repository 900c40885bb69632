#pragma once
/// \file
/// Shared references counted per thread: every batch holds its op's definition and the
/// engine's shared state, and taking those references from one count shared by every
/// submitting thread makes that count's cache line travel between their cores on every submit
/// and every completion (16 submitters on 16 cores serialised on it: bench/RESULTS.md).

#include <cstddef>
#include <memory>

namespace tandem::detail {

/// A reference to `*p` that shares ownership of it through a holder of one reference to `p`,
/// counted separately on each thread. The thread keeps only weak references to its holders
/// (two per type, for a thread that alternates two objects), so a holder lives exactly as
/// long as a reference returned here does: nothing outlives its last user. The object lives
/// while `p`'s owners or any reference returned here live. Called after the thread's own
/// cache is gone (from another thread-local's destructor), it returns `p` itself.
template <class X>
std::shared_ptr<X> thread_share(const std::shared_ptr<X>& p) {
    if (!p) return p;
    struct Entry {
        const X* object = nullptr;
        std::weak_ptr<X> held;
    };
    struct Cache {
        Entry entries[2];
        std::size_t next = 0;  // the entry a miss replaces when neither is free
        bool* gone;
        ~Cache() { *gone = true; }
    };
    thread_local bool gone = false;  // trivially destructible: readable until the thread ends
    if (gone) return p;
    thread_local Cache cache{{}, 0, &gone};
    for (Entry& e : cache.entries) {
        // A holder alive for this address holds the object there: it is this very object (its
        // address cannot have been reused while a holder lives).
        if (e.object == p.get()) {
            if (std::shared_ptr<X> held = e.held.lock()) return held;
        }
    }
    auto holder = std::make_shared<const std::shared_ptr<X>>(p);
    std::shared_ptr<X> held{holder, p.get()};
    Entry* slot = nullptr;  // a free entry, else the two in turn
    for (Entry& e : cache.entries) {
        if (e.held.expired()) slot = &e;
    }
    if (slot == nullptr) {
        slot = &cache.entries[cache.next];
        cache.next ^= 1;
    }
    slot->object = p.get();
    slot->held = held;
    return held;
}

}  // namespace tandem::detail
