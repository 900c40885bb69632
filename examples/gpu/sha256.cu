// Batch SHA-256 on the GPU, bit-exact against OpenSSL: one op, two implementations.
//
//   Batch<Message> in page-locked memory
//        │ submit
//        ▼
//   [scheduler] ─┬─► [GPU streams]  H2D ─► sha256 kernel (our Sha256 functor) ─► D2H ─┬─► digests in task order,
//                └─► [CPU workers]  OpenSSL SHA-256 ──────────────────────────────────┘   each checked vs OpenSSL
//
// The op pairs OpenSSL on the CPU with our own FIPS 180-4 functor (sha256_device.cuh) on the
// GPU, and the engine may split one batch between them, so the two must agree bit for bit:
// the program checks every digest of the batch against OpenSSL, whichever device made it.
// Building the batch in `engine.pinned_memory()` lets the GPU copy payloads straight from it
// (no staging copy); its outputs land in page-locked memory too.
//
// usage: sha256 [messages (default 1048576)] [--gpu-only]
//   --gpu-only: the CPU workers don't take chunks of the batch (GpuConfig::cpu_helps = false),
//               so with a GPU every digest checked comes from the kernel.
// Exit status: 0 when every digest matches, 1 on any mismatch or failed check.
#include "../common/openssl_sha256.hpp"
#include "report.hpp"
#include "sha256_device.cuh"

#include <tandem/gpu/map.cuh>
#include <tandem/tandem.hpp>

#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

using examples::Digest;
using examples::Message;
using examples::Sha256;

namespace {

/// The reference: OpenSSL's one-shot SHA256(), the simplest call there is.
Digest reference_sha256(const Message& m) {
    Digest d;
    SHA256(m.bytes, sizeof m.bytes, d.bytes);
    return d;
}

/// The op's CPU function: OpenSSL too, through EVP with the algorithm fetched once and one
/// context per CPU worker (examples/common/openssl_sha256.hpp: in OpenSSL 3, SHA256() looks the
/// algorithm up on every call, which makes it about 4x slower on 64-byte messages than this).
/// Both use the CPU's SHA extensions.
struct OpensslSha256 {
    Digest operator()(const Message& m) const {
        Digest d;
        examples::openssl_sha256(m.bytes, sizeof m.bytes, d.bytes);  // throws: this task's error
        return d;
    }
};

bool same(const Digest& a, const Digest& b) { return std::memcmp(a.bytes, b.bytes, sizeof a.bytes) == 0; }

std::string hex(const std::uint8_t* p, std::size_t n) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s;
    for (std::size_t i = 0; i < n; ++i) {
        s += digits[p[i] >> 4];
        s += digits[p[i] & 15];
    }
    return s;
}

/// SHA-256 of any byte string, on the host, from the same compression function as the
/// functor but with the general padding of FIPS 180-4 §5.1.1: used to check the functor's
/// compression against the published test vectors, and its fixed padding block against the
/// general rule.
std::array<std::uint8_t, 32> sha256_any(const std::uint8_t* data, std::size_t len) {
    std::vector<std::uint8_t> padded(data, data + len);
    padded.push_back(0x80);
    while (padded.size() % 64 != 56) padded.push_back(0);
    const std::uint64_t bits = std::uint64_t{len} * 8;
    for (int i = 7; i >= 0; --i) padded.push_back(static_cast<std::uint8_t>(bits >> (8 * i)));

    std::uint32_t h[8];
    examples::sha256_detail::initial_hash(h);
    for (std::size_t block = 0; block < padded.size(); block += 64) {
        std::uint32_t w[16];
        for (int i = 0; i < 16; ++i) w[i] = examples::sha256_detail::load_be32(padded.data() + block + 4 * i);
        examples::sha256_detail::compress(h, w);
    }
    std::array<std::uint8_t, 32> out;
    for (int i = 0; i < 8; ++i) {
        for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<std::uint8_t>(h[i] >> (24 - 8 * j));
    }
    return out;
}

