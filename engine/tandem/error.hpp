#pragma once
/// \file
/// Errors: one enum, one std::error_category, one exception type thrown at the API's edge.

#include <cstddef>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>

namespace tandem {

/// Why a batch, a task or an executor failed. Values are stable; 0 means success.
enum class ExecError {
    /// The backend asked for (a GPU) does not exist, is not built in, or was retired.
    BackendUnavailable = 1,
    /// `submit` was given a batch with no tasks.
    EmptyBatch,
    /// Two tasks of one batch carry the same id.
    DuplicateTaskId,
    /// The op has neither a CPU function nor a GPU kernel usable on this engine.
    NoImplementation,
    /// The engine was shut down before the batch (or this part of it) could run.
    ShutDown,
    /// The batch was cancelled before this part of it ran.
    Cancelled,
    /// `try_submit` found the engine at its admission limit.
    QueueFull,
    /// The task's function threw; `TaskResult::error` holds the exception.
    TaskFailed,
    /// Every device that could run the work failed.
    DeviceFailed,
    /// A payload or batch is larger than the engine accepts (config limits or memory).
    TooLarge,
    /// An argument outside its documented range (a config value, an index).
    InvalidArgument,
    /// Memory ran out while the engine handled the batch (a mailbox, the results).
    OutOfMemory,
    /// The `BatchFuture` has no state: moved from, already consumed, or default-constructed.
    NoState,
};

/// The category of `ExecError` values; its name is "tandem".
const std::error_category& error_category() noexcept;

/// Makes `std::error_code{e, tandem::error_category()}`; found by ADL.
std::error_code make_error_code(ExecError e) noexcept;

/// Why a device gave work back to the CPU workers: an error condition that the error codes of
/// every device backend (CUDA's, the simulated device's, Tandem's own) compare equal to, so a
/// fallback is counted by reason (`tandem_cpu_fallbacks_total{reason}`) whatever its code:
/// `if (why == tandem::FallbackReason::OutOfMemory) ...`.
enum class FallbackReason {
    /// The kernel launch (or another call that issues the chunk) was refused.
    LaunchError = 1,
    /// Device or page-locked memory ran out.
    OutOfMemory,
    /// The device failed (a sticky error; it is retired) or is unavailable.
    DeviceFailed,
    /// The device has no code for the op (no kernel image for it, no host emulation).
    NoKernel,
    /// Anything else.
    Other,
};
/// Number of `FallbackReason` values (they run from 1 to this).
inline constexpr std::size_t fallback_reason_count = 5;

/// The category of `FallbackReason` conditions; its name is "tandem.fallback".
const std::error_category& fallback_category() noexcept;

/// Makes `std::error_condition{r, tandem::fallback_category()}`; found by ADL.
std::error_condition make_error_condition(FallbackReason r) noexcept;

/// The reason `why` falls under (`Other` when none claims it).
FallbackReason fallback_reason(std::error_code why) noexcept;

/// The label value: "launch_error", "out_of_memory", "device_failed", "no_kernel", "other".
const char* to_string(FallbackReason r) noexcept;

/// Thrown at the API's edge (`BatchFuture::get`, blocking helpers) for a batch-level error.
class Error : public std::system_error {
public:
    explicit Error(std::error_code code) : std::system_error{code} {}
    Error(std::error_code code, const std::string& what) : std::system_error{code, what} {}
};

}  // namespace tandem

template <>
struct std::is_error_code_enum<tandem::ExecError> : std::true_type {};
template <>
struct std::is_error_condition_enum<tandem::FallbackReason> : std::true_type {};
