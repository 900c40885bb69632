#pragma once
// Internal: RAII owners of CUDA handles (streams, events, device buffers). Every create has its
// destroy in a destructor; nothing else in gpu/ calls the create/destroy pairs.

#ifndef __CUDACC__
#error "cuda_handles.cuh holds CUDA code: include it from .cu files only"
#endif

#include <tandem/gpu/cuda_error.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <system_error>
#include <utility>

namespace tandem::gpu {

/// Throws `std::system_error` in the CUDA category when `status` is an error.
inline void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw std::system_error{make_cuda_error_code(status), what};
}

/// A non-blocking CUDA stream (it does not synchronise with the legacy default stream).
class Stream {
public:
    Stream() { check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags"); }
    Stream(Stream&& o) noexcept : stream_{std::exchange(o.stream_, nullptr)} {}
    Stream& operator=(Stream&&) = delete;
    ~Stream() {
        if (stream_) cudaStreamDestroy(stream_);
    }
    cudaStream_t get() const noexcept { return stream_; }

private:
    cudaStream_t stream_ = nullptr;
};

/// A CUDA event with timing enabled (stage times and traces are read from them).
class Event {
public:
    Event() { check(cudaEventCreate(&event_), "cudaEventCreate"); }
    Event(Event&& o) noexcept : event_{std::exchange(o.event_, nullptr)} {}
    Event& operator=(Event&&) = delete;
    ~Event() {
        if (event_) cudaEventDestroy(event_);
    }
    cudaEvent_t get() const noexcept { return event_; }
    /// Exchanges the two handles (what each was last recorded as goes with it).
    void swap(Event& o) noexcept { std::swap(event_, o.event_); }

private:
    cudaEvent_t event_ = nullptr;
};

/// Device memory that grows on demand and is kept for reuse.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(DeviceBuffer&& o) noexcept
        : data_{std::exchange(o.data_, nullptr)}, capacity_{std::exchange(o.capacity_, 0)} {}
    DeviceBuffer& operator=(DeviceBuffer&&) = delete;
    ~DeviceBuffer() { release(); }

    /// Makes room for `bytes`, growing to `want` (at least `bytes`) when it grows, or to
    /// `bytes` when `want` cannot be had; returns the CUDA status (the old buffer is kept on
    /// failure).
    cudaError_t reserve(std::size_t bytes, std::size_t want = 0) noexcept {
        if (bytes <= capacity_) return cudaSuccess;
        want = std::max(want, bytes);
        void* fresh = nullptr;
        cudaError_t status = cudaMalloc(&fresh, want);
        if (status != cudaSuccess && want > bytes) {
            cudaGetLastError();
            want = bytes;
            status = cudaMalloc(&fresh, want);
        }
        if (status != cudaSuccess) return status;
        release();
        data_ = fresh;
        capacity_ = want;
        return cudaSuccess;
    }
    void release() noexcept {
        if (data_) cudaFree(data_);
        data_ = nullptr;
        capacity_ = 0;
    }
    /// Forgets the memory without freeing it: a kernel that was given up on may still use it
    /// (and cudaFree would wait for that kernel).
    void leak() noexcept {
        data_ = nullptr;
        capacity_ = 0;
    }
    void* get() const noexcept { return data_; }
    std::size_t capacity() const noexcept { return capacity_; }

private:
    void* data_ = nullptr;
    std::size_t capacity_ = 0;
};

}  // namespace tandem::gpu
