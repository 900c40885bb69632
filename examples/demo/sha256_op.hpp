#pragma once
// The demo's op: SHA-256 of a 64-byte message with OpenSSL. Shared by the demo
// (sha256_demo.cpp) and the cluster demo (examples/cluster/sha256_cluster.cpp).
#include <openssl/sha.h>

#include <array>
#include <cstdint>

namespace demo {

using Message = std::array<std::uint8_t, 64>;
using Digest = std::array<std::uint8_t, 32>;

inline Digest sha256(const Message& m) {
    Digest d;
    SHA256(m.data(), m.size(), d.data());
    return d;
}

}  // namespace demo
