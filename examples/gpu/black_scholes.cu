// Floating point on two devices: the same float32 functor on the GPU and the CPU agrees to a
// tolerance, not to the bit, so the check must say how close is close enough, and why.
//
//                    ┌─► [GPU streams]  H2D ─► BlackScholes (CUDA math, FMA) ─► D2H ─┐
//   Batch<Option> ───┤                                                               ├─► Price{call, put} per option
//   (page-locked)    └─► [CPU workers]  BlackScholes (glibc math) ───────────────────┘           │
//                                                                                                ▼
//   the same formulas in double ─────────────────────► pass if |price − double| ≤ 4e-6 × (spot + strike)
//
// European call and put prices (Black-Scholes-Merton, no dividends) for each option:
//   d1 = (ln(S/K) + (r + v²/2)·T) / (v·√T),  d2 = d1 − v·√T,  N(x) = ½·erfc(−x/√2)
//   call = S·N(d1) − K·e^(−rT)·N(d2),        put = K·e^(−rT)·N(−d2) − S·N(−d1)
//
// Why the tolerance is 4e-6 × (S + K), per price: a price is the difference of two terms of
// size at most S and K, each carrying a few float32 rounding errors (2^-24 ≈ 6e-8 relative)
// and the errors of logf, expf and erfcf: ≤ 1, 2 and 4 ulp in CUDA's math library (glibc's
// are of the same order), and nvcc fuses multiply-adds that g++ rounds twice. The error of d1 cancels
// to first order (S·φ(d1) = K·e^(−rT)·φ(d2)), so what remains is about 3 ulp of S + K with
// exact functions, and 13 ulp (7.7e-7 × (S + K)) when every logf/expf/erfcf result is pushed
// up to 4 ulp off at random (measured over 2 M options of the ranges below, with and without
// FMA). 4e-6 is 2^-24 × 67: five times that adversarial case. With S + K ≤ 200 here it bounds
// the absolute error by 8e-4 (so by 8e-4 relative for any price ≥ 1). A relative tolerance
// alone would be wrong: a deep out-of-the-money price of 1e-9 has no correct float digits,
// and needs none. Built with --use_fast_math (approximate __expf/__logf, flushed denormals),
// the GPU side would need a looser bound; this build doesn't use it.
//
// usage: black_scholes [options (default 4194304)] [--gpu-only]
// Exit status: 0 when every price is within the tolerance, 1 otherwise.
#include "report.hpp"

#include <tandem/gpu/map.cuh>
#include <tandem/tandem.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string_view>
#include <type_traits>
#include <vector>

namespace {

struct Option {
    float spot;        ///< S: the underlying's price now
    float strike;      ///< K
    float years;       ///< T: time to expiry, > 0
    float rate;        ///< r: risk-free rate, continuously compounded
    float volatility;  ///< v: annualised, > 0
};

struct Price {
    float call;
    float put;
};

static_assert(std::is_trivially_copyable_v<Option> && std::is_trivially_copyable_v<Price>);

/// The standard normal CDF in float. N(−x) is computed by the same formula, not as 1 − N(x),
/// so a small tail probability keeps its relative precision.
__host__ __device__ inline float normal_cdf(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }

/// Black-Scholes call and put in float32: the op's CPU function and, through tandem::gpu::map,
/// its GPU kernel. Stateless and trivially copyable, as map requires.
struct BlackScholes {
    __host__ __device__ Price operator()(const Option& o) const {
        const float vol_sqrt_t = o.volatility * sqrtf(o.years);
        const float drift = (o.rate + 0.5f * o.volatility * o.volatility) * o.years;
        const float d1 = (logf(o.spot / o.strike) + drift) / vol_sqrt_t;
        const float d2 = d1 - vol_sqrt_t;
        const float discounted_strike = o.strike * expf(-o.rate * o.years);
        Price p;
        p.call = o.spot * normal_cdf(d1) - discounted_strike * normal_cdf(d2);
        p.put = discounted_strike * normal_cdf(-d2) - o.spot * normal_cdf(-d1);
        return p;
    }
};

/// The same formulas in double, from the same float inputs: the reference.
struct ReferencePrice {
    double call, put;
};
ReferencePrice reference(const Option& o) {
    const double s = o.spot, k = o.strike, t = o.years, r = o.rate, v = o.volatility;
    const auto cdf = [](double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); };
    const double vol_sqrt_t = v * std::sqrt(t);
    const double d1 = (std::log(s / k) + (r + 0.5 * v * v) * t) / vol_sqrt_t;
    const double d2 = d1 - vol_sqrt_t;
    const double discounted_strike = k * std::exp(-r * t);
    return {s * cdf(d1) - discounted_strike * cdf(d2), discounted_strike * cdf(-d2) - s * cdf(-d1)};
}

