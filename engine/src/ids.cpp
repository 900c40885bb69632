#include <tandem/task.hpp>

#include <unordered_set>

namespace tandem {

bool IdColumn::unique() const {
    if (increasing_) return true;  // strictly increasing ids cannot repeat
    std::unordered_set<std::uint64_t> seen;
    seen.reserve(size_);
    for (std::uint64_t id : ids_) {
        if (!seen.insert(id).second) return false;
    }
    return true;
}

}  // namespace tandem
