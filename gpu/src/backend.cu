// The CUDA backend: discovers devices, starts one device actor per healthy GPU, and owns the
// page-locked memory shared by all of them.
#include "device_actor.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <vector>

namespace tandem::gpu {
namespace {

class CudaBackend final : public detail::DeviceBackend {
public:
    explicit CudaBackend(const detail::BackendContext& context)
        : config_{context.config}, pinned_{std::make_shared<PinnedMemory>(context.config.pinned_cache_bytes)} {
        int count = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess) {  // no driver, no device
            cudaGetLastError();
            count = 0;
        }
        // Devices [first, end): from `first_device`, at most `max_devices` of them.
        const int first = static_cast<int>(std::min<std::size_t>(config_.first_device, static_cast<std::size_t>(count)));
        if (config_.max_devices != 0 && static_cast<std::size_t>(count - first) > config_.max_devices) {
            count = first + static_cast<int>(config_.max_devices);
        }
        pinned_->inject_failures(config_.faults.fail_pinned_alloc && config_.faults.device < 0);
        const actors::ActorOptions options{64, actors::SpinPolicy{std::chrono::microseconds{50}}};
        for (int d = first; d < count; ++d) {
            auto state = std::make_unique<DeviceState>();
            cudaDeviceProp p{};
            if (cudaGetDeviceProperties(&p, d) != cudaSuccess) {
                cudaGetLastError();
                continue;
            }
            state->info.index = d;
            state->slot = states_.size();
            state->info.name = p.name;
            state->info.multiprocessors = p.multiProcessorCount;
            state->info.memory_bytes = p.totalGlobalMem;
            state->info.compute_major = p.major;
            state->info.compute_minor = p.minor;
            auto actor = std::make_unique<DeviceActor>(*state, context, *pinned_);
            actor->start(options);
            state->info.healthy = state->healthy.load();
            states_.push_back(std::move(state));
            actors_.push_back(std::move(actor));
        }
    }

    // A device given up on at shutdown leaked what its stuck work may touch (DeviceActor::
    // abandon); its streams and events are destroyed, which does not wait for the device.
    ~CudaBackend() override { stop(); }

    std::size_t device_count() const noexcept override {
        std::size_t n = 0;
        for (const auto& s : states_) n += s->healthy.load(std::memory_order_relaxed);
        return n;
    }

    std::vector<DeviceInfo> devices() const override {
        std::vector<DeviceInfo> out;
        for (const auto& s : states_) {
            out.push_back(s->info);
            out.back().healthy = s->healthy.load(std::memory_order_relaxed);
        }
        return out;
    }

    std::size_t size() const noexcept override { return states_.size(); }

    bool healthy(std::size_t d) const noexcept override {
        return d < states_.size() && states_[d]->healthy.load(std::memory_order_relaxed);
    }

    void run(std::size_t d, std::shared_ptr<detail::JobCore> job, std::size_t chunk) noexcept override {
        actors_[d]->send(DeviceMessage{std::move(job), chunk});
    }

    void stop() override {
        for (auto& a : actors_) a->stop();
    }

    std::shared_ptr<std::pmr::memory_resource> pinned_memory() noexcept override { return pinned_; }

    void orphan_memory() noexcept override {
        // Freeing page-locked memory may wait for the device: not while one is stuck.
        bool stuck = false;
        for (const auto& a : actors_) stuck = stuck || a->abandoned();
        if (!stuck) pinned_->trim();
        detail::keep_until_exit(pinned_);
    }

    detail::DeviceUsage usage(std::size_t d) const noexcept override {
        return d < actors_.size() ? actors_[d]->usage() : detail::DeviceUsage{};
    }

    std::vector<GpuChunkTrace> trace() const override {
        std::vector<GpuChunkTrace> all;
        for (const auto& a : actors_) {
            auto t = a->trace();
            all.insert(all.end(), t.begin(), t.end());
        }
        return all;
    }

private:
    const GpuConfig& config_;
    std::shared_ptr<PinnedMemory> pinned_;
    std::vector<std::unique_ptr<DeviceState>> states_;
    std::vector<std::unique_ptr<DeviceActor>> actors_;
};

}  // namespace
}  // namespace tandem::gpu

namespace tandem::detail {

std::unique_ptr<DeviceBackend> make_gpu_backend(const BackendContext& context) {
    try {
        auto backend = std::make_unique<gpu::CudaBackend>(context);
        if (backend->device_count() == 0) return nullptr;
        return backend;
    } catch (...) {
        return nullptr;  // the CPU runs everything
    }
}

}  // namespace tandem::detail
