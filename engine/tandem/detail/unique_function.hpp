#pragma once
/// \file
/// A move-only `void()` callable (C++23's std::move_only_function is not in C++20).

#include <memory>
#include <type_traits>
#include <utility>

namespace tandem::detail {

/// Holds any move-only callable taking no arguments and returning nothing.
class UniqueFunction {
public:
    UniqueFunction() = default;
    template <class F>
        requires(!std::same_as<std::remove_cvref_t<F>, UniqueFunction> && std::is_invocable_v<std::remove_cvref_t<F>&>)
    UniqueFunction(F&& f) : impl_{std::make_unique<Model<std::remove_cvref_t<F>>>(std::forward<F>(f))} {}

    explicit operator bool() const noexcept { return impl_ != nullptr; }
    void operator()() { impl_->call(); }

private:
    struct Concept {
        virtual ~Concept() = default;
        virtual void call() = 0;
    };
    template <class F>
    struct Model final : Concept {
        explicit Model(F f) : f_{std::move(f)} {}
        void call() override { f_(); }
        F f_;
    };
    std::unique_ptr<Concept> impl_;
};

}  // namespace tandem::detail
