#pragma once
// An op that simulated devices can run (test_devices.cpp, test_placement.cpp): a u32 mix with
// a "kernel" that has no CUDA launch, only a host emulation of the same function.

#include <tandem/tandem.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <system_error>

namespace tandem::testing {

inline std::uint32_t mix(std::uint32_t x) { return x * 2654435761u + 12345u; }

struct MixKernel final : GpuLauncher {
    std::error_code launch(void*, const void*, void*, std::size_t) const noexcept override {
        return make_error_code(ExecError::BackendUnavailable);
    }
    std::error_code run_on_host(const void* in, void* out, std::size_t n) const noexcept override {
        const auto* x = static_cast<const std::uint32_t*>(in);
        auto* y = static_cast<std::uint32_t*>(out);
        for (std::size_t i = 0; i < n; ++i) y[i] = mix(x[i]);
        return {};
    }
};

inline GpuKernel<std::uint32_t, std::uint32_t> mix_kernel() {
    return GpuKernel<std::uint32_t, std::uint32_t>{std::make_shared<MixKernel>()};
}

/// `mix` with a CPU function and a (simulated) device kernel.
inline Op<std::uint32_t, std::uint32_t> hybrid_op() { return {"mix", mix, mix_kernel()}; }
/// `mix` with a device kernel only.
inline Op<std::uint32_t, std::uint32_t> device_only_op() { return {"mix_device_only", mix_kernel()}; }

/// Tasks 0..n-1 with payload i, in `memory` (the heap when null).
inline Batch<std::uint32_t> iota_batch(std::size_t n, std::pmr::memory_resource* memory = nullptr) {
    Batch<std::uint32_t> b = memory ? Batch<std::uint32_t>{memory} : Batch<std::uint32_t>{};
    b.reserve(n);
    for (std::size_t i = 0; i < n; ++i) b.push({i, static_cast<std::uint32_t>(i), 1});
    return b;
}

}  // namespace tandem::testing
