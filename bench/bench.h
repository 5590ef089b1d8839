/*
 * bench.h - benchmarks in other files of bench/, called from bench.c's main.
 */
#ifndef TANDEM_BENCH_H
#define TANDEM_BENCH_H

/* Median helper shared by the benchmarks. */
double bench_median(double *v, int n);

/* bench/netbuf.c: `bench netbuf: ...` lines. */
void bench_netbuf(void);

#endif
