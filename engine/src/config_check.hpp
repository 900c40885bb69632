#pragma once
// Internal: validation of EngineConfig (config.cpp).

#include <tandem/config.hpp>

#include <climits>
#include <cstddef>

namespace tandem::detail {

/// Most CPU workers an engine runs.
constexpr std::size_t max_cpu_workers = 1024;
/// Most devices (real or simulated): a batch records the devices it used in a 64-bit mask.
constexpr std::size_t max_devices = 64;

/// Throws `std::invalid_argument` naming the first field out of its range, and the range.
void validate(const EngineConfig& config);

}  // namespace tandem::detail
