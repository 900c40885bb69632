#include <tandem/engine.hpp>

#include <sstream>

namespace tandem {

std::string to_prometheus(const EngineMetrics& m) {
    std::ostringstream out;
    auto counter = [&](const char* name, const char* help, std::uint64_t value) {
        out << "# HELP tandem_" << name << ' ' << help << "\n# TYPE tandem_" << name << " counter\ntandem_"
            << name << ' ' << value << '\n';
    };
    auto gauge = [&](const char* name, const char* help, std::uint64_t value) {
        out << "# HELP tandem_" << name << ' ' << help << "\n# TYPE tandem_" << name << " gauge\ntandem_"
            << name << ' ' << value << '\n';
    };
    counter("batches_submitted_total", "Batches submitted.", m.batches_submitted);
    counter("batches_completed_total", "Batches completed (with results or an error).", m.batches_completed);
    counter("batches_failed_total", "Batches completed with a batch-level error.", m.batches_failed);
    counter("tasks_completed_total", "Tasks completed.", m.tasks_completed);
    counter("cpu_tasks_total", "Tasks run by CPU workers.", m.cpu_tasks);
    counter("gpu_tasks_total", "Tasks run on GPUs.", m.gpu_tasks);
    counter("cpu_fallback_count", "Tasks a GPU gave back that the CPU ran.", m.cpu_fallback_count);
    counter("task_failures_total", "Tasks whose function threw.", m.task_failures);
    counter("tasks_skipped_total", "Tasks not run because of cancellation or shutdown.", m.tasks_skipped);
    counter("continuation_failures_total", "Continuations that threw on an engine thread (caught).",
            m.continuation_failures);
    counter("batches_abandoned_total", "Batches whose memory was kept because a device was given up on.",
            m.batches_abandoned);
    gauge("batches_in_flight", "Batches submitted and not yet completed.", m.batches_in_flight);
    gauge("tasks_in_flight", "Tasks submitted and not yet completed.", m.tasks_in_flight);
    gauge("cpu_workers", "CPU-worker actors.", m.cpu_workers);
    gauge("gpu_devices", "Healthy GPUs in use.", m.gpu_devices);
    const std::uint64_t all = m.cpu_tasks + m.gpu_tasks;
    out << "# HELP tandem_gpu_utilization Share of completed tasks that ran on a GPU.\n"
           "# TYPE tandem_gpu_utilization gauge\ntandem_gpu_utilization "
        << (all ? static_cast<double>(m.gpu_tasks) / static_cast<double>(all) : 0.0) << '\n';
    return out.str();
}

}  // namespace tandem
