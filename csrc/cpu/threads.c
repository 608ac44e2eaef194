/* The kernels' thread count: OpenMP for our loops, kept in step with OpenBLAS's own pool so the
 * two never oversubscribe the cores. */
#include <pthread.h>

#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef M2C_HAVE_OPENBLAS
void openblas_set_num_threads(int num_threads);
#endif

static int thread_count; /* 0: not set, use the OpenMP default */

void m2c_set_num_threads(int n) {
#ifdef _OPENMP
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
#else
    n = 1;
#endif
#ifdef M2C_HAVE_OPENBLAS
    openblas_set_num_threads(n);
#endif
    thread_count = n;
}

int m2c_get_num_threads(void) { return m2c_threads(); }

/* OpenMP keeps the thread count per calling thread: a call from another Python thread would
 * otherwise use the default, not the count set with m2c_set_num_threads. */
void m2c_threads_apply(void) {
#ifdef _OPENMP
    if (thread_count > 0 && omp_get_max_threads() != thread_count) omp_set_num_threads(thread_count);
#endif
}

/* A forked child inherits the OpenMP runtime but not its worker threads: a parallel region
 * there would wait forever for them. The child computes on one thread instead; processes that
 * want every core start with the "spawn" or "forkserver" method. */
static void single_thread_after_fork(void) { m2c_set_num_threads(1); }

void m2c_threads_init(void) { pthread_atfork(NULL, NULL, single_thread_after_fork); }

int m2c_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int m2c_threads(void) {
#ifdef _OPENMP
    return thread_count > 0 ? thread_count : omp_get_max_threads();
#else
    return 1;
#endif
}
