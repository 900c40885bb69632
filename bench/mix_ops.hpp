#pragma once
// The benchmarks' integer ops, for the CPU and (through tandem::gpu::map in a .cu file) the
// GPU: bench/hybrid and bench/cluster. Host code may include this header too: the functions
// are then plain host functions.
#include <cstdint>

#ifdef __CUDACC__
#define BENCH_HOST_DEVICE __host__ __device__
#else
#define BENCH_HOST_DEVICE
#endif

namespace bench {

/// One multiply-add per task: on the GPU side the copies are everything.
struct Scramble {
    BENCH_HOST_DEVICE std::uint32_t operator()(const std::uint32_t& x) const { return x * 2654435761u + 1u; }
};

/// `rounds` dependent xor-shift-multiply steps per task: the arithmetic per byte is chosen at
/// run time, so one kernel covers every balance between the CPU and the GPU.
struct Mix {
    std::uint32_t rounds;
    BENCH_HOST_DEVICE std::uint32_t operator()(const std::uint32_t& x) const {
        std::uint32_t h = x;
        for (std::uint32_t r = 0; r < rounds; ++r) {
            h ^= h >> 15;
            h = h * 0x2c1b3c6du + r;
        }
        return h;
    }
};

}  // namespace bench
