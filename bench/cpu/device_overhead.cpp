// What a device costs the small batches that stay on the CPU: the 1-task round trip (submit ->
// get) of an op that has a device kernel, on an engine with a simulated device (its learned
// placement runs for every batch and keeps these on the CPU) against the same engine without
// one (no placement to run), in alternating rounds on fresh engines so that drift on the
// machine hits both alike. Issue "The scheduling brain", (c) at 1 task: automatic placement's
// time / the best single placement <= 1.05. Needs no GPU: the simulated device stands for one
// (the placement code is the same), and its kernel is never run here.
//
// RESULT lines: the p50 round trip with the device / without (the median of the per-round
// ratios, and over every batch).

#include "bench_util.hpp"

#include <tandem/tandem.hpp>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <system_error>
#include <vector>

namespace {

constexpr const char* usage =
    "usage: bench_cpu_device_overhead [--quick] [--rounds=N] [--batches=N] [--workers=N] [--json FILE]\n"
    "  --rounds   alternating rounds, a fresh engine each (default 21; --quick 5)\n"
    "  --batches  1-task batches per engine per round after 2000 warm-up ones (default 20000; --quick 3000)\n"
    "  --workers  CPU workers of both engines (default: one per hardware thread)";

std::uint32_t mix(std::uint32_t x) { return x * 2654435761u + 12345u; }

/// A device "kernel" with only a host emulation (what a simulated device runs).
struct HostMix final : tandem::GpuLauncher {
    std::error_code launch(void*, const void*, void*, std::size_t) const noexcept override {
        return make_error_code(tandem::ExecError::BackendUnavailable);
    }
    std::error_code run_on_host(const void* in, void* out, std::size_t n) const noexcept override {
        for (std::size_t i = 0; i < n; ++i) static_cast<std::uint32_t*>(out)[i] = mix(static_cast<const std::uint32_t*>(in)[i]);
        return {};
    }
};

/// One round on a fresh engine: the median round trip (ns) of `batches` 1-task batches, all
/// of them added to `all`.
double round_trip_p50(const tandem::EngineConfig& config, const tandem::Op<std::uint32_t, std::uint32_t>& op,
                      std::size_t batches, std::vector<double>& all) {
    tandem::Engine engine{config};
    std::vector<double> mine;
    mine.reserve(batches);
    std::uint64_t check = 0;
    for (std::size_t i = 0; i < 2000 + batches; ++i) {
        const auto t0 = bench::Clock::now();
        auto r = engine.submit(op, tandem::Batch<std::uint32_t>{{i, static_cast<std::uint32_t>(i), 1}}).get();
        const auto t1 = bench::Clock::now();
        if (r.results.outputs()[0] != mix(static_cast<std::uint32_t>(i))) {
            std::fprintf(stderr, "wrong result for task %zu\n", i);
            std::exit(3);
        }
        check += r.stats.gpu_tasks;
        if (i >= 2000) mine.push_back(bench::ns_between(t0, t1));
    }
    if (check != 0) std::printf("  (%llu tasks went to the device)\n", static_cast<unsigned long long>(check));
    all.insert(all.end(), mine.begin(), mine.end());
    return bench::median(mine);
}

}  // namespace

int main(int argc, char** argv) {
    bench::Args args{argc, argv, usage};
    const bool quick = args.flag("quick");
    const std::size_t rounds = std::max<std::uint64_t>(1, args.num("rounds", quick ? 5 : 21));
    const std::size_t batches = std::max<std::uint64_t>(1, args.num("batches", quick ? 3000 : 20000));
    const std::size_t workers = std::max<std::uint64_t>(1, args.num("workers", bench::hardware_threads()));
    const std::string json_path = args.str("json");
    args.finish();
    const bench::MachineLoad load;

    const tandem::Op<std::uint32_t, std::uint32_t> op{
        "mix", mix, tandem::GpuKernel<std::uint32_t, std::uint32_t>{std::make_shared<HostMix>()}};
    tandem::EngineConfig without;
    without.cpu_workers = workers;
    tandem::EngineConfig with = without;
    with.gpu.simulated.push_back(tandem::SimulatedDevice{});  // 20 us per chunk: 1-task batches stay on the CPU

    std::printf("1-task round trip, an op with a device kernel: an engine with a simulated device against the same "
                "engine without; %zu workers, %zu rounds of %zu batches\n",
                workers, rounds, batches);
    std::vector<double> all_with, all_without, ratios;
    for (std::size_t r = 0; r < rounds; ++r) {
        const double a = round_trip_p50(with, op, batches, all_with);
        const double b = round_trip_p50(without, op, batches, all_without);
        ratios.push_back(a / b);
        std::printf("  round %zu: with %.0f ns, without %.0f ns (%.3f)\n", r, a, b, a / b);
    }
    const double p50_with = bench::median(all_with), p50_without = bench::median(all_without);
    std::printf("p50 with a device %.0f ns, without %.0f ns; median of the rounds' ratios %.3f\n", p50_with, p50_without,
                bench::median(ratios));
    std::vector<bench::Result> results;
    results.push_back({"one_task_p50_with_device", p50_with, p50_without, "ns", "<=", 1.05});
    results.push_back({"one_task_p50_with_device_paired", bench::median(ratios), 1.0, "", "<=", 1.05});
    return bench::report(results, json_path, "device_overhead", args);
}
