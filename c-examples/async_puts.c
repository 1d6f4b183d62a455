/* Many puts in flight from one thread: an epoll loop keeps 64 etcdc_put_async calls going
 * and takes their completions when the queue's fd is readable — as a single-threaded
 * reactor (the chat servers) does with libcurl's multi interface. Prints the rate, and fails
 * if memory grew over the second half of the run.
 * Usage: async_puts [endpoints] [count] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <etcdc.h>

/* Resident memory in kB. */
static long rss_kb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  const char *endpoints = argc > 1 ? argv[1] : getenv("ETCDC_ENDPOINTS");
  long total = argc > 2 ? atol(argv[2]) : 20000;
  etcdc_client *c = NULL;
  etcdc_cq *cq = NULL;
  if (etcdc_client_connect(endpoints ? endpoints : "http://127.0.0.1:2379", NULL, &c) != ETCDC_OK ||
      etcdc_cq_new(NULL, &cq) != ETCDC_OK) {
    fprintf(stderr, "%s\n", etcdc_last_error());
    return 1;
  }
  int fd = -1;
  etcdc_cq_fd(cq, &fd);
  int ep = epoll_create1(0);
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);

  long started = 0, done = 0, failed = 0, inflight = 0, rss_half = 0;
  double t0 = now();
  while (done < total) {
    while (inflight < 64 && started < total) {
      char key[32];
      int n = snprintf(key, sizeof key, "async/%ld", started % 1000);
      if (etcdc_put_async(c, (const uint8_t *)key, (size_t)n, (const uint8_t *)"value", 5, NULL, cq, NULL, NULL) != ETCDC_OK) {
        fprintf(stderr, "put_async: %s\n", etcdc_last_error());
        return 1;
      }
      started++;
      inflight++;
    }
    struct epoll_event ready;
    if (epoll_wait(ep, &ready, 1, 10000) != 1) break; /* (other sockets would be served here) */
    etcdc_completion *comp = NULL;
    while (etcdc_cq_next(cq, 0, &comp) == ETCDC_OK) {
      if (etcdc_completion_status(comp) != ETCDC_OK) {
        if (failed++ == 0) fprintf(stderr, "a put failed: %s\n", etcdc_completion_message(comp));
      }
      etcdc_completion_free(comp);
      done++;
      inflight--;
      if (done == total / 2) rss_half = rss_kb();
    }
  }
  double secs = now() - t0;
  long rss_end = rss_kb();
  printf("%ld puts, 64 in flight from one thread: %.0f puts/s (%ld failed); RSS %ld kB at half, %ld kB at the end\n",
         done, done / secs, failed, rss_half, rss_end);
  etcdc_cq_free(cq);
  etcdc_client_free(c);
  /* One queue, any number of operations: memory does not grow with them. */
  int flat = rss_end - rss_half < 8 * 1024;
  if (!flat) fprintf(stderr, "memory grew by %ld kB over the second half\n", rss_end - rss_half);
  return done == total && failed == 0 && flat ? 0 : 1;
}
