#include <tandem/gpu/cuda_error.hpp>

#include <cuda_runtime.h>

#include <string>

namespace tandem::gpu {
namespace {

class CudaCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "cuda"; }
    std::string message(int value) const override {
        return std::string{cudaGetErrorName(static_cast<cudaError_t>(value))} + ": " +
               cudaGetErrorString(static_cast<cudaError_t>(value));
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
