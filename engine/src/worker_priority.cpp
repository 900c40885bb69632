// Scheduling priority of CPU-worker threads.
#include "cpu_worker.hpp"

#if defined(__linux__)
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace tandem::detail {

void apply_worker_priority(WorkerPriority priority) noexcept {
#if defined(__linux__)
    if (priority == WorkerPriority::Normal) return;
    sched_param param{};
    param.sched_priority = 0;
    const int policy = priority == WorkerPriority::Idle ? SCHED_IDLE : SCHED_BATCH;
    (void)sched_setscheduler(0, policy, &param);  // 0: the calling thread (Linux: per thread)
    if (priority == WorkerPriority::Low) {
        // The nice value is per thread on Linux too (setpriority on the thread's id).
        (void)setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
    }
#else
    (void)priority;
#endif
}

void restore_normal_priority() noexcept {
#if defined(__linux__)
    sched_param param{};
    param.sched_priority = 0;
    (void)sched_setscheduler(0, SCHED_OTHER, &param);
    (void)setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 0);
#endif
}

}  // namespace tandem::detail

namespace tandem {

void set_thread_priority(WorkerPriority priority) noexcept {
    if (priority == WorkerPriority::Normal) {
        detail::restore_normal_priority();
    } else {
        detail::apply_worker_priority(priority);
    }
}

}  // namespace tandem
