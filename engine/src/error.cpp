#include <tandem/error.hpp>

#include <string>

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

    using std::error_category::equivalent;  // the other overload stays as it is
    /// Tandem's own codes that a device may give work back with.
    bool equivalent(int value, const std::error_condition& condition) const noexcept override {
        if (condition.category() != fallback_category()) return std::error_category::equivalent(value, condition);
        FallbackReason r = FallbackReason::Other;
        switch (static_cast<ExecError>(value)) {
            case ExecError::OutOfMemory: r = FallbackReason::OutOfMemory; break;
            case ExecError::BackendUnavailable:
            case ExecError::DeviceFailed: r = FallbackReason::DeviceFailed; break;
            case ExecError::NoImplementation: r = FallbackReason::NoKernel; break;
            default: break;
        }
        return condition.value() == static_cast<int>(r);
    }
};

class FallbackCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "tandem.fallback"; }

    std::string message(int value) const override {
        switch (static_cast<FallbackReason>(value)) {
            case FallbackReason::LaunchError: return "kernel launch failed";
            case FallbackReason::OutOfMemory: return "out of memory";
            case FallbackReason::DeviceFailed: return "device failed";
            case FallbackReason::NoKernel: return "no kernel for the op on the device";
            case FallbackReason::Other: return "other device error";
        }
        return "unknown fallback reason " + std::to_string(value);
    }

    using std::error_category::equivalent;  // the other overload stays as it is
    /// Codes of categories that know nothing of fallbacks: ENOMEM is running out of memory;
    /// whatever no category claims for a named reason is `Other`.
    bool equivalent(const std::error_code& code, int value) const noexcept override {
        if (code.category() == *this) return code.value() == value;
        if (value == static_cast<int>(FallbackReason::OutOfMemory)) return code == std::errc::not_enough_memory;
        if (value != static_cast<int>(FallbackReason::Other)) return false;
        for (int r = 1; r < static_cast<int>(FallbackReason::Other); ++r) {
            if (code == std::error_condition{r, *this}) return false;
        }
        return true;
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

const std::error_category& fallback_category() noexcept {
    static const FallbackCategory category;
    return category;
}

std::error_condition make_error_condition(FallbackReason r) noexcept {
    return {static_cast<int>(r), fallback_category()};
}

FallbackReason fallback_reason(std::error_code why) noexcept {
    for (FallbackReason r : {FallbackReason::LaunchError, FallbackReason::OutOfMemory, FallbackReason::DeviceFailed,
                             FallbackReason::NoKernel}) {
        if (why == r) return r;
    }
    return FallbackReason::Other;
}

const char* to_string(FallbackReason r) noexcept {
    switch (r) {
        case FallbackReason::LaunchError: return "launch_error";
        case FallbackReason::OutOfMemory: return "out_of_memory";
        case FallbackReason::DeviceFailed: return "device_failed";
        case FallbackReason::NoKernel: return "no_kernel";
        case FallbackReason::Other: return "other";
    }
    return "other";
}

}  // namespace tandem
