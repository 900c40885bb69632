#pragma once
/// \file
/// SHA-256 (FIPS 180-4) of one 64-byte message, as a `__host__ __device__` functor: the same
/// source compiles for the GPU kernel and for the host, so both can be checked against OpenSSL.
///
/// A 64-byte message is exactly one 512-bit block, but FIPS 180-4 §5.1.1 pads every message
/// with a 1 bit, zeros and the 64-bit length, so the hash takes two compressions:
///
///   H(0) ──compress(message block)──► H(1) ──compress(padding block)──► H(2) = digest
///
///   padding block: 0x80 00 00 … 00 | 00 00 00 00 00 00 02 00  (length = 512 bits)
///
/// The padding block is the same for every message, so once the rounds are unrolled its whole
/// message schedule folds to constants.

#ifndef __CUDACC__
#error "sha256_device.cuh holds CUDA code: include it from a .cu file compiled by nvcc"
#endif

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace examples {

/// One 64-byte message. Aligned to 16 bytes so the kernel reads it with four 128-bit loads
/// (the engine's device buffers come from cudaMalloc, aligned far beyond that).
struct alignas(16) Message {
    std::uint8_t bytes[64];
};

/// A SHA-256 digest, big-endian as FIPS 180-4 prints it (and as OpenSSL writes it).
struct alignas(16) Digest {
    std::uint8_t bytes[32];
};

static_assert(sizeof(Message) == 64 && std::is_trivially_copyable_v<Message>);
static_assert(sizeof(Digest) == 32 && std::is_trivially_copyable_v<Digest>);

namespace sha256_detail {

// FIPS 180-4 §4.2.2: the first 32 bits of the fractional parts of the cube roots of the first
// 64 primes. Kept twice because device code cannot index a host array: a __constant__ copy for
// the GPU (with the rounds unrolled each index is a constant-bank operand) and a host copy.
#define EXAMPLES_SHA256_K                                                                              \
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u,         \
        0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu,     \
        0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu,     \
        0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau, 0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,     \
        0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu,     \
        0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,     \
        0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u, 0x19a4c116u,     \
        0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,     \
        0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u,     \
        0xc67178f2u
static __constant__ std::uint32_t k_device[64] = {EXAMPLES_SHA256_K};
static constexpr std::uint32_t k_host[64] = {EXAMPLES_SHA256_K};
#undef EXAMPLES_SHA256_K

/// Round constant K(t).
__host__ __device__ __forceinline__ std::uint32_t k(int t) {
#ifdef __CUDA_ARCH__
    return k_device[t];
#else
    return k_host[t];
#endif
}

/// FIPS 180-4 §5.3.3: the initial hash value H(0), the first 32 bits of the fractional parts
/// of the square roots of the first 8 primes.
__host__ __device__ __forceinline__ void initial_hash(std::uint32_t h[8]) {
    h[0] = 0x6a09e667u;
    h[1] = 0xbb67ae85u;
    h[2] = 0x3c6ef372u;
    h[3] = 0xa54ff53au;
    h[4] = 0x510e527fu;
    h[5] = 0x9b05688cu;
    h[6] = 0x1f83d9abu;
    h[7] = 0x5be0cd19u;
}

// FIPS 180-4 §3.2 and §4.1.2. nvcc turns the rotate into one funnel shift, g++ into one ror.
__host__ __device__ __forceinline__ std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
__host__ __device__ __forceinline__ std::uint32_t ch(std::uint32_t x, std::uint32_t y, std::uint32_t z) {
    return (x & y) ^ (~x & z);
}
__host__ __device__ __forceinline__ std::uint32_t maj(std::uint32_t x, std::uint32_t y, std::uint32_t z) {
    return (x & y) ^ (x & z) ^ (y & z);
}
__host__ __device__ __forceinline__ std::uint32_t big_sigma0(std::uint32_t x) {
    return rotr(x, 2) ^ rotr(x, 13) ^ rotr(x, 22);
}
__host__ __device__ __forceinline__ std::uint32_t big_sigma1(std::uint32_t x) {
    return rotr(x, 6) ^ rotr(x, 11) ^ rotr(x, 25);
}
__host__ __device__ __forceinline__ std::uint32_t small_sigma0(std::uint32_t x) {
    return rotr(x, 7) ^ rotr(x, 18) ^ (x >> 3);
}
__host__ __device__ __forceinline__ std::uint32_t small_sigma1(std::uint32_t x) {
    return rotr(x, 17) ^ rotr(x, 19) ^ (x >> 10);
}

/// FIPS 180-4 §6.2.2: folds one 512-bit block, given as 16 big-endian words `w`, into the
/// hash value `h`. `w` is overwritten: the message schedule W(t) is kept as a 16-word window
/// (W(t) replaces W(t-16)), which unrolled lives in registers, not in local memory.
__host__ __device__ __forceinline__ void compress(std::uint32_t h[8], std::uint32_t w[16]) {
    std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int t = 0; t < 64; ++t) {
        if (t >= 16) {
            w[t & 15] += small_sigma1(w[(t - 2) & 15]) + w[(t - 7) & 15] + small_sigma0(w[(t - 15) & 15]);
        }
        const std::uint32_t t1 = hh + big_sigma1(e) + ch(e, f, g) + k(t) + w[t & 15];
        const std::uint32_t t2 = big_sigma0(a) + maj(a, b, c);
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

/// The big-endian word at `p` (FIPS 180-4 §3.1: words are big-endian).
__host__ __device__ __forceinline__ std::uint32_t load_be32(const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

}  // namespace sha256_detail

/// SHA-256 of a 64-byte message. Trivially copyable and stateless, so `tandem::gpu::map`
/// can pass it to the kernel by value, and the same object works as a CPU function.
struct Sha256 {
    __host__ __device__ Digest operator()(const Message& m) const {
        using namespace sha256_detail;
        std::uint32_t w[16];
#ifdef __CUDA_ARCH__
        // Four 128-bit loads instead of 64 byte loads (Message is 16-byte aligned), then a
        // byte swap per word: one PRMT instruction.
        const uint4* v = reinterpret_cast<const uint4*>(m.bytes);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const uint4 x = v[q];
            w[4 * q + 0] = __byte_perm(x.x, 0, 0x0123);
            w[4 * q + 1] = __byte_perm(x.y, 0, 0x0123);
            w[4 * q + 2] = __byte_perm(x.z, 0, 0x0123);
            w[4 * q + 3] = __byte_perm(x.w, 0, 0x0123);
        }
#else
        for (int i = 0; i < 16; ++i) w[i] = load_be32(m.bytes + 4 * i);
#endif
        std::uint32_t h[8];
        initial_hash(h);
        compress(h, w);  // block 1: the message itself

        // Block 2: padding. A 1 bit right after the message, zeros, then the message length
        // in bits (64 × 8 = 512 = 0x200) as a 64-bit big-endian integer (§5.1.1).
        w[0] = 0x80000000u;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
        for (int i = 1; i < 15; ++i) w[i] = 0;
        w[15] = 512;
        compress(h, w);

        Digest out;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
        for (int i = 0; i < 8; ++i) {
            out.bytes[4 * i + 0] = static_cast<std::uint8_t>(h[i] >> 24);
            out.bytes[4 * i + 1] = static_cast<std::uint8_t>(h[i] >> 16);
            out.bytes[4 * i + 2] = static_cast<std::uint8_t>(h[i] >> 8);
            out.bytes[4 * i + 3] = static_cast<std::uint8_t>(h[i]);
        }
        return out;
    }
};

}  // namespace examples
