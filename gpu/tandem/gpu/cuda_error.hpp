#pragma once
/// \file
/// CUDA errors as `std::error_code`s. A host header: it names no CUDA type, so host code can
/// compare and print CUDA failures without including a CUDA header.

#include <system_error>

namespace tandem::gpu {

/// The category of `cudaError_t` values; its name is "cuda", messages come from the runtime.
const std::error_category& cuda_category() noexcept;

/// Makes an error code from a `cudaError_t` value (0, `cudaSuccess`, gives an empty code).
std::error_code make_cuda_error_code(int cuda_error) noexcept;

}  // namespace tandem::gpu
