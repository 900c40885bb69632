#pragma once
// The main of the MPI test programs (included once per program, after BOOST_TEST_MODULE).
//
// Every rank runs every test case (each builds its own engine and cluster, collectively), so
// each rank writes its own Boost.Test report: BOOST_TEST_REPORT_SINK on rank 0, with
// ".rank<N>" appended on rank N. scripts/test-summary.py merges them: a test case passes only
// if it passed on every rank that reported.
//
// Under AddressSanitizer the leak check runs before MPI_Finalize (see below).
//
// The program initialises MPI itself (MPI_THREAD_SERIALIZED) and finalises it at the end, so
// that each test case can make a cluster of its own; between those two calls only the
// clusters' transport threads call MPI, one cluster at a time.
#define BOOST_TEST_NO_MAIN
#include <boost/test/unit_test.hpp>

#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

int main(int argc, char** argv) {
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS || provided < MPI_THREAD_SERIALIZED) {
        std::fprintf(stderr, "MPI_THREAD_SERIALIZED is not available\n");
        return 1;
    }
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (const char* sink = std::getenv("BOOST_TEST_REPORT_SINK"); sink != nullptr && rank != 0) {
        const std::string mine = std::string{sink} + ".rank" + std::to_string(rank);
        setenv("BOOST_TEST_REPORT_SINK", mine.c_str(), 1);
    }
    // BOOST_TEST_MODULE defines the init function: `bool init_unit_test()` with the shared
    // Boost.Test (its "alternative" API), `init_unit_test_suite(int, char**)` with the static
    // one (-Dstatic_runtime=true).
#if defined(BOOST_TEST_ALTERNATIVE_INIT_API)
    const int rc = boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
#else
    const int rc = boost::unit_test::unit_test_main(&init_unit_test_suite, argc, argv);
#endif
#if defined(__SANITIZE_ADDRESS__)
    // The leak check runs here, every cluster destroyed, before MPI_Finalize: at exit, Open
    // MPI's components are unloaded and what they allocated shows as leaks from "<unknown
    // module>", which no suppression can name. Here it is still reachable from their globals;
    // the little Open MPI drops anyway is suppressed by library (tests/lsan-mpi.supp). This
    // call also turns the at-exit check off.
    __lsan_do_leak_check();
#endif
    MPI_Finalize();
    return rc;
}
