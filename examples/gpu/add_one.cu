// The quick start on a GPU: one functor, two devices, one answer.
//
//   struct AddOne { __host__ __device__ ... }     the same source, compiled twice by nvcc
//         │                         │
//         ▼ (host build)            ▼ (device build: tandem::gpu::map)
//   [CPU workers] x + 1       [GPU streams] H2D ─► map kernel x + 1 ─► D2H
//         └──────────┬──────────────┘
//                    ▼
//   16 M results in task order; cpu_tasks + gpu_tasks == n, gpu_tasks > 0 with a GPU
//
// Marking the functor __host__ __device__ lets one object be both the op's CPU function and,
// through tandem::gpu::map, its GPU kernel: whichever device runs a task, the answer is the same.
// add_one.cu
#include <tandem/tandem.hpp>
#include <tandem/gpu/map.cuh>
#include <cassert>
#include <cstdint>
struct AddOne {
    __host__ __device__ std::uint32_t operator()(const std::uint32_t& x) const { return x + 1; }
};
int main() {
    tandem::Engine engine{tandem::EngineConfig{}};
    tandem::Op<std::uint32_t, std::uint32_t> op{"add_one", AddOne{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(AddOne{})};
    const std::uint64_t n = 1u << 24;
    tandem::Batch<std::uint32_t> batch;
    for (std::uint64_t i = 0; i < n; ++i) batch.push({i, static_cast<std::uint32_t>(i), 1});
    auto r = engine.submit(op, std::move(batch)).get();
    for (std::uint64_t i = 0; i < n; ++i) assert(r.results[i].output == static_cast<std::uint32_t>(i) + 1);
    assert(r.stats.cpu_tasks + r.stats.gpu_tasks == n);
    if (engine.gpu_count() > 0) assert(r.stats.gpu_tasks > 0);
    else assert(r.stats.gpu_tasks == 0);
}
