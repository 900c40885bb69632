// Built when Tandem is configured without CUDA: the engine runs everything on the CPU.
#include "device_backend.hpp"

namespace tandem::detail {

std::unique_ptr<DeviceBackend> make_gpu_backend(const GpuConfig&, FallbackSink&, const std::atomic<bool>&) {
    return nullptr;
}

}  // namespace tandem::detail
