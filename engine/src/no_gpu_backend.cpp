// Built when Tandem is configured without CUDA: the engine runs everything on the CPU (or on
// simulated devices, when the configuration lists some).
#include "device_backend.hpp"

namespace tandem::detail {

std::unique_ptr<DeviceBackend> make_gpu_backend(const BackendContext&) { return nullptr; }

}  // namespace tandem::detail
