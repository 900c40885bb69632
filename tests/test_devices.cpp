// The scheduler <-> device interplay, on simulated devices (no GPU needed, so it runs in CI and
// under the sanitizers): hybrid batches, faults and fallbacks, device-only ops, cancellation of
// chunks not yet issued, shutdown racing the planning of a batch, and a device that never
// finishes its chunk.
#define BOOST_TEST_MODULE devices
#include <boost/test/unit_test.hpp>

#include <tandem/tandem.hpp>

#include "sim_ops.hpp"
#include "support.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <memory_resource>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

using tandem::testing::iota_batch;
using tandem::testing::mix;
using tandem::testing::mix_kernel;

using tandem::testing::device_only_op;
using tandem::testing::hybrid_op;

/// An engine config with `devices` simulated devices that take every batch (threshold 0) in
/// chunks of 256 tasks.
tandem::EngineConfig sim_config(std::size_t devices = 1, std::size_t workers = 2) {
    tandem::EngineConfig c;
    c.cpu_workers = workers;
    c.idle_spin = 5us;
    c.gpu.threshold_tasks = 0;
    c.gpu.chunk_bytes = 256 * sizeof(std::uint32_t);
    c.gpu.shutdown_grace = 50ms;
    for (std::size_t i = 0; i < devices; ++i) c.gpu.simulated.push_back(tandem::SimulatedDevice{});
    return c;
}

void check_outputs(const tandem::BatchResult<std::uint32_t>& r, std::size_t n) {
    BOOST_REQUIRE_EQUAL(r.results.size(), n);
    for (std::size_t i = 0; i < n; ++i) BOOST_REQUIRE_EQUAL(r.results[i].output, mix(static_cast<std::uint32_t>(i)));
}

using tandem::testing::expect_error;

/// Holds a simulated device's chunks until opened (set as its `on_chunk`).
struct ChunkGate {
    std::atomic<bool> open{false};
    std::atomic<int> entered{0};
    void operator()(std::size_t, std::size_t) {
        entered.fetch_add(1);
        while (!open.load()) std::this_thread::sleep_for(100us);
    }
};

}  // namespace

BOOST_AUTO_TEST_CASE(a_simulated_device_is_used_only_when_the_config_asks_for_one) {
    tandem::EngineConfig plain;
    plain.cpu_workers = 1;
    plain.gpu.enabled = false;
    BOOST_TEST(tandem::Engine{plain}.gpu_count() == 0u);
    tandem::Engine engine{sim_config(2)};
    BOOST_TEST(engine.gpu_count() == 2u);
    BOOST_TEST(engine.gpus()[1].name == "simulated device");
}

BOOST_AUTO_TEST_CASE(a_device_only_op_runs_on_the_simulated_device_with_real_outputs) {
    tandem::Engine engine{sim_config(1)};
    auto r = engine.submit(device_only_op(), iota_batch(5000)).get();
    check_outputs(r, 5000);
    BOOST_TEST(r.stats.gpu_tasks == 5000u);
    BOOST_TEST((r.stats.device == tandem::DeviceKind::Gpu));
    BOOST_TEST(r.stats.gpu_chunks >= 5000u / 256);
}

