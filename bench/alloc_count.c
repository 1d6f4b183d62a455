/* An LD_PRELOAD counter of heap allocations (malloc, calloc, realloc and the aligned forms,
 * on every thread), by size class; printed to stderr at exit. Allocations per call are the
 * difference between a short and a long run over the difference in calls:
 *   LD_PRELOAD=build/bench/c/liballoc_count.so build/bench/c/etcdc_bench etcdc-driven put 256 2 $ETCDC_ENDPOINTS
 *   (and again for 8 s) */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

/* Class k holds sizes up to 32 << k bytes; the last, everything larger. */
enum { CLASSES = 16 };
static atomic_ulong counts[CLASSES];

static void count(size_t n) {
  int k = 0;
  while (k < CLASSES - 1 && (32ul << k) < n) k++;
  atomic_fetch_add_explicit(&counts[k], 1, memory_order_relaxed);
}

void *malloc(size_t n) { count(n); return __libc_malloc(n); }
void *calloc(size_t m, size_t n) { count(m * n); return __libc_calloc(m, n); }
void *realloc(void *p, size_t n) { count(n); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { count(n); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
  void *p = memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}

__attribute__((destructor)) static void report(void) {
  unsigned long total = 0;
  for (int k = 0; k < CLASSES; k++) total += atomic_load(&counts[k]);
  fprintf(stderr, "allocations: %lu (", total);
  for (int k = 0; k < CLASSES - 1; k++) fprintf(stderr, "<=%lu: %lu, ", 32ul << k, atomic_load(&counts[k]));
  fprintf(stderr, ">%lu: %lu", 32ul << (CLASSES - 2), atomic_load(&counts[CLASSES - 1]));
  fprintf(stderr, ")\n");
}
