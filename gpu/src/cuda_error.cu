#include <tandem/error.hpp>
#include <tandem/gpu/cuda_error.hpp>

#include <cuda_runtime.h>

#include <string>

namespace tandem::gpu {
namespace {

/// Why a chunk that failed with `e` went back to the CPU (the label of
/// `tandem_cpu_fallbacks_total`).
FallbackReason reason_of(cudaError_t e) noexcept {
    switch (e) {
        case cudaErrorMemoryAllocation: return FallbackReason::OutOfMemory;
        case cudaErrorLaunchOutOfResources:
        case cudaErrorInvalidConfiguration:
        case cudaErrorInvalidValue:
        case cudaErrorInvalidResourceHandle:
        case cudaErrorCooperativeLaunchTooLarge:
        case cudaErrorLaunchPendingCountExceeded: return FallbackReason::LaunchError;
        case cudaErrorInvalidDeviceFunction:
        case cudaErrorNoKernelImageForDevice:
        case cudaErrorInvalidKernelImage:
        case cudaErrorInvalidPtx:
        case cudaErrorUnsupportedPtxVersion:
        case cudaErrorSymbolNotFound:
        case cudaErrorSharedObjectSymbolNotFound: return FallbackReason::NoKernel;
        // Sticky errors (the context is broken: the device is retired) and missing devices.
        case cudaErrorLaunchFailure:
        case cudaErrorIllegalAddress:
        case cudaErrorHardwareStackError:
        case cudaErrorIllegalInstruction:
        case cudaErrorMisalignedAddress:
        case cudaErrorInvalidAddressSpace:
        case cudaErrorInvalidPc:
        case cudaErrorLaunchTimeout:
        case cudaErrorECCUncorrectable:
        case cudaErrorAssert:
        case cudaErrorNoDevice:
        case cudaErrorDevicesUnavailable:
        case cudaErrorContextIsDestroyed:
        case cudaErrorInsufficientDriver:
        case cudaErrorCudartUnloading: return FallbackReason::DeviceFailed;
        default: return FallbackReason::Other;
    }
}

class CudaCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "cuda"; }
    std::string message(int value) const override {
        return std::string{cudaGetErrorName(static_cast<cudaError_t>(value))} + ": " +
               cudaGetErrorString(static_cast<cudaError_t>(value));
    }
    using std::error_category::equivalent;  // the other overload stays as it is
    bool equivalent(int value, const std::error_condition& condition) const noexcept override {
        if (condition.category() == fallback_category()) {
            return condition.value() == static_cast<int>(reason_of(static_cast<cudaError_t>(value)));
        }
        return std::error_category::equivalent(value, condition);
    }
};

}  // namespace

const std::error_category& cuda_category() noexcept {
    static const CudaCategory category;
    return category;
}

std::error_code make_cuda_error_code(int cuda_error) noexcept {
    if (cuda_error == 0) return {};
    return {cuda_error, cuda_category()};
}

}  // namespace tandem::gpu
