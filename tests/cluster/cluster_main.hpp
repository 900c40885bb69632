#pragma once
// What the MPI test programs share (included once per program, after BOOST_TEST_MODULE).
//
// Every rank runs every test case (each builds its own engine and cluster, collectively), so
// each rank writes its own Boost.Test report: BOOST_TEST_REPORT_SINK on rank 0, with
// ".rank<N>" appended on rank N (set before Boost.Test reads its environment, by a static
// initialiser that reads the launcher's rank variable: no MPI call is needed for it).
// scripts/test-summary.py merges them: a test case passes only if it passed on every rank
// that reported.
//
// A global fixture initialises MPI (MPI_THREAD_SERIALIZED) before the first case and
// finalises it after the last, so that each case can make a cluster of its own; in between
// only the clusters' transport threads call MPI, one cluster at a time. Under
// AddressSanitizer the leak check runs just before MPI_Finalize (see below).
//
// No main of our own: the static Boost.Test (-Dstatic_runtime=true) brings its main in the
// same object as unit_test_main.
#include <boost/test/unit_test.hpp>

#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

namespace cluster_tests {

/// Appends ".rank<N>" to BOOST_TEST_REPORT_SINK on ranks other than 0, before main.
struct RankReportSink {
    RankReportSink() {
        const char* sink = std::getenv("BOOST_TEST_REPORT_SINK");
        if (sink == nullptr) return;
        for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
            if (const char* v = std::getenv(name)) {
                const int rank = std::atoi(v);
                if (rank != 0) {
                    const std::string mine = std::string{sink} + ".rank" + std::to_string(rank);
                    setenv("BOOST_TEST_REPORT_SINK", mine.c_str(), 1);
                }
                return;
            }
        }
    }
};
inline const RankReportSink rank_report_sink;

/// Set by a test whose cluster lost a rank (it exited): MPI_Finalize is then skipped, as the
/// cluster itself does (its closing fence may wait for the lost rank for ever).
inline bool rank_lost = false;

struct Mpi {
    void setup() {
        int provided = 0;
        if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS ||
            provided < MPI_THREAD_SERIALIZED) {
            throw std::runtime_error{"MPI_THREAD_SERIALIZED is not available"};
        }
    }
    void teardown() {
#if defined(__SANITIZE_ADDRESS__)
        // The leak check runs here, every cluster destroyed, before MPI_Finalize: at exit,
        // Open MPI's components are unloaded and what they allocated shows as leaks from
        // "<unknown module>", which no suppression can name. Here it is still reachable from
        // their globals; the little Open MPI drops anyway is suppressed by library
        // (tests/lsan-mpi.supp). This call also turns the at-exit check off.
        __lsan_do_leak_check();
#endif
        if (!rank_lost) MPI_Finalize();
    }
};
BOOST_TEST_GLOBAL_FIXTURE(Mpi);

}  // namespace cluster_tests
