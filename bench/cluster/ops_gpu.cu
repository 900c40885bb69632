// The cluster benchmark's ops with their GPU kernels (tandem::gpu::map over bench/mix_ops.hpp).
#include <tandem/gpu/map.cuh>

#include "../mix_ops.hpp"
#include "ops.hpp"

namespace bench::cluster {

Ops make_ops(std::uint32_t rounds) {
    const Mix mix{rounds};
    return Ops{{"mix_" + std::to_string(rounds), mix, tandem::gpu::map<std::uint32_t, std::uint32_t>(mix)},
               {"scramble", Scramble{}, tandem::gpu::map<std::uint32_t, std::uint32_t>(Scramble{})},
               true};
}

}  // namespace bench::cluster
