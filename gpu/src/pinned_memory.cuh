#pragma once
// Internal: page-locked host memory as a std::pmr::memory_resource, caching freed blocks
// (cudaHostAlloc of a large block costs milliseconds; reuse costs a map lookup).

#ifndef __CUDACC__
#error "pinned_memory.cuh holds CUDA code: include it from .cu files only"
#endif

#include "block_cache.hpp"

#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <new>

namespace tandem::gpu {

/// Portable page-locked memory (every device can copy from it), with failure injection.
struct PinnedUpstream {
    std::atomic<bool> fail{false};

    PinnedUpstream() = default;
    PinnedUpstream(PinnedUpstream&&) noexcept {}

    void* allocate(std::size_t bytes) {
        void* p = nullptr;
        if (fail.load(std::memory_order_relaxed)) throw std::bad_alloc{};
        if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
            cudaGetLastError();  // not sticky; clear it so later calls do not see it
            throw std::bad_alloc{};
        }
        return p;
    }
    void release(void* p, std::size_t) noexcept { cudaFreeHost(p); }
};

/// Page-locked memory with a cache of freed blocks.
class PinnedMemory final : public detail::BlockCache<PinnedUpstream> {
public:
    explicit PinnedMemory(std::size_t cache_bytes) : detail::BlockCache<PinnedUpstream>{cache_bytes, PinnedUpstream{}} {}
    /// Makes every later allocation that misses the cache fail (fault injection).
    void inject_failures(bool on) noexcept { upstream().fail.store(on, std::memory_order_relaxed); }
};

}  // namespace tandem::gpu