BOOST_AUTO_TEST_CASE(a_hybrid_batch_is_shared_by_cpu_workers_and_two_simulated_devices_with_correct_outputs) {
    // Every side surely takes part: each device's first chunk waits until a CPU worker has run
    // a task, and the CPU's 101st task waits until both devices have started a chunk. Stealing
    // is off: with it, the other worker could take the devices' shares before their actors
    // first ran (seen once under ASan on 2 cores), and the wait below would never end. Each
    // wait is bounded: a plan that leaves a side out fails the test instead of hanging it.
    tandem::EngineConfig c = sim_config(2, 2);
    c.cpu_chunk = 64;
    c.gpu.model.steal = false;
    std::atomic<int> cpu_ran{0};
    std::atomic<int> device_chunks[2] = {0, 0};
    std::atomic<bool> gave_up{false};
    const auto wait_until = [&](auto&& done) {
        const auto deadline = std::chrono::steady_clock::now() + 60s;
        while (!done()) {
            if (std::chrono::steady_clock::now() > deadline) {
                gave_up.store(true);
                return;
            }
            std::this_thread::sleep_for(50us);
        }
    };
    for (std::size_t d = 0; d < 2; ++d) {
        c.gpu.simulated[d].on_chunk = [&, d](std::size_t, std::size_t) {
            device_chunks[d].fetch_add(1);
            wait_until([&] { return cpu_ran.load() > 0; });
        };
    }
    tandem::Engine engine{c};
    tandem::Op<std::uint32_t, std::uint32_t> op{"mix_counted",
                                                [&](const std::uint32_t& x) {
                                                    if (cpu_ran.fetch_add(1) == 100) {
                                                        wait_until([&] {
                                                            return device_chunks[0].load() > 0 && device_chunks[1].load() > 0;
                                                        });
                                                    }
                                                    return mix(x);
                                                },
                                                mix_kernel()};
    auto r = engine.submit(op, iota_batch(200000)).get();
    BOOST_TEST(!gave_up.load(), "a side waited 60 s for the other to start");
    check_outputs(r, 200000);
    BOOST_TEST(r.stats.cpu_tasks > 100u);
    BOOST_TEST(device_chunks[0].load() > 0);
    BOOST_TEST(device_chunks[1].load() > 0);
    BOOST_TEST(r.stats.cpu_tasks + r.stats.gpu_tasks == 200000u);
    BOOST_TEST((r.stats.device == tandem::DeviceKind::Hybrid));
}

BOOST_AUTO_TEST_CASE(a_calibrated_model_caps_the_cpu_share_and_the_devices_take_the_rest) {
    // Batches large enough to feed the op's speed model on both sides; once it is calibrated
    // the CPU gets a quota and the devices claim the rest. Results stay exact throughout.
    tandem::EngineConfig c = sim_config(1, 2);
    c.gpu.chunk_bytes = 4096 * sizeof(std::uint32_t);
    c.gpu.simulated[0].per_task = 1ns;
    tandem::Engine engine{c};
    for (int i = 0; i < 6; ++i) {
        auto r = engine.submit(hybrid_op(), iota_batch(300000)).get();
        check_outputs(r, 300000);
        BOOST_TEST(r.stats.cpu_tasks + r.stats.gpu_tasks == 300000u);
    }
}

BOOST_AUTO_TEST_CASE(a_failing_launch_on_the_simulated_device_reruns_every_chunk_on_the_cpu) {
    tandem::EngineConfig c = sim_config(1);
    c.gpu.simulated[0].fail_launch = true;
    c.gpu.cpu_helps = false;             // every task goes to the device first
    c.cpu_chunk = std::size_t{1} << 32;  // the largest chunk allowed: fallback ranges must not overflow
    tandem::Engine engine{c};
    auto r = engine.submit(hybrid_op(), iota_batch(10000)).get();
    check_outputs(r, 10000);
    BOOST_TEST(r.stats.gpu_tasks == 0u);
    BOOST_TEST(r.stats.fallback_tasks == 10000u);
    BOOST_TEST(r.stats.fallback_reason.find("launch failed") != std::string::npos, r.stats.fallback_reason);
    BOOST_TEST(engine.metrics().cpu_fallback_count == r.stats.fallback_tasks);
}

BOOST_AUTO_TEST_CASE(a_simulated_device_failing_mid_batch_is_retired_and_its_work_reruns_on_the_cpu) {
    tandem::EngineConfig c = sim_config(1);
    c.gpu.simulated[0].fail_after_chunks = 3;
    c.gpu.cpu_helps = false;  // only the device's give-back brings the CPU in
    tandem::Engine engine{c};
    auto r = engine.submit(hybrid_op(), iota_batch(20000)).get();
    check_outputs(r, 20000);
    BOOST_TEST(r.stats.gpu_tasks == 3u * 256);
    BOOST_TEST(r.stats.cpu_tasks == 20000u - 3 * 256);
    BOOST_TEST(engine.gpu_count() == 0u);
    BOOST_TEST(!engine.gpus()[0].healthy);
}

