#pragma once
// The demo's op: SHA-256 of a 64-byte message with OpenSSL (through EVP, one context per
// thread: examples/common/openssl_sha256.hpp says why not the one-shot SHA256()). Shared by the
// demo (sha256_demo.cpp) and the cluster demo (examples/cluster/sha256_cluster.cpp).
#include "../common/openssl_sha256.hpp"

#include <array>
#include <cstdint>

namespace demo {

using Message = std::array<std::uint8_t, 64>;
using Digest = std::array<std::uint8_t, 32>;

inline Digest sha256(const Message& m) {
    Digest d;
    examples::openssl_sha256(m.data(), m.size(), d.data());
    return d;
}

}  // namespace demo
