/* Helpers shared by the C API tests: state that callbacks on etcdc's event thread update,
 * bounded waits on it, and small readers. */
#ifndef ETCDC_TEST_COMMON_H
#define ETCDC_TEST_COMMON_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* State shared with callbacks on etcdc's event thread. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int events;
  int calls;
  int drops;
  int64_t last_rev;
  int in_order;
  etcdc_watch *self; /* freed from inside its own callback when set */
  int lease_alive;
  int lease_lost;
} shared_state;

static inline void state_init(shared_state *s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  s->in_order = 1;
}

/* Waits until *field >= want, at most 10 s. */
static inline int wait_for(shared_state *s, int *field, int want) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&s->mu);
  while (*field < want) {
    if (pthread_cond_timedwait(&s->cv, &s->mu, &until) != 0) break;
  }
  int ok = *field >= want;
  pthread_mutex_unlock(&s->mu);
  return ok;
}

static inline void on_watch(void *user_data, const etcdc_watch_response *r) {
  shared_state *s = (shared_state *)user_data;
  etcdc_watch *self = NULL;
  pthread_mutex_lock(&s->mu);
  s->calls++;
  if (etcdc_watch_response_kind(r) == ETCDC_WATCH_EVENTS) {
    for (size_t i = 0; i < etcdc_watch_response_len(r); i++) {
      const etcdc_kv *kv = etcdc_event_kv(etcdc_watch_response_event(r, i));
      int64_t rev = etcdc_kv_mod_revision(kv);
      if (rev <= s->last_rev) s->in_order = 0;
      s->last_rev = rev;
      s->events++;
    }
  }
  self = s->self;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  if (self) {
    /* Freeing a watch from inside its own callback returns at once. */
    etcdc_status st = etcdc_watch_free(self);
    if (st != ETCDC_OK) fprintf(stderr, "free from callback: %s\n", etcdc_status_str(st));
  }
}

static inline void on_drop(void *user_data) {
  shared_state *s = (shared_state *)user_data;
  pthread_mutex_lock(&s->mu);
  s->drops++;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static inline void on_lease(void *user_data, const etcdc_lease_event *e) {
  shared_state *s = (shared_state *)user_data;
  pthread_mutex_lock(&s->mu);
  if (etcdc_lease_event_state(e) == ETCDC_LEASE_ALIVE) s->lease_alive++;
  if (etcdc_lease_event_state(e) == ETCDC_LEASE_LOST) s->lease_lost++;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* A socket listening on a free loopback port (in `*port`): connections to it complete in the
 * kernel and nobody answers them. -1 on failure. */
static inline int loopback_listener(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 16) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
    *port = ntohs(a.sin_port);
    return fd;
  }
  if (fd >= 0) close(fd);
  return -1;
}

static inline void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

/* Runs `run(client, arg)` on a client of a one-member node embedded in this process, in a
 * temporary data dir removed afterwards: the same calls as against etcd. */
static inline void on_embedded_node(void (*run)(etcdc_client *, void *), void *arg) {
  char dir[] = "/tmp/etcdc-c-test-XXXXXX";
  if (!mkdtemp(dir)) {
    CHECK(!"mkdtemp");
    return;
  }
  etcdc_node_options *o = etcdc_node_options_new();
  OK(etcdc_node_options_set_data_dir(o, dir));
  OK(etcdc_node_options_set_timing_ms(o, 50, 300));
  etcdc_node *node = NULL;
  OK(etcdc_node_start(o, &node));
  etcdc_client *c = NULL;
  OK(etcdc_node_client(node, NULL, &c));
  if (c) run(c, arg);
  OK(etcdc_client_free(c));
  OK(etcdc_node_stop(node));
  etcdc_node_options_free(o);
  char cmd[sizeof dir + 16];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

static inline int value_is(const etcdc_kv *kv, const char *want) {
  size_t n = 0;
  const uint8_t *v = etcdc_kv_value(kv, &n);
  return v && n == strlen(want) && memcmp(v, want, n) == 0;
}

#endif
