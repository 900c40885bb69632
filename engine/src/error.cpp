#include <tandem/error.hpp>

namespace tandem {
namespace {

class Category final : public std::error_category {
public:
    const char* name() const noexcept override { return "tandem"; }

    std::string message(int value) const override {
        switch (static_cast<ExecError>(value)) {
            case ExecError::BackendUnavailable: return "backend unavailable";
            case ExecError::EmptyBatch: return "empty batch: a batch needs at least one task";
            case ExecError::DuplicateTaskId: return "duplicate task id in batch";
            case ExecError::NoImplementation:
                return "op has no CPU function and no GPU kernel this engine can run";
            case ExecError::ShutDown: return "engine shut down before the work ran";
            case ExecError::Cancelled: return "batch cancelled";
            case ExecError::QueueFull: return "engine at its admission limit";
            case ExecError::TaskFailed: return "task threw an exception";
            case ExecError::DeviceFailed: return "every device able to run the work failed";
            case ExecError::TooLarge: return "batch or payload too large";
            case ExecError::InvalidArgument: return "invalid argument";
            case ExecError::OutOfMemory: return "out of memory while handling the batch";
            case ExecError::NoState:
                return "future has no state (moved from, already consumed, or default-constructed)";
        }
        return "unknown tandem error " + std::to_string(value);
    }
};

}  // namespace

const std::error_category& error_category() noexcept {
    static const Category category;
    return category;
}

std::error_code make_error_code(ExecError e) noexcept {
    return {static_cast<int>(e), error_category()};
}

}  // namespace tandem