/// Known answers before any batch: the NIST example vectors ("abc", the 448-bit message) and
/// the empty string for the compression function, then the 64-byte functor (host build)
/// against the general padding and OpenSSL.
bool self_test() {
    struct Vector {
        std::string_view message, digest;
    };
    static constexpr Vector vectors[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",  // 448 bits: two blocks
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    bool ok = true;
    for (const auto& v : vectors) {
        const auto* bytes = reinterpret_cast<const std::uint8_t*>(v.message.data());
        const auto d = sha256_any(bytes, v.message.size());
        std::uint8_t ref[32];
        SHA256(bytes, v.message.size(), ref);
        const std::string got = hex(d.data(), d.size());
        const bool pass = got == v.digest && std::memcmp(d.data(), ref, 32) == 0;
        const int shown = static_cast<int>(std::min<std::size_t>(v.message.size(), 12));
        std::printf("self-test : known answer \"%.*s\"%s -> %s %s\n", shown, v.message.data(),
                    v.message.size() > 12 ? "..." : "", got.c_str(), pass ? "ok" : "MISMATCH");
        ok = ok && pass;
    }
    // 64-byte messages: the functor's fixed padding block must match the general rule and
    // OpenSSL. All zeros, all ones, and "abc" followed by zeros.
    Message fixed[3]{};
    std::memset(fixed[1].bytes, 0xff, 64);
    std::memcpy(fixed[2].bytes, "abc", 3);
    for (const Message& m : fixed) {
        const Digest d = Sha256{}(m);
        const auto general = sha256_any(m.bytes, 64);
        const bool pass = same(d, reference_sha256(m)) && std::memcmp(d.bytes, general.data(), 32) == 0;
        std::printf("self-test : 64-byte message %s... -> %s %s\n", hex(m.bytes, 4).c_str(), hex(d.bytes, 32).c_str(),
                    pass ? "ok" : "MISMATCH");
        ok = ok && pass;
    }
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    std::size_t n = std::size_t{1} << 20;
    bool gpu_only = false;
    std::string trace_file;  // --trace FILE: the run's trace, Trace Event Format JSON
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--gpu-only") {
            gpu_only = true;
        } else if (arg == "--trace" && i + 1 < argc) {
            trace_file = argv[++i];
        } else {
            n = std::strtoull(argv[i], nullptr, 10);
            if (n == 0) {
                std::fprintf(stderr, "usage: %s [messages > 0] [--gpu-only] [--trace FILE]\n", argv[0]);
                return 2;
            }
        }
    }

    bool ok = self_test();

    tandem::EngineConfig config;
    config.gpu.cpu_helps = !gpu_only;
    if (gpu_only) config.gpu.threshold_tasks = 1;  // every batch to the GPU, whatever the models say
    config.trace.enabled = !trace_file.empty();
    tandem::Engine engine{config};
    const tandem::Op<Message, Digest> op{"sha256", OpensslSha256{}, tandem::gpu::map<Message, Digest>(Sha256{})};

    // N random messages, written straight into page-locked memory.
    std::mt19937_64 rng{2026};
    tandem::Batch<Message> batch{engine.pinned_memory()};
    batch.reserve(n);
    for (std::uint64_t i = 0; i < n; ++i) {
        Message m;
        for (std::size_t k = 0; k < sizeof m.bytes; k += 8) {
            const std::uint64_t r = rng();
            std::memcpy(m.bytes + k, &r, 8);
        }
        batch.push(i, m);
    }

    // The reference, computed before the batch is handed over: OpenSSL on every message, and
    // the host build of our functor on a sample (the GPU build is what the batch checks).
    std::vector<Digest> expected(n);
    std::size_t host_functor_mismatches = 0;
    const std::size_t host_sample = std::min<std::size_t>(n, 65536);
    for (std::size_t i = 0; i < n; ++i) {
        const Message& m = batch.payloads()[i];
        expected[i] = reference_sha256(m);
        if (i < host_sample) host_functor_mismatches += !same(Sha256{}(m), expected[i]);
    }
    std::printf("self-test : host build of the functor on %zu random messages: %zu mismatches\n", host_sample,
                host_functor_mismatches);
    ok = ok && host_functor_mismatches == 0;

    // A small warm-up batch first: the first batch of an op pays for loading the kernel and
    // for the scheduler's calibration; its digests are checked too.
    const std::size_t warm_n = std::min<std::size_t>(n, 65536);
    tandem::Batch<Message> warm{engine.pinned_memory()};
    warm.reserve(warm_n);
    for (std::size_t i = 0; i < warm_n; ++i) warm.push(i, batch.payloads()[i]);
    auto warm_result = engine.submit(op, std::move(warm)).get();
    std::size_t warm_mismatches = 0;
    for (std::size_t i = 0; i < warm_n; ++i) warm_mismatches += !same(warm_result.results[i].output, expected[i]);

    const auto t0 = std::chrono::steady_clock::now();
    auto [results, stats] = engine.submit(op, std::move(batch)).get();
    if (!trace_file.empty()) engine.save_trace(trace_file);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::size_t mismatches = 0, first_bad = n;
    for (std::size_t i = 0; i < n; ++i) {
        if (!same(results[i].output, expected[i])) {
            if (first_bad == n) first_bad = i;
            ++mismatches;
        }
    }

    std::printf("SHA-256 of %zu random 64-byte messages (after a %zu-message warm-up batch)%s\n", n, warm_n,
                gpu_only ? ", GPU only" : "");
    examples::print_run(engine, stats, n, seconds, "msg");
    std::printf("            %.2f GB/s of message data\n", static_cast<double>(n) * 64 / seconds / 1e9);
    std::printf("digest[0] : %s\n", hex(results[0].output.bytes, 32).c_str());
    if (first_bad != n) {
        std::printf("first mismatch at task %zu: got %s, OpenSSL %s\n", first_bad,
                    hex(results[first_bad].output.bytes, 32).c_str(), hex(expected[first_bad].bytes, 32).c_str());
    }

    auto check = [&ok](bool pass, const char* what) {
        std::printf("check     : %-58s %s\n", what, pass ? "ok" : "FAILED");
        ok = ok && pass;
    };
    check(warm_mismatches == 0, "warm-up batch: every digest bit-exact against OpenSSL");
    check(mismatches == 0, "every digest bit-exact against OpenSSL");
    check(results.all_ok() && warm_result.results.all_ok(), "no task failed");
    check(stats.cpu_tasks + stats.gpu_tasks == n, "cpu_tasks + gpu_tasks == messages");
    if (engine.gpu_count() == 0) {
        check(stats.gpu_tasks == 0, "no GPU: every task ran on the CPU");
    } else if (stats.placement.planned_cpu_tasks == n) {
        std::printf("check     : placement (%s) kept the whole batch on the CPU\n",
                    tandem::to_string(stats.placement.reason));
    } else {
        check(stats.gpu_tasks > 0, "a GPU is present: gpu_tasks > 0");
        if (gpu_only) check(stats.gpu_tasks == n, "--gpu-only: every task ran on the GPU");
    }
    std::printf("%s: %zu of %zu digests match OpenSSL\n", ok ? "OK" : "FAIL", n - mismatches, n);
    return ok ? 0 : 1;
}
