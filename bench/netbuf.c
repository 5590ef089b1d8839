/* Placeholder until the netbuf benchmark lands. */
#include <stdio.h>
#include "bench.h"
void bench_netbuf(void) { printf("bench netbuf: not yet measured\n"); }
