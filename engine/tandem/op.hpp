#pragma once
/// \file
/// Ops: what to run on each task — a CPU function, a GPU kernel, or both.

#include <tandem/detail/thread_share.hpp>
#include <tandem/error.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace tandem {

namespace detail {
template <class T, class R>
class BatchJob;
}  // namespace detail

/// Receives the tasks of a chunk whose function threw. Engine-internal; ops call it.
class TaskErrorSink {
public:
    /// Records that the task at batch position `index` threw the current exception.
    virtual void task_failed(std::size_t index, std::exception_ptr error) noexcept = 0;

protected:
    ~TaskErrorSink() = default;
};

template <class F>
struct is_std_function : std::false_type {};
template <class Sig>
struct is_std_function<std::function<Sig>> : std::true_type {};

/// A CPU function over a contiguous range of tasks, type-erased once per op (not per task):
/// the per-task call is inlined into the range loop, so a trivial map vectorizes.
template <class T, class R>
class CpuFunction {
public:
    /// The range loop behind the type erasure.
    struct Impl {
        virtual ~Impl() = default;
        /// Constructs `out[i]` from `in[i]` for i in [0, n); `base` is the batch position of
        /// `in[0]`. A throwing task gets a default-constructed output and is reported to
        /// `errors`; the others still run.
        virtual void run(const T* in, R* out, std::size_t n, std::size_t base,
                         TaskErrorSink& errors) const = 0;
    };

    CpuFunction() = default;

    /// Wraps `f`, callable as `R(const T&)`. An empty `std::function` or null pointer
    /// leaves the function empty (`bool(*this) == false`).
    template <class F>
        requires(!std::same_as<std::decay_t<F>, CpuFunction> && std::invocable<const std::decay_t<F>&, const T&>)
    CpuFunction(F&& f) {  // NOLINT: implicit by design, so Op{"name", lambda} reads well
        using Fn = std::decay_t<F>;
        Fn fn(std::forward<F>(f));
        if constexpr (std::is_pointer_v<Fn> || std::is_member_pointer_v<Fn>) {
            if (fn == nullptr) return;
        } else if constexpr (is_std_function<Fn>::value) {
            if (!fn) return;  // an empty std::function
        }
        impl_ = std::make_shared<const Model<Fn>>(std::move(fn));
    }

    explicit operator bool() const noexcept { return impl_ != nullptr; }
    const Impl& impl() const noexcept { return *impl_; }

private:
    template <class Fn>
    struct Model final : Impl {
        explicit Model(Fn fn) : fn_{std::move(fn)} {}

        void run(const T* in, R* out, std::size_t n, std::size_t base,
                 TaskErrorSink& errors) const override {
            std::size_t i = 0;
            // One try block around the whole loop: nothing is paid per task until a task
            // throws; then that task is recorded and the loop resumes after it.
            while (i < n) {
                try {
                    for (; i < n; ++i) std::construct_at(out + i, static_cast<R>(std::invoke(fn_, in[i])));
                } catch (...) {
                    std::construct_at(out + i);
                    errors.task_failed(base + i, std::current_exception());
                    ++i;
                }
            }
        }

        Fn fn_;
    };

    std::shared_ptr<const Impl> impl_;
};

/// A GPU launcher, type-erased. Made in a `.cu` file (`tandem::gpu::map`, or a custom
/// launcher); the engine calls it with plain pointers and never sees a CUDA type.
class GpuLauncher {
public:
    virtual ~GpuLauncher() = default;
    /// Enqueues work on `stream` (a `cudaStream_t`) that reads `n` inputs at `device_in` and
    /// writes `n` outputs at `device_out`. Returns the launch status (a CUDA-category code).
    virtual std::error_code launch(void* stream, const void* device_in, void* device_out,
                                   std::size_t n) const noexcept = 0;
    /// Runs the kernel's work on the host instead (`n` inputs at `in`, outputs to `out`), for
    /// the simulated device when the op has no CPU function. Optional: the default says
    /// `NoImplementation`.
    virtual std::error_code run_on_host(const void* /*in*/, void* /*out*/, std::size_t /*n*/) const noexcept {
        return make_error_code(ExecError::NoImplementation);
    }
};

/// A GPU kernel for an op from `T` to `R`. Payloads and outputs cross PCIe as raw bytes, so
/// both must be trivially copyable.
template <class T, class R>
class GpuKernel {
public:
    GpuKernel() = default;
    /// Wraps a launcher made in a `.cu` file.
    explicit GpuKernel(std::shared_ptr<const GpuLauncher> launcher) : launcher_{std::move(launcher)} {
        static_assert(std::is_trivially_copyable_v<T>, "GPU payload types must be trivially copyable");
        static_assert(std::is_trivially_copyable_v<R>, "GPU output types must be trivially copyable");
    }

    explicit operator bool() const noexcept { return launcher_ != nullptr; }
    /// The type-erased launcher (null when empty).
    const std::shared_ptr<const GpuLauncher>& launcher() const noexcept { return launcher_; }

private:
    std::shared_ptr<const GpuLauncher> launcher_;
};

/// What to run on each task of a batch: a name, a CPU function `R(const T&)` and optionally a
/// GPU kernel. Copies share one definition, so an op is cheap to pass around.
template <class T, class R>
class Op {
public:
    using task_type = T;
    using result_type = R;

    /// A CPU-only op.
    Op(std::string name, CpuFunction<T, R> cpu)
        : def_{std::make_shared<const Def>(Def{std::move(name), std::move(cpu), {}})} {}
    /// An op with both a CPU function and a GPU kernel.
    Op(std::string name, CpuFunction<T, R> cpu, GpuKernel<T, R> gpu)
        : def_{std::make_shared<const Def>(Def{std::move(name), std::move(cpu), std::move(gpu)})} {}
    /// A GPU-only op (it fails with `NoImplementation` on an engine without a GPU).
    Op(std::string name, GpuKernel<T, R> gpu)
        : def_{std::make_shared<const Def>(Def{std::move(name), {}, std::move(gpu)})} {}
    /// An op with no code at all: submitting it fails with `NoImplementation`.
    Op(std::string name, std::nullptr_t)
        : def_{std::make_shared<const Def>(Def{std::move(name), {}, {}})} {}

    /// The op's name (used in stats and metrics).
    const std::string& name() const noexcept { return def_->name; }
    /// True when the op can run on the CPU.
    bool has_cpu() const noexcept { return static_cast<bool>(def_->cpu); }
    /// True when the op can run on a GPU.
    bool has_gpu() const noexcept { return static_cast<bool>(def_->gpu); }
    /// The CPU function.
    const CpuFunction<T, R>& cpu() const noexcept { return def_->cpu; }
    /// The GPU kernel.
    const GpuKernel<T, R>& gpu() const noexcept { return def_->gpu; }
    /// Identifies this op's definition (shared by its copies). The scheduler's speed models
    /// are keyed on the op's name instead, so separately built ops of one name share a model.
    const void* key() const noexcept { return def_.get(); }

private:
    struct Def {
        std::string name;
        CpuFunction<T, R> cpu;
        GpuKernel<T, R> gpu;
    };
    friend class detail::BatchJob<T, R>;

    explicit Op(std::shared_ptr<const Def> def) noexcept : def_{std::move(def)} {}

    /// A copy for a batch submitted on the calling thread: it shares the definition through a
    /// count of this thread's own, alive only while a batch of this thread holds it (threads
    /// submitting batches of one op at once would otherwise all count on one cache line).
    Op for_this_thread() const { return Op{detail::thread_share(def_)}; }

    std::shared_ptr<const Def> def_;
};

}  // namespace tandem
