// The cluster benchmark's ops, CPU only (the benchmark's variant for builds and hosts without
// a GPU).
#include "../mix_ops.hpp"
#include "ops.hpp"

#include <string>

namespace bench::cluster {

Ops make_ops(std::uint32_t rounds) {
    return Ops{{"mix_" + std::to_string(rounds), Mix{rounds}}, {"scramble", Scramble{}}, false};
}

}  // namespace bench::cluster
