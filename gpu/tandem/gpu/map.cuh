#pragma once
/// \file
/// Turning device code from a user's `.cu` file into a `tandem::GpuKernel` the engine can
/// launch on its streams. CUDA-only: include it from files compiled by nvcc.

#ifndef __CUDACC__
#error "<tandem/gpu/map.cuh> holds CUDA code: include it from a .cu file compiled by nvcc"
#endif

#include <tandem/gpu/cuda_error.hpp>
#include <tandem/op.hpp>

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <system_error>
#include <type_traits>
#include <utility>

namespace tandem::gpu {
namespace detail {

/// One thread per element, grid-stride so any `n` fits any grid.
template <class T, class R, class F>
__global__ void map_kernel(F f, const T* __restrict__ in, R* __restrict__ out, std::size_t n) {
    const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
    for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = f(in[i]);
    }
}

template <class T, class R, class F>
class MapLauncher final : public GpuLauncher {
public:
    explicit MapLauncher(F f) : f_{std::move(f)} {}

    std::error_code launch(void* stream, const void* in, void* out, std::size_t n) const noexcept override {
        constexpr unsigned threads = 256;
        // Enough blocks for one element per thread up to 2^20 blocks; the loop covers the rest.
        const std::size_t wanted = (n + threads - 1) / threads;
        const unsigned blocks = static_cast<unsigned>(wanted < (std::size_t{1} << 20) ? wanted : (std::size_t{1} << 20));
        map_kernel<T, R, F><<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(
            f_, static_cast<const T*>(in), static_cast<R*>(out), n);
        return make_cuda_error_code(static_cast<int>(cudaGetLastError()));
    }

private:
    F f_;
};

template <class T, class R, class L>
class CustomLauncher final : public GpuLauncher {
public:
    explicit CustomLauncher(L l) : l_{std::move(l)} {}

    std::error_code launch(void* stream, const void* in, void* out, std::size_t n) const noexcept override {
        const cudaError_t status = l_(static_cast<cudaStream_t>(stream), static_cast<const T*>(in), static_cast<R*>(out), n);
        return make_cuda_error_code(static_cast<int>(status != cudaSuccess ? status : cudaGetLastError()));
    }

private:
    L l_;
};

}  // namespace detail

/// A kernel that applies `f` to every task: `f` is a device functor `R operator()(const T&)`
/// (mark it `__host__ __device__` to use the same functor as the op's CPU function).
template <class T, class R, class F>
GpuKernel<T, R> map(F f) {
    static_assert(std::is_trivially_copyable_v<F>, "a device functor is copied to the GPU: make it trivially copyable");
    return GpuKernel<T, R>{std::make_shared<const detail::MapLauncher<T, R, F>>(std::move(f))};
}

/// A kernel from a custom launcher, for library calls (cuBLAS, CUB) and kernels that need the
/// whole chunk: `l(cudaStream_t stream, const T* device_in, R* device_out, std::size_t n)`
/// enqueues work on `stream` and returns a `cudaError_t`.
template <class T, class R, class L>
GpuKernel<T, R> launcher(L l) {
    static_assert(std::is_invocable_r_v<cudaError_t, const L&, cudaStream_t, const T*, R*, std::size_t>,
                  "a launcher is called as l(cudaStream_t, const T*, R*, std::size_t) -> cudaError_t");
    return GpuKernel<T, R>{std::make_shared<const detail::CustomLauncher<T, R, L>>(std::move(l))};
}

}  // namespace tandem::gpu