/// The tolerance per price (see the comment at the top): 4e-6 × (S + K).
constexpr double tolerance_factor = 4e-6;

}  // namespace

int main(int argc, char** argv) {
    std::size_t n = std::size_t{1} << 22;
    bool gpu_only = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--gpu-only") {
            gpu_only = true;
        } else {
            n = std::strtoull(argv[i], nullptr, 10);
            if (n == 0) {
                std::fprintf(stderr, "usage: %s [options > 0] [--gpu-only]\n", argv[0]);
                return 2;
            }
        }
    }

    tandem::EngineConfig config;
    config.gpu.cpu_helps = !gpu_only;
    if (gpu_only) config.gpu.threshold_tasks = 1;  // every batch to the GPU, whatever the models say
    tandem::Engine engine{config};
    const tandem::Op<Option, Price> op{"black_scholes", BlackScholes{},
                                       tandem::gpu::map<Option, Price>(BlackScholes{})};

    // Random options over a wide range of moneyness, expiry and volatility: S + K ≤ 200.
    std::mt19937_64 rng{2026};
    std::uniform_real_distribution<float> spot{5.0f, 100.0f}, strike{1.0f, 100.0f}, years{0.25f, 10.0f},
        rate{0.0f, 0.1f}, volatility{0.05f, 0.6f};
    tandem::Batch<Option> batch{engine.pinned_memory()};
    batch.reserve(n);
    for (std::uint64_t i = 0; i < n; ++i) {
        Option o;
        o.spot = spot(rng);
        o.strike = strike(rng);
        o.years = years(rng);
        o.rate = rate(rng);
        o.volatility = volatility(rng);
        batch.push(i, o);
    }
    const std::vector<Option> options(batch.payloads().begin(), batch.payloads().end());

    // Warm-up batch: loads the kernel and lets the scheduler calibrate this op.
    {
        tandem::Batch<Option> warm{engine.pinned_memory()};
        const std::size_t warm_n = std::min<std::size_t>(n, 65536);
        warm.reserve(warm_n);
        for (std::size_t i = 0; i < warm_n; ++i) warm.push(i, options[i]);
        engine.submit(op, std::move(warm)).get();
    }

    const auto t0 = std::chrono::steady_clock::now();
    auto [results, stats] = engine.submit(op, std::move(batch)).get();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    // Against the double reference: the criterion. Against the host float build of the same
    // functor: how far the devices drifted apart (information, no criterion).
    std::size_t out_of_tolerance = 0, first_bad = n, bit_identical = 0;
    double max_abs = 0, max_scaled = 0, max_rel_above_1 = 0, max_drift = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const Option& o = options[i];
        const Price got = results[i].output;
        const ReferencePrice ref = reference(o);
        const double bound = tolerance_factor * (static_cast<double>(o.spot) + o.strike);
        bool bad = false;
        for (const auto& [value, exact] : {std::pair<double, double>{got.call, ref.call}, {got.put, ref.put}}) {
            const double err = std::fabs(value - exact);  // NaN compares false: caught below
            bad = bad || !(err <= bound);
            max_abs = std::max(max_abs, err);
            max_scaled = std::max(max_scaled, err / (static_cast<double>(o.spot) + o.strike));
            if (exact >= 1.0) max_rel_above_1 = std::max(max_rel_above_1, err / exact);
        }
        if (bad) {
            if (first_bad == n) first_bad = i;
            ++out_of_tolerance;
        }
        const Price host = BlackScholes{}(o);
        bit_identical += std::memcmp(&host, &got, sizeof got) == 0;
        max_drift = std::max({max_drift, std::fabs(static_cast<double>(host.call) - got.call),
                              std::fabs(static_cast<double>(host.put) - got.put)});
    }

    std::printf("Black-Scholes call + put of %zu options, float32 (after a warm-up batch)%s\n", n,
                gpu_only ? ", GPU only" : "");
    examples::print_run(engine, stats, n, seconds, "options");
    std::printf("accuracy  : tolerance per price |price - double reference| <= %.0e * (spot + strike) (<= %.1e here)\n",
                tolerance_factor, tolerance_factor * 200);
    std::printf("            max abs error %.3e, max error / (spot + strike) %.3e (%.1f%% of the tolerance)\n", max_abs,
                max_scaled, 100.0 * max_scaled / tolerance_factor);
    std::printf("            max relative error on prices >= 1: %.3e\n", max_rel_above_1);
    std::printf("            engine vs host float build: %zu of %zu options bit-identical, max |difference| %.3e\n",
                bit_identical, n, max_drift);
    std::printf("option[0] : S=%.4f K=%.4f T=%.4f r=%.4f v=%.4f -> call %.6f put %.6f (reference %.6f %.6f)\n",
                static_cast<double>(options[0].spot), static_cast<double>(options[0].strike),
                static_cast<double>(options[0].years), static_cast<double>(options[0].rate),
                static_cast<double>(options[0].volatility), static_cast<double>(results[0].output.call),
                static_cast<double>(results[0].output.put), reference(options[0]).call, reference(options[0]).put);
    if (first_bad != n) {
        const Option& o = options[first_bad];
        const Price got = results[first_bad].output;
        std::printf("first out of tolerance: option %zu (S=%g K=%g T=%g r=%g v=%g): call %.9g put %.9g,"
                    " reference %.9g %.9g\n",
                    first_bad, static_cast<double>(o.spot), static_cast<double>(o.strike), static_cast<double>(o.years),
                    static_cast<double>(o.rate), static_cast<double>(o.volatility), static_cast<double>(got.call),
                    static_cast<double>(got.put), reference(o).call, reference(o).put);
    }

    bool ok = true;
    auto check = [&ok](bool pass, const char* what) {
        std::printf("check     : %-58s %s\n", what, pass ? "ok" : "FAILED");
        ok = ok && pass;
    };
    check(out_of_tolerance == 0, "every price within the tolerance");
    check(results.all_ok(), "no task failed");
    check(stats.cpu_tasks + stats.gpu_tasks == n, "cpu_tasks + gpu_tasks == options");
    if (engine.gpu_count() == 0) {
        check(stats.gpu_tasks == 0, "no GPU: every task ran on the CPU");
    } else if (stats.placement.planned_cpu_tasks == n) {
        std::printf("check     : placement (%s) kept the whole batch on the CPU\n",
                    tandem::to_string(stats.placement.reason));
    } else {
        check(stats.gpu_tasks > 0, "a GPU is present: gpu_tasks > 0");
        if (gpu_only) check(stats.gpu_tasks == n, "--gpu-only: every task ran on the GPU");
    }
    std::printf("%s: %zu of %zu options within the tolerance\n", ok ? "OK" : "FAIL", n - out_of_tolerance, n);
    return ok ? 0 : 1;
}
