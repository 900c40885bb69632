#pragma once
/// \file
/// Printing what the GPU examples measure: throughput and the batch's ExecStats.

#include <tandem/tandem.hpp>

#include <chrono>
#include <cstddef>
#include <cstdio>

namespace examples {

inline double ms(std::chrono::nanoseconds t) { return static_cast<double>(t.count()) / 1e6; }

/// Prints the engine's devices, the batch's throughput (`tasks` in `seconds`, submit → get)
/// and how it ran.
inline void print_run(const tandem::Engine& engine, const tandem::ExecStats& s, std::size_t tasks, double seconds,
                      const char* unit) {
    std::printf("engine    : %zu CPU workers, gpu_count=%zu", engine.cpu_workers(), engine.gpu_count());
    for (const auto& d : engine.gpus()) {
        std::printf("  [%d: %s, sm_%d%d, %d SMs%s]", d.index, d.name.c_str(), d.compute_major, d.compute_minor,
                    d.multiprocessors, d.healthy ? "" : ", retired");
    }
    std::printf("\nthroughput: %zu %s in %.2f ms = %.2f M %s/s (submit -> get)\n", tasks, unit, seconds * 1e3,
                static_cast<double>(tasks) / seconds / 1e6, unit);
    std::printf("stats     : device=%s gpu_tasks=%llu cpu_tasks=%llu fallback_tasks=%llu failed_tasks=%llu\n",
                tandem::to_string(s.device), static_cast<unsigned long long>(s.gpu_tasks),
                static_cast<unsigned long long>(s.cpu_tasks), static_cast<unsigned long long>(s.fallback_tasks),
                static_cast<unsigned long long>(s.failed_tasks));
    std::printf("            gpu_chunks=%u cpu_chunks=%u gpu_devices_used=%u\n", s.gpu_chunks, s.cpu_chunks,
                s.gpu_devices_used);
    if (!s.fallback_reason.empty()) std::printf("            fallback_reason: %s\n", s.fallback_reason.c_str());
    std::printf("            H2D=%.3f ms kernel=%.3f ms D2H=%.3f ms (sums over chunks), overlap_ratio=%.2f\n",
                ms(s.h2d_time), ms(s.kernel_time), ms(s.d2h_time), s.overlap_ratio);
    std::printf("            bytes H2D=%llu D2H=%llu, cpu_time=%.3f ms, queue_wait=%.3f ms, wall_time=%.3f ms\n",
                static_cast<unsigned long long>(s.bytes_h2d), static_cast<unsigned long long>(s.bytes_d2h),
                ms(s.cpu_time), ms(s.queue_wait), ms(s.wall_time));
}

}  // namespace examples
