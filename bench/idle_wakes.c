/* What a driven queue's descriptor costs an idle epoll loop: for 10 s, a loop that sleeps on
 * the queue's fd with nothing in flight, then with one dequeue waiting without limit (the
 * timer's backstop fires once a second while a call is in flight); prints wake-ups and the
 * process's CPU time.
 *   scripts/with-etcd.sh build/bench/c/idle_wakes      (after scripts/bench.sh built it) */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include <etcdc.h>

static double cpu_ms(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Sleeps on `fd` for `seconds`, taking what each wake-up brings; the number of wake-ups. */
static long loop(etcdc_cq *cq, int fd, double seconds) {
  long wakes = 0;
  etcdc_completion *done = NULL;
  for (double t0 = now_s(); now_s() - t0 < seconds;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 100) != 1) continue;
    wakes++;
    while (etcdc_cq_next(cq, 0, &done) == ETCDC_OK) etcdc_completion_free(done);
  }
  return wakes;
}

int main(void) {
  const char *endpoints = getenv("ETCDC_ENDPOINTS");
  etcdc_client *c = NULL;
  etcdc_cq *cq = NULL;
  int fd = -1;
  if (etcdc_client_connect(endpoints ? endpoints : "http://127.0.0.1:2379", NULL, &c) != ETCDC_OK ||
      etcdc_cq_new_driven(&cq) != ETCDC_OK || etcdc_cq_fd(cq, &fd) != ETCDC_OK) {
    fprintf(stderr, "%s\n", etcdc_last_error());
    return 1;
  }
  /* The queue's connection, made and answered once. */
  if (etcdc_get_async(c, (const uint8_t *)"idle", 4, NULL, cq, NULL, NULL) != ETCDC_OK) return 1;
  loop(cq, fd, 1);
  printf("| in flight | wake-ups / s | CPU ms / s | CPU us per wake-up |\n|---|---:|---:|---:|\n");
  for (int waiting = 0; waiting <= 1; waiting++) {
    if (waiting && etcdc_queue_dequeue_async(c, "/idle-jobs", true, -1, cq, NULL, NULL) != ETCDC_OK) return 1;
    double c0 = cpu_ms();
    long wakes = loop(cq, fd, 10);
    double cpu = cpu_ms() - c0;
    printf("| %s | %.1f | %.2f | %.0f |\n", waiting ? "a dequeue waiting" : "nothing", (double)wakes / 10, cpu / 10,
           wakes ? cpu * 1e3 / (double)wakes : 0.0);
  }
  etcdc_cq_free(cq);
  etcdc_client_free(c);
  return 0;
}
