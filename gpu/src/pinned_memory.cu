#include "pinned_memory.cuh"

#include <cuda_runtime.h>

#include <new>

namespace tandem::gpu {

namespace {
/// Blocks are rounded up to 4 KiB pages so near sizes share cache entries.
constexpr std::size_t round_up(std::size_t bytes) { return (bytes + 4095) & ~std::size_t{4095}; }
}  // namespace

PinnedMemory::~PinnedMemory() {
    for (auto& [size, p] : free_) cudaFreeHost(p);
}

void* PinnedMemory::do_allocate(std::size_t bytes, std::size_t alignment) {
    if (fail_.load(std::memory_order_relaxed) || alignment > 4096) throw std::bad_alloc{};
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
    void* p = nullptr;
    if (cudaHostAlloc(&p, want, cudaHostAllocPortable) != cudaSuccess) {
        cudaGetLastError();  // not sticky; clear it so later calls do not see it
        throw std::bad_alloc{};
    }
    std::lock_guard lock{mutex_};
    sizes_[p] = want;
    return p;
}

void PinnedMemory::do_deallocate(void* p, std::size_t, std::size_t) {
    std::unique_lock lock{mutex_};
    const std::size_t size = sizes_.at(p);
    if (cached_ + size <= cache_limit_) {
        free_.emplace(size, p);
        cached_ += size;
        return;
    }
    sizes_.erase(p);
    lock.unlock();
    cudaFreeHost(p);
}

}  // namespace tandem::gpu
