#pragma once
// Internal: a memory resource that keeps freed blocks for reuse. Output arrays of large
// batches come from one (a fresh 256 MiB array costs 65,536 page faults on first touch, more
// than the map that fills it), and so does the GPU backend's page-locked memory
// (cudaHostAlloc of a large block takes milliseconds).

#include <cstddef>
#include <map>
#include <memory_resource>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>

namespace tandem::detail {

/// Caches freed blocks up to `cache_bytes` and hands one out again for a request up to 25%
/// smaller. Blocks are rounded up to 4 KiB pages. `Upstream` provides
/// `void* allocate(std::size_t)` (throwing std::bad_alloc) and `void release(void*, std::size_t)`.
/// Thread-safe; one lock per allocation (per batch or per buffer, never per task).
template <class Upstream>
class BlockCache : public std::pmr::memory_resource {
public:
    BlockCache(std::size_t cache_bytes, Upstream upstream) : limit_{cache_bytes}, upstream_{std::move(upstream)} {}
    BlockCache(const BlockCache&) = delete;
    BlockCache& operator=(const BlockCache&) = delete;
    ~BlockCache() override {
        for (auto& [size, p] : free_) upstream_.release(p, size);
    }

    Upstream& upstream() noexcept { return upstream_; }

    /// Frees every cached block and caches none from now on (the owner is going away; blocks
    /// still in use are freed when their users deallocate them).
    void trim() noexcept {
        std::lock_guard lock{mutex_};
        for (auto& [size, p] : free_) {
            sizes_.erase(p);
            upstream_.release(p, size);
        }
        free_.clear();
        cached_ = 0;
        limit_ = 0;
    }

private:
    static constexpr std::size_t round_up(std::size_t bytes) { return (bytes + 4095) & ~std::size_t{4095}; }

    void* do_allocate(std::size_t bytes, std::size_t alignment) override {
        if (alignment > 4096) throw std::bad_alloc{};
        const std::size_t want = round_up(bytes == 0 ? 1 : bytes);
        {
            std::lock_guard lock{mutex_};
            auto it = free_.lower_bound(want);
            if (it != free_.end() && it->first <= want + want / 4) {
                void* p = it->second;
                cached_ -= it->first;
                free_.erase(it);
                return p;
            }
        }
        void* p = upstream_.allocate(want);
        try {
            std::lock_guard lock{mutex_};
            sizes_[p] = want;
        } catch (...) {
            upstream_.release(p, want);
            throw;
        }
        return p;
    }

    void do_deallocate(void* p, std::size_t, std::size_t) override {
        std::unique_lock lock{mutex_};
        const std::size_t size = sizes_.at(p);
        if (cached_ + size <= limit_) {
            free_.emplace(size, p);
            cached_ += size;
            return;
        }
        sizes_.erase(p);
        lock.unlock();
        upstream_.release(p, size);
    }

    bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }

    std::size_t limit_;  // guarded by mutex_
    Upstream upstream_;
    std::mutex mutex_;
    std::multimap<std::size_t, void*> free_;        // cached blocks by size
    std::unordered_map<void*, std::size_t> sizes_;  // every live or cached block's real size
    std::size_t cached_ = 0;
};

/// Page-aligned heap memory.
struct HeapUpstream {
    void* allocate(std::size_t bytes) { return ::operator new(bytes, std::align_val_t{4096}); }
    void release(void* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{4096}); }
};

}  // namespace tandem::detail
