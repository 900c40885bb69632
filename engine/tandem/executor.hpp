#pragma once
/// \file
/// The seed's contract: the `Executor` concept, `CpuMapExecutor`, `UnavailableGpu`, and the
/// `HybridScheduler` that picks between a CPU and a GPU executor by batch size and
/// availability. Each executor is a thin face over an `Engine`.

#include <tandem/engine.hpp>
#include <tandem/error.hpp>
#include <tandem/future.hpp>
#include <tandem/op.hpp>
#include <tandem/result.hpp>
#include <tandem/task.hpp>

#include <concepts>
#include <cstddef>
#include <memory>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace tandem {

/// Either a batch's result or the error that prevented it.
template <class R>
class Outcome {
public:
    /// A success.
    Outcome(BatchResult<R> result) : value_{std::move(result)} {}
    /// A failure.
    Outcome(std::error_code error) : value_{error} {}

    /// True on success.
    bool has_value() const noexcept { return value_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }
    /// The result; throws `tandem::Error` on failure.
    BatchResult<R>& value() & {
        if (!has_value()) throw Error{error()};
        return std::get<0>(value_);
    }
    BatchResult<R>&& value() && { return std::move(value()); }
    /// The error (empty on success).
    std::error_code error() const noexcept { return has_value() ? std::error_code{} : std::get<1>(value_); }

private:
    std::variant<BatchResult<R>, std::error_code> value_;
};

namespace detail {

/// A job that never runs: the state behind a future made already failed.
template <class R>
class FailedJob final : public ResultCore<R> {
public:
    FailedJob() : ResultCore<R>{0, 0, nullptr, "failed", IdColumn{}, OutputBuffer<R>{}} {}
    bool has_cpu() const noexcept override { return false; }
    GpuView gpu_view() noexcept override { return {}; }

private:
    void do_run_cpu(Range) override {}
};

/// The argument type of a unary callable's call operator (lambdas, functors, functions).
template <class F>
struct unary_arg : unary_arg<decltype(&F::operator())> {};
template <class C, class Ret, class A>
struct unary_arg<Ret (C::*)(A) const> { using type = std::remove_cvref_t<A>; };
template <class C, class Ret, class A>
struct unary_arg<Ret (C::*)(A) const noexcept> { using type = std::remove_cvref_t<A>; };
template <class C, class Ret, class A>
struct unary_arg<Ret (C::*)(A)> { using type = std::remove_cvref_t<A>; };
template <class Ret, class A>
struct unary_arg<Ret (*)(A)> { using type = std::remove_cvref_t<A>; };

}  // namespace detail

/// A future that has already completed with `error`.
template <class R>
BatchFuture<R> make_failed_future(std::error_code error) {
    auto job = std::make_shared<detail::FailedJob<R>>();
    job->fail(error);
    return BatchFuture<R>{std::move(job)};
}

/// An executor of batches of `T` into results `R`: the seed's `GpuExecutor` trait.
template <class E, class T, class R>
concept Executor = requires(E& e, const Batch<T>& batch) {
    { e.template execute<T, R>(batch) } -> std::convertible_to<Outcome<R>>;
    { e.template submit<T, R>(batch) } -> std::same_as<BatchFuture<R>>;
    { e.is_available() } -> std::convertible_to<bool>;
    { e.device_kind() } -> std::same_as<DeviceKind>;
};

/// Maps a function over every task on CPU workers (its own engine, GPU off).
template <class F>
class CpuMapExecutor {
public:
    using task_type = typename detail::unary_arg<F>::type;
    using result_type = std::invoke_result_t<const F&, const task_type&>;

    /// `max_parallelism` workers (0: one per hardware thread).
    explicit CpuMapExecutor(F f, std::size_t max_parallelism = 0)
        : op_{"cpu_map", CpuFunction<task_type, result_type>{std::move(f)}},
          engine_{std::make_shared<Engine>(make_config(max_parallelism))} {}

    /// Runs `batch` and waits for it.
    template <class T = task_type, class R = result_type>
    Outcome<R> execute(const Batch<T>& batch) {
        auto future = submit<T, R>(batch);
        future.wait();
        if (auto ec = future.error()) return ec;
        return future.get();
    }

