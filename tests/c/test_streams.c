/* The generic stream handle through its instances (watch, lease keeper): free while another
 * thread waits in _next wakes it with ETCDC_ERR_CLOSED and ends the watch on the server; a
 * small queue limit loses and repeats nothing. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

/* etcd's count of watchers, from /metrics on the client URL; -1 if unreadable. */
static long etcd_watchers(void) {
  const char *ep = endpoints_from_env();
  const char *colon = strrchr(ep, ':');
  if (!colon) return -1;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)atoi(colon + 1));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
  if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
    close(fd);
    return -1;
  }
  static char buf[1 << 20];
  size_t n = 0;
  ssize_t r;
  while (n < sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
  close(fd);
  buf[n] = '\0';
  const char *line = strstr(buf, "\netcd_debugging_mvcc_watcher_total ");
  return line ? atol(line + strlen("\netcd_debugging_mvcc_watcher_total ")) : -1;
}

/* Waits (at most 5 s) until etcd counts `want` watchers. */
static int watchers_become(long want) {
  for (int i = 0; i < 100; i++) {
    if (etcd_watchers() == want) return 1;
    sleep_ms(50);
  }
  return 0;
}

typedef struct {
  etcdc_watch *w;
  etcdc_lease_keeper *k;
  etcdc_status got;
  int done;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} waiter;

static void *wait_in_next(void *arg) {
  waiter *wt = (waiter *)arg;
  etcdc_status s;
  if (wt->w) {
    etcdc_watch_response *r = NULL;
    s = etcdc_watch_next(wt->w, -1, &r);
    etcdc_watch_response_free(r);
  } else {
    etcdc_lease_event *e = NULL;
    s = etcdc_lease_keeper_next(wt->k, -1, &e);
    etcdc_lease_event_free(e);
  }
  pthread_mutex_lock(&wt->mu);
  wt->got = s;
  wt->done = 1;
  pthread_cond_broadcast(&wt->cv);
  pthread_mutex_unlock(&wt->mu);
  return NULL;
}

/* Starts a thread blocked in _next (no time limit), frees the handle, and expects the thread
 * to return ETCDC_ERR_CLOSED within 5 s. */
static void free_wakes_waiter(waiter *wt, etcdc_status (*free_it)(waiter *)) {
  wt->done = 0;
  pthread_mutex_init(&wt->mu, NULL);
  pthread_cond_init(&wt->cv, NULL);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, wait_in_next, wt) == 0);
  sleep_ms(100); /* let it block */
  OK(free_it(wt));
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 5;
  pthread_mutex_lock(&wt->mu);
  while (!wt->done && pthread_cond_timedwait(&wt->cv, &wt->mu, &until) == 0) {
  }
  int done = wt->done;
  pthread_mutex_unlock(&wt->mu);
  if (!done) {
    fprintf(stderr, "a thread waiting in _next was not woken by _free\n");
    exit(1); /* the waiter would hang the process */
  }
  pthread_join(t, NULL);
  CHECK(wt->got == ETCDC_ERR_CLOSED);
}

static etcdc_status free_watch(waiter *wt) { return etcdc_watch_free(wt->w); }
static etcdc_status free_keeper(waiter *wt) { return etcdc_lease_keeper_free(wt->k); }

static void free_while_waiting(etcdc_client *c) {
  long before = etcd_watchers();
  CHECK(before >= 0);
  waiter wt;
  memset(&wt, 0, sizeof wt);
  OK(etcdc_watch_start(c, S("s/free"), NULL, NULL, &wt.w));
  CHECK(watchers_become(before + 1));
  free_wakes_waiter(&wt, free_watch);
  CHECK(watchers_become(before)); /* the server's watch ended too */
  etcdc_watch_response *r = NULL;
  EXPECT(etcdc_watch_next(wt.w, 0, &r), ETCDC_ERR_INVALID_ARGUMENT); /* freed */
  EXPECT_MESSAGE("not a live handle");

  memset(&wt, 0, sizeof wt);
  OK(etcdc_lease_keeper_start(c, NULL, &wt.k));
  free_wakes_waiter(&wt, free_keeper);
}

static void small_queue_loses_nothing(etcdc_client *c) {
  etcdc_watch_options *o = etcdc_watch_options_new();
  EXPECT(etcdc_watch_options_set_queue_limit(o, 0), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_watch_options_set_queue_limit(o, 65537), ETCDC_ERR_INVALID_ARGUMENT);
  OK(etcdc_watch_options_set_queue_limit(o, 2));
  OK(etcdc_watch_options_set_prefix(o));
  etcdc_watch *w = NULL;
  OK(etcdc_watch_start(c, S("s/q/"), o, NULL, &w));
  etcdc_watch_options_free(o);
  int64_t revs[40];
  for (int i = 0; i < 40; i++) {
    char key[16];
    snprintf(key, sizeof key, "s/q/%d", i);
    etcdc_put_result *p = NULL;
    OK(etcdc_put(c, S(key), S("v"), NULL, &p));
    revs[i] = etcdc_header_revision(etcdc_put_result_header(p));
    etcdc_put_result_free(p);
  }
  int got = 0;
  etcdc_watch_response *r = NULL;
  while (got < 40 && etcdc_watch_next(w, 5000, &r) == ETCDC_OK) {
    CHECK(etcdc_watch_response_status(r) == ETCDC_OK);
    for (size_t i = 0; i < etcdc_watch_response_len(r) && got < 40; i++) {
      CHECK(etcdc_kv_mod_revision(etcdc_event_kv(etcdc_watch_response_event(r, i))) == revs[got]);
      got++;
    }
    etcdc_watch_response_free(r);
  }
  CHECK(got == 40);
  OK(etcdc_watch_free(w));
}

int main(void) {
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &c));
  free_while_waiting(c);
  small_queue_loses_nothing(c);
  OK(etcdc_client_free(c));
  return check_report("test_streams");
}