BOOST_AUTO_TEST_CASE(a_device_only_op_whose_devices_all_failed_fails_with_device_failed) {
    tandem::EngineConfig c = sim_config(1);
    c.gpu.simulated[0].fail_after_chunks = 1;
    tandem::Engine engine{c};
    // The first batch retires the device after one chunk; the rest has nowhere to run.
    expect_error([&] { engine.submit(device_only_op(), iota_batch(5000)).get(); }, tandem::ExecError::DeviceFailed);
    expect_error([&] { engine.submit(device_only_op(), iota_batch(10)).get(); }, tandem::ExecError::DeviceFailed);
}

BOOST_AUTO_TEST_CASE(cancelling_a_device_batch_skips_the_chunks_not_yet_issued) {
    tandem::EngineConfig c = sim_config(1);
    c.gpu.cpu_helps = false;
    ChunkGate gate;
    c.gpu.simulated[0].on_chunk = std::ref(gate);
    tandem::Engine engine{c};
    auto f = engine.submit(hybrid_op(), iota_batch(100 * 256));
    while (gate.entered.load() < 1) std::this_thread::sleep_for(100us);  // chunk 1 is "on the device"
    BOOST_TEST(f.cancel());
    gate.open = true;
    expect_error([&] { f.get(); }, tandem::ExecError::Cancelled);
    BOOST_TEST(gate.entered.load() == 1);  // no chunk was issued after the cancel
    BOOST_TEST(engine.metrics().tasks_skipped == 99u * 256);
}

BOOST_AUTO_TEST_CASE(shutdown_racing_the_plan_of_a_device_batch_skips_its_share_instead_of_hanging) {
    // The scheduler has decided to send the batch to the device, and then shutdown stops the
    // device before the batch reaches it. With a device-only op (or cpu_helps off) nobody else
    // would ever claim the device's share.
    for (bool device_only : {true, false}) {
        std::promise<void> devices_stopped;
        auto stopped = devices_stopped.get_future().share();
        std::atomic<bool> dispatching{false};
        tandem::EngineConfig c = sim_config(1);
        c.gpu.cpu_helps = false;
        c.test_hooks.before_dispatch = [&] {
            dispatching = true;
            stopped.wait();
        };
        c.test_hooks.after_devices_stopped = [&] { devices_stopped.set_value(); };
        auto engine = std::make_unique<tandem::Engine>(c);
        auto f = engine->submit(device_only ? device_only_op() : hybrid_op(), iota_batch(1000));
        while (!dispatching.load()) std::this_thread::sleep_for(100us);
        auto done = std::async(std::launch::async, [&] { engine->shutdown(); });
        BOOST_REQUIRE_MESSAGE(done.wait_for(60s) == std::future_status::ready, "shutdown hung");
        BOOST_REQUIRE(f.ready());
        expect_error([&] { f.get(); }, tandem::ExecError::ShutDown);
    }
}

BOOST_AUTO_TEST_CASE(shutdown_gives_up_on_a_simulated_chunk_that_never_completes) {
    tandem::EngineConfig c = sim_config(1);
    c.gpu.cpu_helps = false;
    c.gpu.simulated[0].hang_after_chunks = 2;
    c.gpu.shutdown_grace = 20ms;
    auto engine = std::make_unique<tandem::Engine>(c);
    auto f = engine->submit(hybrid_op(), iota_batch(10 * 256));
    BOOST_TEST((f.wait_for(50ms) == std::future_status::timeout));  // stuck on the device
    auto done = std::async(std::launch::async, [&] { engine->shutdown(); });
    BOOST_REQUIRE_MESSAGE(done.wait_for(60s) == std::future_status::ready, "shutdown hung");
    expect_error([&] { f.get(); }, tandem::ExecError::DeviceFailed);
    BOOST_TEST(engine->metrics().batches_abandoned == 1u);
    BOOST_TEST(engine->metrics().batches_in_flight == 0u);
}

