// The seed's quick start, as written in the project's first issue: a CPU map executor and an
// unavailable GPU behind the hybrid scheduler.
//
//   batch ──► HybridScheduler ──(GPU unavailable)──► CpuMapExecutor ──► results + stats
#include <tandem/tandem.hpp>
#include <cassert>
#include <cstdint>
int main() {
    auto cpu = tandem::CpuMapExecutor([](const std::uint32_t& x) { return x + 1; });
    tandem::HybridScheduler scheduler(cpu, tandem::UnavailableGpu{}, tandem::HybridStrategy{});
    tandem::Batch<std::uint32_t> batch{{
        tandem::Task<std::uint32_t>{1, 41, 1},
        tandem::Task<std::uint32_t>{2, 99, 1},
    }};
    auto [results, stats] = scheduler.schedule(batch).get();
    assert(results[0].output == 42);
    assert(results[1].output == 100);
    assert(stats.device == tandem::DeviceKind::Cpu);
}
