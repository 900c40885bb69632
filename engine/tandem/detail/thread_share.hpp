#pragma once
/// \file
/// Shared references counted per thread: every batch holds its op's definition and the
/// engine's shared state, and taking those references from one count shared by every
/// submitting thread makes that count's cache line travel between their cores on every submit
/// and every completion.

#include <memory>

namespace tandem::detail {

/// How long a thread keeps its own count once no batch of that thread holds it.
enum class ThreadShareKeep {
    /// Only while a batch of this thread holds a reference: nothing outlives its last user.
    WhileHeld,
    /// Until the thread shares another object of this type, or exits: for engine-internal
    /// state, whose only cost kept is memory. A thread submitting one batch at a time then
    /// does not build a new count for every batch.
    UntilReplaced,
};

/// A reference to `*p` that shares ownership of it through a holder of one reference to `p`,
/// counted separately on each thread (the holder is built on the first call on a thread). The
/// object lives while `p`'s owners or any reference returned here live.
template <ThreadShareKeep Keep, class X>
std::shared_ptr<X> thread_share(const std::shared_ptr<X>& p) {
    if (!p) return p;
    struct Slot {
        const X* object = nullptr;
        std::weak_ptr<X> held;     // WhileHeld
        std::shared_ptr<X> kept;   // UntilReplaced
    };
    thread_local Slot slot;
    if (slot.object == p.get()) {
        // The holder holds the object at this address: it is this very object (its address
        // cannot have been reused while a holder lives).
        if constexpr (Keep == ThreadShareKeep::UntilReplaced) {
            return slot.kept;
        } else {
            if (std::shared_ptr<X> held = slot.held.lock()) return held;
        }
    }
    auto holder = std::make_shared<const std::shared_ptr<X>>(p);
    std::shared_ptr<X> held{holder, p.get()};
    slot.object = p.get();
    if constexpr (Keep == ThreadShareKeep::UntilReplaced) {
        slot.kept = held;
    } else {
        slot.held = held;
    }
    return held;
}

}  // namespace tandem::detail