    /// Starts `batch` and returns its future.
    template <class T = task_type, class R = result_type>
    BatchFuture<R> submit(Batch<T> batch) {
        static_assert(std::is_same_v<T, task_type> && std::is_same_v<R, result_type>);
        return engine_->submit(op_, std::move(batch));
    }

    /// Always true: the CPU is always there.
    bool is_available() const noexcept { return true; }
    DeviceKind device_kind() const noexcept { return DeviceKind::Cpu; }

    /// CPU workers this executor runs batches on.
    std::size_t max_parallelism() const noexcept { return engine_->cpu_workers(); }

    /// Runs later batches on `n` workers (0: one per hardware thread). This copy of the
    /// executor gets an engine of its own; batches already submitted complete on the old one.
    void set_max_parallelism(std::size_t n) {
        if (n != 0 && n == max_parallelism()) return;
        engine_ = std::make_shared<Engine>(make_config(n));
    }

private:
    static EngineConfig make_config(std::size_t parallelism) {
        EngineConfig c;
        c.cpu_workers = parallelism;
        c.gpu.enabled = false;
        return c;
    }

    Op<task_type, result_type> op_;
    std::shared_ptr<Engine> engine_;  // shared: copies of the executor use one engine
};

/// A GPU executor for builds or machines without one: never available, every call fails
/// with `ExecError::BackendUnavailable`.
class UnavailableGpu {
public:
    template <class T, class R>
    Outcome<R> execute(const Batch<T>&) const {
        return std::error_code{ExecError::BackendUnavailable};
    }
    template <class T, class R>
    BatchFuture<R> submit(const Batch<T>&) const {
        return make_failed_future<R>(ExecError::BackendUnavailable);
    }
    bool is_available() const noexcept { return false; }
    DeviceKind device_kind() const noexcept { return DeviceKind::Gpu; }
};

/// When the hybrid scheduler uses the GPU.
struct HybridStrategy {
    /// Batches with fewer tasks than this run on the CPU.
    std::size_t gpu_threshold = 1024;
    /// CPU workers for the CPU executor, when it takes the hint (it has
    /// `set_max_parallelism`, as `CpuMapExecutor` does); 0 leaves it as built.
    std::size_t max_cpu_parallelism = 0;
};

/// Sends each batch to the GPU executor when it is available and the batch reaches the
/// threshold, else to the CPU executor.
template <class Cpu, class Gpu>
class HybridScheduler {
public:
    using task_type = typename Cpu::task_type;
    using result_type = typename Cpu::result_type;
    static_assert(Executor<Cpu, task_type, result_type>, "Cpu must model tandem::Executor");
    static_assert(Executor<Gpu, task_type, result_type>, "Gpu must model tandem::Executor");

    /// Applies `strategy.max_cpu_parallelism` to the CPU executor when it takes the hint.
    HybridScheduler(Cpu cpu, Gpu gpu, HybridStrategy strategy = {})
        : cpu_{std::move(cpu)}, gpu_{std::move(gpu)}, strategy_{strategy} {
        if constexpr (requires { cpu_.set_max_parallelism(std::size_t{1}); }) {
            if (strategy_.max_cpu_parallelism != 0) cpu_.set_max_parallelism(strategy_.max_cpu_parallelism);
        }
    }

    /// True when `batch` would go to the GPU executor.
    bool uses_gpu(const Batch<task_type>& batch) const {
        return gpu_.is_available() && batch.size() >= strategy_.gpu_threshold;
    }

    /// Starts `batch` on the chosen executor and returns its future.
    BatchFuture<result_type> schedule(const Batch<task_type>& batch) {
        if (uses_gpu(batch)) return gpu_.template submit<task_type, result_type>(batch);
        return cpu_.template submit<task_type, result_type>(batch);
    }

    const HybridStrategy& strategy() const noexcept { return strategy_; }
    /// The executors.
    const Cpu& cpu() const noexcept { return cpu_; }
    const Gpu& gpu() const noexcept { return gpu_; }

private:
    Cpu cpu_;
    Gpu gpu_;
    HybridStrategy strategy_;
};

}  // namespace tandem
