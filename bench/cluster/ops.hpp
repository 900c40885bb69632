#pragma once
// The cluster benchmark's two ops, made in ops_gpu.cu (CPU function and GPU kernel) or in
// ops_cpu.cpp (CPU function only): the same functors (bench/mix_ops.hpp) either way.
#include <tandem/op.hpp>

#include <cstdint>

namespace bench::cluster {

struct Ops {
    /// Compute-heavy: `rounds` mixing steps per 4-byte task.
    tandem::Op<std::uint32_t, std::uint32_t> heavy;
    /// Transfer-bound: one multiply-add per 4-byte task.
    tandem::Op<std::uint32_t, std::uint32_t> light;
    /// True when the ops have GPU kernels.
    bool gpu = false;
};

Ops make_ops(std::uint32_t rounds);

}  // namespace bench::cluster