BOOST_AUTO_TEST_CASE(a_batch_built_in_engine_memory_runs_like_any_other_and_may_outlive_the_engine) {
    auto engine = std::make_unique<tandem::Engine>(sim_config(1));
    std::pmr::memory_resource* memory = engine->pinned_memory();
    BOOST_TEST(memory != std::pmr::new_delete_resource());  // the simulated page-locked memory
    auto batch = iota_batch(5000, memory);
    BOOST_TEST(batch.memory() == memory);
    auto r = engine->submit(hybrid_op(), std::move(batch)).get();
    check_outputs(r, 5000);
    // A batch built there that is still alive (even still growing) after the engine is gone.
    auto kept = iota_batch(3000, memory);
    engine.reset();
    for (std::uint32_t i = 3000; i < 6000; ++i) kept.push({i, i, 1});
    BOOST_TEST(kept.size() == 6000u);
    // And results that live in that memory outlive the engine too.
    BOOST_TEST(r.results[4999].output == mix(4999));
}

BOOST_AUTO_TEST_CASE(a_cancel_racing_shutdown_on_a_batch_in_engine_memory_completes_before_shutdown_returns) {
    tandem::EngineConfig c = sim_config(1, 1);
    c.cpu_chunk = 1;
    std::atomic<bool> open{false};
    std::atomic<int> entered{0};
    tandem::Op<std::uint32_t, std::uint32_t> slow{"slow", [&](const std::uint32_t& x) {
        entered.fetch_add(1);
        while (!open.load()) std::this_thread::sleep_for(100us);
        return mix(x);
    }};  // CPU-only: runs on the worker
    auto engine = std::make_unique<tandem::Engine>(c);
    auto f = engine->submit(slow, iota_batch(50000, engine->pinned_memory()));
    while (entered.load() < 1) std::this_thread::sleep_for(100us);
    auto handle = f.cancel_handle();
    std::thread canceller{[&] { handle.cancel(); }};
    std::thread opener{[&] {
        std::this_thread::sleep_for(5ms);
        open = true;
    }};
    engine.reset();  // shutdown returns only once the batch's completion (and its frees) are over
    canceller.join();
    opener.join();
    BOOST_REQUIRE(f.ready());
    BOOST_TEST(static_cast<bool>(f.error()));
}

BOOST_AUTO_TEST_CASE(submit_from_a_continuation_at_the_admission_limit_never_blocks_the_engine) {
    // Room for two batches. A device batch held on the simulated device takes one slot (and no
    // CPU worker); a CPU batch completes on the only worker, and its continuation submits two
    // more. The second finds the engine full: waiting there would wait for the very worker
    // that has to run the batches that would make room.
    tandem::EngineConfig c = sim_config(1, 1);
    c.max_batches_in_flight = 2;
    ChunkGate gate;
    c.gpu.simulated[0].on_chunk = std::ref(gate);
    tandem::Engine engine{c};
    auto held = engine.submit(device_only_op(), iota_batch(10));
    while (gate.entered.load() < 1) std::this_thread::sleep_for(100us);
    tandem::Op<std::uint32_t, std::uint32_t> cpu_only{"mix_cpu", mix};
    std::promise<std::uint32_t> inner;
    engine.submit(cpu_only, iota_batch(1)).then([&](std::error_code, tandem::BatchResult<std::uint32_t>) {
        engine.submit(cpu_only, iota_batch(2)).then([](std::error_code, tandem::BatchResult<std::uint32_t>) {});
        engine.submit(cpu_only, iota_batch(3)).then([&](std::error_code ec, tandem::BatchResult<std::uint32_t> r) {
            inner.set_value(ec ? 0 : r.results[2].output);
        });
    });
    auto got = inner.get_future();
    const bool done = got.wait_for(30s) == std::future_status::ready;
    gate.open = true;  // lets a deadlocked engine go before the test fails
    BOOST_REQUIRE_MESSAGE(done, "the continuation's submit blocked the engine");
    BOOST_TEST(got.get() == mix(2));
    check_outputs(held.get(), 10);
}
