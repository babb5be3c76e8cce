/* This CPU's fp32 FMA peak and clock, for benchmarks/_machine.py (issue 18).
 *
 *   gcc -O2 -march=native -fopenmp fma_peak.c -o fma_peak && ./fma_peak THREADS
 *
 * clock: a chain of dependent integer multiplies (three cycles each) timed on one core, per thread
 *        at once, median -> GHz under load, the clock the FMA loop runs at;
 * fma:   12 independent accumulators of the widest FMA vector the compiler targets
 *        (AVX-512: 16 floats, AVX2/FMA: 8), enough to hide the FMA latency on both FMA pipes;
 *        FLOP = 2 x lanes x 12 x iterations per thread, all threads at once.
 * Prints one JSON object: lanes, threads, ghz (median over threads), gflops (all threads).
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#if defined(__AVX512F__)
#define LANES 16
typedef __m512 vec;
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define SUM(v) _mm512_reduce_add_ps(v)
#elif defined(__FMA__)
#define LANES 8
typedef __m256 vec;
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
static float SUM(__m256 v) { float f[8]; _mm256_storeu_ps(f, v); return f[0]+f[1]+f[2]+f[3]+f[4]+f[5]+f[6]+f[7]; }
#else
#error "needs FMA (AVX2) or AVX-512"
#endif

static double clock_ghz(long n) {
    /* a chain of dependent 64-bit multiplies: 3 cycles each on Intel (since Sandy Bridge) and AMD
     * Zen alike. (A chain of immediate adds is not a clock: Golden Cove's renamer folds them.) */
    unsigned long x = 1, k = 3;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        __asm__ volatile(
            "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
            "imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0\n\t"
            : "+r"(x) : "r"(k));
    }
    double t = now() - t0;
    if (x == 0) return -1;   /* 3^k is odd: never 0; keeps x live */
    return 3.0 * 10.0 * n / t / 1e9;
}

static float fma_loop(long n) {
    vec a = SET1(1.0f), b = SET1(1e-7f);
    vec c0 = SET1(0), c1 = SET1(1), c2 = SET1(2), c3 = SET1(3), c4 = SET1(4), c5 = SET1(5);
    vec c6 = SET1(6), c7 = SET1(7), c8 = SET1(8), c9 = SET1(9), c10 = SET1(10), c11 = SET1(11);
    for (long i = 0; i < n; i++) {
        c0 = FMA(c0, a, b); c1 = FMA(c1, a, b); c2 = FMA(c2, a, b); c3 = FMA(c3, a, b);
        c4 = FMA(c4, a, b); c5 = FMA(c5, a, b); c6 = FMA(c6, a, b); c7 = FMA(c7, a, b);
        c8 = FMA(c8, a, b); c9 = FMA(c9, a, b); c10 = FMA(c10, a, b); c11 = FMA(c11, a, b);
    }
    vec s = ADD(ADD(ADD(c0, c1), ADD(c2, c3)), ADD(ADD(c4, c5), ADD(c6, c7)));
    s = ADD(s, ADD(ADD(c8, c9), ADD(c10, c11)));
    return SUM(s);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    long n_clock = 100000000L, n_fma = 200000000L;
    double ghz[256];
    float sink = 0;
    if (threads < 1 || threads > 256) return 2;
    omp_set_num_threads(threads);
    clock_ghz(n_clock / 10);   /* warm up: let the clock ramp */
#pragma omp parallel
    { ghz[omp_get_thread_num()] = clock_ghz(n_clock); }
    qsort(ghz, threads, sizeof(double), cmp);
    double t0 = now();
#pragma omp parallel reduction(+ : sink)
    { sink += fma_loop(n_fma); }
    double t = now() - t0;
    double gflops = 2.0 * LANES * 12.0 * n_fma * threads / t / 1e9;
    printf("{\"lanes\": %d, \"threads\": %d, \"ghz\": %.4f, \"gflops\": %.2f, \"sink\": %g}\n",
           LANES, threads, ghz[threads / 2], gflops, (double)sink);
    return 0;
}
