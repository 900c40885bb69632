#pragma once
// Internal: page-locked host memory as a std::pmr::memory_resource, with a cache of freed
// blocks (cudaHostAlloc of a large block costs milliseconds; reuse costs a map lookup).

#ifndef __CUDACC__
#error "pinned_memory.cuh holds CUDA code: include it from .cu files only"
#endif

#include <atomic>
#include <cstddef>
#include <map>
#include <memory_resource>
#include <mutex>
#include <unordered_map>

namespace tandem::gpu {

/// Page-locked, portable (every device can copy from it) host memory. Freed blocks are kept
/// up to `cache_bytes` and handed out again for requests up to 25% smaller. Thread-safe; one
/// lock per allocation (allocations are per batch or per buffer, never per task).
class PinnedMemory final : public std::pmr::memory_resource {
public:
    explicit PinnedMemory(std::size_t cache_bytes) : cache_limit_{cache_bytes} {}
    ~PinnedMemory() override;

    /// Makes every later allocation fail (fault injection).
    void inject_failures(bool on) noexcept { fail_.store(on, std::memory_order_relaxed); }

private:
    void* do_allocate(std::size_t bytes, std::size_t alignment) override;
    void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
    bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }

    const std::size_t cache_limit_;
    std::atomic<bool> fail_{false};
    std::mutex mutex_;
    std::multimap<std::size_t, void*> free_;        // cached blocks by size
    std::unordered_map<void*, std::size_t> sizes_;  // every live or cached block's real size
    std::size_t cached_ = 0;
};

}  // namespace tandem::gpu
