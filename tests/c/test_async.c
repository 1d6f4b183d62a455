/* The asynchronous C API: many calls in flight from one thread through one completion
 * queue (pull form with poll on its fd, callback form, and a driven queue whose calls run
 * inside etcdc_cq_next, waited on there or through its fd), every kind of call, cancel,
 * client free and deadline expiry with operations in flight — each operation completes
 * exactly once — and a long run with flat memory. On real etcd and on an in-process node. */
#include <poll.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

/* AddressSanitizer keeps freed memory in a quarantine (256 MB by default) that would read as
 * growth: a small one keeps the memory check about etcdc (with C linkage, also when this file
 * is built as C++). */
#ifdef __cplusplus
extern "C" {
#endif
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "quarantine_size_mb=4"; }
#ifdef __cplusplus
}
#endif

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* How the tests take completions. 0: they wait in etcdc_cq_next, except `drain` on a queue
 * that is not `driven_inside`, which polls the fd. 1: always as an epoll loop does — poll the
 * queue's fd, then etcdc_cq_next without waiting. */
static int via_fd = 0;
/* The queue under test is driven and only waited on inside etcdc_cq_next (its fd is never
 * asked for). */
static int driven_inside = 0;

/* The next completion as an epoll loop takes it, within `ms`. */
static etcdc_status next_polled(etcdc_cq *cq, long ms, etcdc_completion **out) {
  int fd = -1;
  etcdc_status s = etcdc_cq_fd(cq, &fd);
  if (s != ETCDC_OK) return s;
  long until = now_ms() + ms;
  for (;;) {
    s = etcdc_cq_next(cq, 0, out);
    long left = until - now_ms();
    if (s != ETCDC_ERR_TIMEOUT || left <= 0) return s;
    struct pollfd p = {fd, POLLIN, 0};
    poll(&p, 1, (int)left);
  }
}

static etcdc_status next(etcdc_cq *cq, long ms, etcdc_completion **out) {
  return via_fd ? next_polled(cq, ms, out) : etcdc_cq_next(cq, ms, out);
}

/* Takes completions until `n` arrived (10 s at most); counts the OK ones. */
static int drain(etcdc_cq *cq, int n, int *ok, char *seen) {
  int got = 0;
  while (got < n) {
    etcdc_completion *c = NULL;
    etcdc_status s = driven_inside && !via_fd ? etcdc_cq_next(cq, 10000, &c) : next_polled(cq, 10000, &c);
    if (s != ETCDC_OK) break;
    size_t tag = (size_t)etcdc_completion_tag(c);
    if (seen) {
      CHECK(seen[tag] == 0); /* exactly once */
      seen[tag] = 1;
    }
    if (etcdc_completion_status(c) == ETCDC_OK) (*ok)++;
    etcdc_completion_free(c);
    got++;
  }
  return got;
}

static void every_call(etcdc_client *c, etcdc_cq *cq) {
  enum { N = 64 };
  char seen[N] = {0};
  for (size_t i = 0; i < N; i++) {
    char key[32];
    snprintf(key, sizeof key, "async/%02zu", i);
    OK(etcdc_put_async(c, S(key), S("v"), NULL, cq, (void *)i, NULL));
  }
  int ok = 0;
  CHECK(drain(cq, N, &ok, seen) == N && ok == N);

  etcdc_get_options *prefix = etcdc_get_options_new();
  OK(etcdc_get_options_set_prefix(prefix));
  etcdc_op *op = NULL;
  OK(etcdc_get_async(c, S("async/"), prefix, cq, (void *)7, &op));
  etcdc_get_options_free(prefix);
  etcdc_completion *done = NULL;
  OK(next(cq, 10000, &done));
  CHECK(etcdc_completion_tag(done) == (void *)7 && etcdc_completion_status(done) == ETCDC_OK);
  CHECK(etcdc_get_result_count(etcdc_completion_get_result(done)) == N);
  CHECK(etcdc_completion_put_result(done) == NULL);
  etcdc_completion_free(done);
  OK(etcdc_op_cancel(op)); /* completed already: nothing happens */
  EXPECT(next(cq, 100, &done), ETCDC_ERR_TIMEOUT);
  OK(etcdc_op_free(op));

  etcdc_txn *t = etcdc_txn_new();
  OK(etcdc_txn_compare_value(t, S("async/00"), ETCDC_CMP_EQUAL, S("v")));
  OK(etcdc_txn_put(t, ETCDC_TXN_THEN, S("async/txn"), S("yes"), NULL));
  OK(etcdc_txn_commit_async(c, t, cq, (void *)1, NULL));
  etcdc_txn_free(t);
  OK(next(cq, 10000, &done));
  CHECK(etcdc_completion_status(done) == ETCDC_OK && etcdc_txn_result_succeeded(etcdc_completion_txn_result(done)));
  etcdc_completion_free(done);

  OK(etcdc_lease_grant_async(c, 30, 0, 0, cq, (void *)2, NULL));
  OK(next(cq, 10000, &done));
  int64_t lease = etcdc_completion_lease_id(done);
  CHECK(lease > 0);
  etcdc_completion_free(done);
  OK(etcdc_lease_time_to_live_async(c, lease, true, 0, cq, (void *)8, NULL));
  OK(next(cq, 10000, &done));
  CHECK(etcdc_lease_info_granted_ttl(etcdc_completion_lease_info(done)) == 30);
  etcdc_completion_free(done);
  OK(etcdc_leases_async(c, 0, cq, (void *)9, NULL));
  OK(next(cq, 10000, &done));
  CHECK(etcdc_lease_list_len(etcdc_completion_lease_list(done)) >= 1);
  etcdc_completion_free(done);
  OK(etcdc_cluster_members_async(c, 0, cq, (void *)10, NULL));
  OK(next(cq, 10000, &done));
  CHECK(etcdc_member_list_len(etcdc_completion_member_list(done)) >= 1);
  etcdc_completion_free(done);
  OK(etcdc_endpoint_status_async(c, 0, cq, (void *)11, NULL));
  OK(next(cq, 10000, &done));
  CHECK(etcdc_completion_status(done) == ETCDC_OK && etcdc_completion_endpoint_status(done) != NULL);
  int64_t rev = etcdc_header_revision(etcdc_endpoint_status_header(etcdc_completion_endpoint_status(done)));
  etcdc_completion_free(done);
  OK(etcdc_compact_async(c, rev, false, 0, cq, (void *)12, NULL));
  OK(next(cq, 10000, &done));
  CHECK(etcdc_completion_status(done) == ETCDC_OK);
  etcdc_completion_free(done);
  OK(etcdc_lease_revoke_async(c, lease, 0, cq, (void *)3, NULL));
  OK(etcdc_lease_revoke_async(c, lease + 1, 0, cq, (void *)4, NULL));
  for (int i = 0; i < 2; i++) {
    OK(next(cq, 10000, &done));
    if (etcdc_completion_tag(done) == (void *)3) CHECK(etcdc_completion_status(done) == ETCDC_OK);
    else CHECK(etcdc_completion_status(done) == ETCDC_ERR_NOT_FOUND && strstr(etcdc_completion_message(done), "lease not found"));
    etcdc_completion_free(done);
  }

  etcdc_delete_options *all = etcdc_delete_options_new();
  OK(etcdc_delete_options_set_prefix(all));
  OK(etcdc_delete_async(c, S("async/"), all, cq, (void *)5, NULL));
  etcdc_delete_options_free(all);
  OK(next(cq, 10000, &done));
  CHECK(etcdc_delete_result_deleted(etcdc_completion_delete_result(done)) == N + 1);
  etcdc_completion_free(done);

  /* A consumer waiting in the loop: the dequeue completes when an item arrives. */
  OK(etcdc_queue_dequeue_async(c, "/async-jobs", true, -1, cq, (void *)20, NULL));
  EXPECT(next(cq, 200, &done), ETCDC_ERR_TIMEOUT);
  OK(etcdc_queue_enqueue_async(c, "/async-jobs", S("job"), 0, cq, (void *)21, NULL));
  for (int i = 0; i < 2; i++) {
    OK(next(cq, 10000, &done));
    size_t n = 0;
    const uint8_t *v = etcdc_queue_item_value(etcdc_completion_queue_item(done), &n);
    CHECK(etcdc_completion_status(done) == ETCDC_OK && v && n == 3 && memcmp(v, "job", 3) == 0);
    etcdc_completion_free(done);
  }

  /* Bad arguments fail the call itself; nothing completes. */
  EXPECT(etcdc_put_async(c, NULL, 3, S("v"), NULL, cq, NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_put_async(c, S("k"), S("v"), NULL, NULL, NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_lease_grant_async(c, 0, 0, 0, cq, NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(next(cq, 100, &done), ETCDC_ERR_TIMEOUT);
}

/* The next completion, which must carry `tag`. */
static etcdc_completion *expect_tag(etcdc_cq *cq, size_t tag) {
  etcdc_completion *done = NULL;
  OK(next(cq, 10000, &done));
  if (!done) return NULL;
  CHECK(etcdc_completion_tag(done) == (void *)tag);
  if (etcdc_completion_status(done) != ETCDC_OK)
    fprintf(stderr, "  tag %zu: %s\n", tag, etcdc_completion_message(done));
  return done;
}

/* Watches, keepers, sessions, registrations, discoveries, observers, mutexes and elections
 * all through the one queue: each stream's next item is one asynchronous operation. */
static void streams_and_recipes(etcdc_client *c, etcdc_cq *cq) {
  etcdc_completion *done = NULL;

  /* A watch: its responses, in order, one operation each; a canceled operation leaves its
   * response in the watch. */
  etcdc_watch_options *wo = etcdc_watch_options_new();
  OK(etcdc_watch_options_set_prefix(wo));
  /* On a driven queue the watch runs there too (on another queue, on etcdc's runtime). */
  OK(etcdc_watch_options_set_queue(wo, cq));
  etcdc_watch *w = NULL;
  OK(etcdc_watch_start(c, S("streams/"), wo, NULL, &w));
  etcdc_op *op = NULL;
  OK(etcdc_watch_next_async(w, cq, (void *)30, &op));
  OK(etcdc_op_cancel(op));
  OK(etcdc_op_free(op));
  done = expect_tag(cq, 30);
  CHECK(etcdc_completion_status(done) == ETCDC_ERR_CANCELED);
  etcdc_completion_free(done);
  OK(etcdc_put(c, S("streams/a"), S("1"), NULL, NULL));
  OK(etcdc_put(c, S("streams/b"), S("2"), NULL, NULL));
  int events = 0;
  while (events < 2) {
    OK(etcdc_watch_next_async(w, cq, (void *)31, NULL));
    done = expect_tag(cq, 31);
    const etcdc_watch_response *r = etcdc_completion_watch_response(done);
    CHECK(r != NULL && etcdc_watch_response_kind(r) == ETCDC_WATCH_EVENTS);
    for (size_t i = 0; r && i < etcdc_watch_response_len(r); i++, events++) {
      size_t n = 0;
      const uint8_t *k = etcdc_kv_key(etcdc_event_kv(etcdc_watch_response_event(r, i)), &n);
      CHECK(n == 9 && k[8] == (events == 0 ? 'a' : 'b'));
    }
    etcdc_completion_free(done);
    if (!r) break;
  }
  /* Freeing the watch ends what waits on it. */
  OK(etcdc_watch_next_async(w, cq, (void *)32, NULL));
  OK(etcdc_watch_free(w));
  done = expect_tag(cq, 32);
  CHECK(etcdc_completion_status(done) == ETCDC_ERR_CLOSED);
  etcdc_completion_free(done);
  EXPECT(etcdc_watch_next_async(w, cq, (void *)33, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  etcdc_watch_options_free(wo);

  /* A keeper's states. */
  int64_t lease = 0;
  /* A short TTL: a keeper sees a revocation at its next refresh, a third of the TTL on. */
  OK(etcdc_lease_grant(c, 6, 0, 0, &lease, NULL));
  etcdc_lease_keeper *k = NULL;
  OK(etcdc_lease_keeper_start(c, NULL, &k));
  OK(etcdc_lease_keeper_add(k, lease));
  OK(etcdc_lease_keeper_next_async(k, cq, (void *)34, NULL));
  done = expect_tag(cq, 34);
  const etcdc_lease_event *le = etcdc_completion_lease_event(done);
  CHECK(le && etcdc_lease_event_id(le) == lease && etcdc_lease_event_state(le) == ETCDC_LEASE_ALIVE);
  etcdc_completion_free(done);
  OK(etcdc_lease_keeper_next_async(k, cq, (void *)35, NULL));
  OK(etcdc_lease_revoke(c, lease, 0));
  done = expect_tag(cq, 35);
  le = etcdc_completion_lease_event(done);
  /* Refreshes may report ALIVE again before the loss is seen. */
  while (le && etcdc_lease_event_state(le) == ETCDC_LEASE_ALIVE) {
    etcdc_completion_free(done);
    OK(etcdc_lease_keeper_next_async(k, cq, (void *)35, NULL));
    done = expect_tag(cq, 35);
    le = etcdc_completion_lease_event(done);
  }
  CHECK(le && etcdc_lease_event_state(le) == ETCDC_LEASE_LOST);
  etcdc_completion_free(done);
  OK(etcdc_lease_keeper_free(k));

  /* Registration and discovery: register, see it, unregister, see it go. */
  etcdc_discovery *d = NULL;
  OK(etcdc_discover(c, "/async-svc", NULL, &d));
  OK(etcdc_register_async(c, "/async-svc", "one", "127.0.0.1:1", NULL, NULL, cq, (void *)36, NULL));
  done = expect_tag(cq, 36);
  etcdc_registration *reg = etcdc_completion_take_registration(done);
  CHECK(reg != NULL && etcdc_completion_take_registration(done) == NULL);
  etcdc_completion_free(done);
  OK(etcdc_registration_next_async(reg, cq, (void *)37, NULL));
  done = expect_tag(cq, 37);
  CHECK(etcdc_registration_event_state(etcdc_completion_registration_event(done)) == ETCDC_REGISTERED);
  etcdc_completion_free(done);
  OK(etcdc_discovery_next_async(d, cq, (void *)38, NULL));
  done = expect_tag(cq, 38);
  const etcdc_discovery_event *de = etcdc_completion_discovery_event(done);
  CHECK(de && etcdc_discovery_event_change(de) == ETCDC_INSTANCE_ADDED);
  CHECK(de && strcmp(etcdc_instance_id(etcdc_discovery_event_instance(de)), "one") == 0);
  etcdc_completion_free(done);
  /* A registration whose completion is freed untaken is unregistered with it. */
  OK(etcdc_register_async(c, "/async-svc", "two", "127.0.0.1:2", NULL, NULL, cq, (void *)39, NULL));
  done = expect_tag(cq, 39);
  etcdc_completion_free(done);
  OK(etcdc_registration_free_async(reg, cq, (void *)40, NULL));
  done = expect_tag(cq, 40);
  CHECK(etcdc_completion_status(done) == ETCDC_OK);
  etcdc_completion_free(done);
  int added = 0, removed = 0;
  while (removed < 2) {
    OK(etcdc_discovery_next_async(d, cq, (void *)41, NULL));
    done = expect_tag(cq, 41);
    de = etcdc_completion_discovery_event(done);
    if (!de) {
      etcdc_completion_free(done);
      break;
    }
    if (etcdc_discovery_event_change(de) == ETCDC_INSTANCE_ADDED) added++;
    if (etcdc_discovery_event_change(de) == ETCDC_INSTANCE_REMOVED) removed++;
    etcdc_completion_free(done);
  }
  CHECK(added == 1 && removed == 2);
  OK(etcdc_discovery_free(d));

  /* Mutexes: the second lock completes only once the first is released. */
  etcdc_session *s1 = NULL, *s2 = NULL;
  OK(etcdc_session_start(c, 30, NULL, &s1));
  OK(etcdc_session_start(c, 30, NULL, &s2));
  etcdc_mutex *m1 = NULL, *m2 = NULL;
  OK(etcdc_mutex_new(s1, S("/async-lock"), &m1));
  OK(etcdc_mutex_new(s2, S("/async-lock"), &m2));
  OK(etcdc_mutex_lock_async(m1, 0, cq, (void *)42, NULL));
  done = expect_tag(cq, 42);
  CHECK(etcdc_completion_status(done) == ETCDC_OK && etcdc_mutex_revision(m1) > 0);
  etcdc_completion_free(done);
  OK(etcdc_mutex_try_lock_async(m2, 0, cq, (void *)43, NULL));
  done = expect_tag(cq, 43);
  CHECK(etcdc_completion_status(done) == ETCDC_ERR_FAILED_PRECONDITION);
  etcdc_completion_free(done);
  OK(etcdc_mutex_lock_async(m2, -1, cq, (void *)44, NULL));
  EXPECT(next(cq, 300, &done), ETCDC_ERR_TIMEOUT);
  OK(etcdc_mutex_unlock_async(m1, 0, cq, (void *)45, NULL));
  for (int i = 0; i < 2; i++) {
    OK(next(cq, 10000, &done));
    CHECK(etcdc_completion_status(done) == ETCDC_OK);
    etcdc_completion_free(done);
  }
  CHECK(etcdc_mutex_revision(m1) == 0 && etcdc_mutex_revision(m2) > 0);
  OK(etcdc_mutex_unlock_async(m2, 0, cq, (void *)46, NULL));
  etcdc_completion_free(expect_tag(cq, 46));
  OK(etcdc_mutex_free(m1));
  OK(etcdc_mutex_free(m2));

  /* Elections: an observer sees the campaign, the proclamation and the next leader. */
  etcdc_observer *obs = NULL;
  OK(etcdc_election_observe(c, S("/async-elect"), NULL, &obs));
  etcdc_election *e1 = NULL, *e2 = NULL;
  OK(etcdc_election_new(s1, S("/async-elect"), &e1));
  OK(etcdc_election_new(s2, S("/async-elect"), &e2));
  OK(etcdc_election_campaign_async(e1, S("first"), 0, cq, (void *)47, NULL));
  etcdc_completion_free(expect_tag(cq, 47));
  OK(etcdc_election_campaign_async(e2, S("second"), -1, cq, (void *)48, NULL));
  OK(etcdc_election_proclaim_async(e1, S("first-b"), 0, cq, (void *)49, NULL));
  done = expect_tag(cq, 49);
  CHECK(etcdc_completion_status(done) == ETCDC_OK);
  etcdc_completion_free(done);
  OK(etcdc_election_resign_async(e1, 0, cq, (void *)50, NULL));
  for (int i = 0; i < 2; i++) {
    OK(next(cq, 10000, &done));
    CHECK(etcdc_completion_status(done) == ETCDC_OK);
    etcdc_completion_free(done);
  }
  const char *want[] = {"first", "first-b", "second"};
  for (int i = 0; i < 3; i++) {
    OK(etcdc_observer_next_async(obs, cq, (void *)51, NULL));
    done = expect_tag(cq, 51);
    const etcdc_leader *l = etcdc_completion_leader(done);
    size_t n = 0;
    const uint8_t *v = l ? etcdc_leader_value(l, &n) : NULL;
    /* An observer may skip a value it was too late for, never reorder them. */
    while (i < 2 && v && (n != strlen(want[i]) || memcmp(v, want[i], n) != 0)) i++;
    CHECK(v && n == strlen(want[i]) && memcmp(v, want[i], n) == 0);
    etcdc_completion_free(done);
  }
  OK(etcdc_election_resign_async(e2, 0, cq, (void *)52, NULL));
  etcdc_completion_free(expect_tag(cq, 52));
  OK(etcdc_observer_free(obs));
  OK(etcdc_election_free(e1));
  OK(etcdc_election_free(e2));
  /* A session's first state is ALIVE; then, nothing until it changes: freeing the session
   * ends the take waiting for the next one. */
  OK(etcdc_session_next_async(s1, cq, (void *)53, NULL));
  done = expect_tag(cq, 53);
  le = etcdc_completion_lease_event(done);
  CHECK(le && etcdc_lease_event_state(le) == ETCDC_LEASE_ALIVE && etcdc_lease_event_id(le) == etcdc_session_lease(s1));
  etcdc_completion_free(done);
  OK(etcdc_session_next_async(s1, cq, (void *)54, NULL));
  OK(etcdc_session_free(s1));
  done = expect_tag(cq, 54);
  CHECK(etcdc_completion_status(done) == ETCDC_ERR_CLOSED);
  etcdc_completion_free(done);
  OK(etcdc_session_free(s2));
  EXPECT(next(cq, 100, &done), ETCDC_ERR_TIMEOUT);
}

/* Many operations through one queue, 64 in flight: memory stays flat. */
static void long_run(etcdc_client *c, etcdc_cq *cq, int total, int check_memory) {
  long before = 0;
  int inflight = 0, started = 0, finished = 0, ok = 0;
  while (finished < total) {
    while (inflight < 64 && started < total) {
      char key[32];
      snprintf(key, sizeof key, "run/%d", started % 100);
      OK(etcdc_put_async(c, S(key), S("value"), NULL, cq, NULL, NULL));
      started++;
      inflight++;
    }
    etcdc_completion *done = NULL;
    if (next(cq, 10000, &done) != ETCDC_OK) break;
    ok += etcdc_completion_status(done) == ETCDC_OK;
    etcdc_completion_free(done);
    inflight--;
    finished++;
    if (finished == total / 2) before = rss_kb();
  }
  long after = rss_kb();
  printf("%d operations, 64 in flight: RSS %ld kB at half, %ld kB at the end\n", total, before, after);
  CHECK(finished == total && ok == total);
  if (check_memory) CHECK(after - before < 8 * 1024);
}

typedef struct {
  pthread_mutex_t mu;
  int calls, drops;
} pushed;

static void on_completion(void *user_data, const etcdc_completion *c) {
  pushed *p = (pushed *)user_data;
  pthread_mutex_lock(&p->mu);
  p->calls += etcdc_completion_status(c) == ETCDC_OK;
  pthread_mutex_unlock(&p->mu);
}

static void on_cq_drop(void *user_data) {
  pushed *p = (pushed *)user_data;
  pthread_mutex_lock(&p->mu);
  p->drops++;
  pthread_mutex_unlock(&p->mu);
}

static void callback_queue(etcdc_client *c) {
  pushed p;
  memset(&p, 0, sizeof p);
  pthread_mutex_init(&p.mu, NULL);
  etcdc_completion_callback cb = {on_completion, on_cq_drop, &p};
  etcdc_cq *cq = NULL;
  OK(etcdc_cq_new(&cb, &cq));
  for (int i = 0; i < 32; i++) OK(etcdc_put_async(c, S("pushed"), S("x"), NULL, cq, NULL, NULL));
  for (int i = 0; i < 200; i++) {
    pthread_mutex_lock(&p.mu);
    int calls = p.calls;
    pthread_mutex_unlock(&p.mu);
    if (calls == 32) break;
    sleep_ms(50);
  }
  CHECK(p.calls == 32);
  OK(etcdc_cq_free(cq));
  CHECK(p.drops == 1);
}

/* Against nobody: cancel, client free and deadline each complete what is in flight, once. */
static void nobody_answers(etcdc_cq *cq) {
  etcdc_client_options *o = etcdc_client_options_new();
  OK(etcdc_client_options_set_timeout_ms(o, 30000));
  etcdc_client *dead = NULL;
  OK(etcdc_client_connect("http://127.0.0.1:1", o, &dead));
  etcdc_client_options_free(o);
  etcdc_op *op = NULL;
  OK(etcdc_get_async(dead, S("k"), NULL, cq, (void *)100, &op));
  OK(etcdc_op_cancel(op));
  OK(etcdc_op_cancel(op));
  etcdc_completion *done = NULL;
  OK(next(cq, 5000, &done));
  CHECK(etcdc_completion_tag(done) == (void *)100 && etcdc_completion_status(done) == ETCDC_ERR_CANCELED);
  etcdc_completion_free(done);
  OK(etcdc_op_free(op));
  EXPECT(etcdc_op_cancel(op), ETCDC_ERR_INVALID_ARGUMENT);

  char seen[10] = {0};
  for (size_t i = 0; i < 10; i++) OK(etcdc_get_async(dead, S("k"), NULL, cq, (void *)i, NULL));
  OK(etcdc_client_free(dead));
  int ok = 0;
  CHECK(drain(cq, 10, &ok, seen) == 10 && ok == 0);
  EXPECT(next(cq, 200, &done), ETCDC_ERR_TIMEOUT); /* nothing twice */

  OK(etcdc_client_connect("http://127.0.0.1:1", NULL, &dead));
  etcdc_get_options *quick = etcdc_get_options_new();
  OK(etcdc_get_options_set_timeout_ms(quick, 300));
  OK(etcdc_get_async(dead, S("k"), quick, cq, NULL, NULL));
  etcdc_get_options_free(quick);
  OK(next(cq, 5000, &done));
  CHECK(etcdc_completion_status(done) == ETCDC_ERR_UNAVAILABLE || etcdc_completion_status(done) == ETCDC_ERR_TIMEOUT);
  etcdc_completion_free(done);
  OK(etcdc_client_free(dead));
}

static void on_node(etcdc_client *local, void *queue) {
  etcdc_cq *cq = (etcdc_cq *)queue;
  every_call(local, cq);
  streams_and_recipes(local, cq);
  /* The node keeps every version until a compaction: its memory grows by design here. */
  long_run(local, cq, 20000, 0);
}

typedef struct {
  etcdc_cq *cq;
  etcdc_status status;
  etcdc_completion *done;
} waiter;

static void *wait_once(void *arg) {
  waiter *w = (waiter *)arg;
  w->status = etcdc_cq_next(w->cq, 10000, &w->done);
  return NULL;
}

/* What only a driven queue does: its calls run inside etcdc_cq_next and nowhere else. */
static void driven_only(etcdc_client *c) {
  etcdc_cq *cq = NULL;
  EXPECT(etcdc_cq_new_driven(NULL), ETCDC_ERR_INVALID_ARGUMENT);
  OK(etcdc_cq_new_driven(&cq));
  OK(etcdc_put_async(c, S("driven/k"), S("v"), NULL, cq, (void *)1, NULL));
  sleep_ms(300);
  etcdc_get_result *r = NULL;
  OK(etcdc_get(c, S("driven/k"), NULL, &r));
  CHECK(etcdc_get_result_count(r) == 0); /* not sent: nobody drove the queue */
  etcdc_get_result_free(r);
  etcdc_completion *done = NULL;
  OK(etcdc_cq_next(cq, 10000, &done));
  CHECK(etcdc_completion_tag(done) == (void *)1 && etcdc_completion_status(done) == ETCDC_OK);
  etcdc_completion_free(done);
  OK(etcdc_get(c, S("driven/k"), NULL, &r));
  CHECK(etcdc_get_result_count(r) == 1);
  etcdc_get_result_free(r);
  /* No wait: what is ready, then ETCDC_ERR_TIMEOUT. */
  EXPECT(etcdc_cq_next(cq, 0, &done), ETCDC_ERR_TIMEOUT);
  /* Canceled before any drive: it completes canceled and is never sent. */
  etcdc_op *op = NULL;
  OK(etcdc_put_async(c, S("driven/canceled"), S("v"), NULL, cq, (void *)2, &op));
  OK(etcdc_op_cancel(op));
  OK(etcdc_op_free(op));
  OK(etcdc_cq_next(cq, 10000, &done));
  CHECK(etcdc_completion_tag(done) == (void *)2 && etcdc_completion_status(done) == ETCDC_ERR_CANCELED);
  etcdc_completion_free(done);
  EXPECT(etcdc_cq_next(cq, 300, &done), ETCDC_ERR_TIMEOUT);
  OK(etcdc_get(c, S("driven/canceled"), NULL, &r));
  CHECK(etcdc_get_result_count(r) == 0);
  etcdc_get_result_free(r);
  /* A call started while another thread waits in etcdc_cq_next runs in that wait. */
  waiter w = {cq, ETCDC_ERR_INTERNAL, NULL};
  pthread_t t;
  CHECK(pthread_create(&t, NULL, wait_once, &w) == 0);
  sleep_ms(200);
  OK(etcdc_put_async(c, S("driven/k"), S("x"), NULL, cq, (void *)3, NULL));
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(w.status == ETCDC_OK && etcdc_completion_tag(w.done) == (void *)3);
  CHECK(etcdc_completion_status(w.done) == ETCDC_OK);
  etcdc_completion_free(w.done);
  /* A watch on the queue: it moves only while the queue is driven, its responses come
   * through the queue, and freeing the queue ends it. */
  etcdc_cq *home = NULL;
  OK(etcdc_cq_new_driven(&home));
  etcdc_watch_options *wo = etcdc_watch_options_new();
  EXPECT(etcdc_watch_options_set_queue(NULL, home), ETCDC_ERR_INVALID_ARGUMENT);
  OK(etcdc_watch_options_set_queue(wo, home));
  etcdc_watch *watch = NULL;
  OK(etcdc_watch_start(c, S("driven/w"), wo, NULL, &watch));
  OK(etcdc_put(c, S("driven/w"), S("1"), NULL, NULL));
  etcdc_watch_response *resp = NULL;
  EXPECT(etcdc_watch_next(watch, 300, &resp), ETCDC_ERR_TIMEOUT); /* nobody drove the queue */
  OK(etcdc_watch_next_async(watch, home, (void *)5, NULL));
  OK(etcdc_cq_next(home, 10000, &done));
  CHECK(etcdc_completion_tag(done) == (void *)5 && etcdc_completion_status(done) == ETCDC_OK);
  const etcdc_watch_response *seen = etcdc_completion_watch_response(done);
  CHECK(seen && etcdc_watch_response_len(seen) == 1);
  etcdc_completion_free(done);
  OK(etcdc_cq_free(home));
  EXPECT(etcdc_watch_next(watch, 5000, &resp), ETCDC_ERR_CLOSED);
  etcdc_watch *late = NULL;
  EXPECT(etcdc_watch_start(c, S("driven/w"), wo, NULL, &late), ETCDC_ERR_CLOSED);
  CHECK(late == NULL);
  OK(etcdc_watch_free(watch));
  /* NULL: back on etcdc's runtime. */
  OK(etcdc_watch_options_set_queue(wo, NULL));
  OK(etcdc_watch_start(c, S("driven/w"), wo, NULL, &watch));
  OK(etcdc_put(c, S("driven/w"), S("2"), NULL, NULL));
  OK(etcdc_watch_next(watch, 10000, &resp));
  etcdc_watch_response_free(resp);
  OK(etcdc_watch_free(watch));
  etcdc_watch_options_free(wo);

  /* Freed with a call in flight: the call goes with it, nothing hangs. */
  OK(etcdc_put_async(c, S("driven/k"), S("w"), NULL, cq, NULL, NULL));
  OK(etcdc_cq_free(cq));
}

/* Polls `fd` for `ms` and takes what a wake-up brings; the number of completions taken, or
 * -1 when the descriptor stayed quiet. */
static int wake_once(int fd, etcdc_cq *cq, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  if (poll(&p, 1, ms) != 1) return -1;
  int n = 0;
  etcdc_completion *done = NULL;
  while (etcdc_cq_next(cq, 0, &done) == ETCDC_OK) {
    etcdc_completion_free(done);
    n++;
  }
  return n;
}

/* A driven queue's descriptor in a poll loop: readable when a drive has work, quiet when it
 * has none, and a deadline arrives through it with nothing else happening. */
static void driven_fd(etcdc_client *c) {
  etcdc_cq *cq = NULL;
  OK(etcdc_cq_new_driven(&cq));
  int fd = -1, again = -1;
  EXPECT(etcdc_cq_fd(cq, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  OK(etcdc_cq_fd(cq, &fd));
  OK(etcdc_cq_fd(cq, &again));
  CHECK(fd >= 0 && again == fd);
  /* The first look drives (nothing to take), then nothing is in flight: quiet. */
  CHECK(wake_once(fd, cq, 1000) == 0);
  CHECK(wake_once(fd, cq, 300) == -1);

  /* A call started from this thread makes it readable: the call waits for a drive. */
  OK(etcdc_put_async(c, S("fd/k"), S("v"), NULL, cq, (void *)1, NULL));
  struct pollfd p = {fd, POLLIN, 0};
  CHECK(poll(&p, 1, 0) == 1);
  etcdc_completion *done = NULL;
  OK(next_polled(cq, 10000, &done));
  CHECK(etcdc_completion_tag(done) == (void *)1 && etcdc_completion_status(done) == ETCDC_OK);
  etcdc_completion_free(done);
  /* Done: at most the timer's spare expiry (its backstop, a second after the call), then
   * quiet. */
  int woke = 0;
  while (woke < 3 && wake_once(fd, cq, 1500) == 0) woke++;
  CHECK(woke < 2);

  /* A member named, not numbered: its name is resolved on another thread, whose answer
   * wakes the loop at once (not at the timer's backstop). */
  const char *port_at = strrchr(endpoints_from_env(), ':');
  CHECK(port_at != NULL);
  char named[64];
  snprintf(named, sizeof named, "http://localhost:%d", port_at ? atoi(port_at + 1) : 0);
  etcdc_client *by_name = NULL;
  OK(etcdc_client_connect(named, NULL, &by_name));
  long start = now_ms();
  OK(etcdc_get_async(by_name, S("fd/k"), NULL, cq, (void *)3, NULL));
  OK(next_polled(cq, 5000, &done));
  long took = now_ms() - start;
  CHECK(etcdc_completion_tag(done) == (void *)3 && etcdc_completion_status(done) == ETCDC_OK);
  CHECK(took < 800);
  etcdc_completion_free(done);
  OK(etcdc_client_free(by_name));

  /* A member that accepts connections and never answers: the call ends at its deadline,
   * which only the queue's timer can tell the loop. */
  int port = -1;
  int l = loopback_listener(&port);
  CHECK(l >= 0);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
  etcdc_client *mute = NULL;
  OK(etcdc_client_connect(url, NULL, &mute));
  etcdc_get_options *quick = etcdc_get_options_new();
  OK(etcdc_get_options_set_timeout_ms(quick, 300));
  start = now_ms();
  OK(etcdc_get_async(mute, S("k"), quick, cq, (void *)2, NULL));
  OK(next_polled(cq, 5000, &done));
  took = now_ms() - start;
  CHECK(etcdc_completion_tag(done) == (void *)2 && etcdc_completion_status(done) == ETCDC_ERR_TIMEOUT);
  /* On time: the queue's timer is set for the deadline itself (not its backstop). */
  CHECK(took >= 300 && took < 800);
  etcdc_completion_free(done);

  /* A call that waits long wakes the loop at most once a second (the backstop). */
  OK(etcdc_get_options_set_timeout_ms(quick, 20000));
  etcdc_op *slow = NULL;
  OK(etcdc_get_async(mute, S("k"), quick, cq, (void *)4, &slow));
  etcdc_get_options_free(quick);
  woke = 0;
  for (long until = now_ms() + 2500; now_ms() < until;) {
    if (wake_once(fd, cq, 100) >= 0) woke++;
  }
  CHECK(woke <= 8);
  OK(etcdc_op_cancel(slow));
  OK(next_polled(cq, 5000, &done));
  CHECK(etcdc_completion_tag(done) == (void *)4 && etcdc_completion_status(done) == ETCDC_ERR_CANCELED);
  etcdc_completion_free(done);
  OK(etcdc_op_free(slow));
  OK(etcdc_client_free(mute));
  close(l);
  OK(etcdc_cq_free(cq));
}

/* A watch on a driven queue whose member goes away and comes back (an embedded node served
 * on loopback, stopped and started again on its data dir): the watch resumes on the queue's
 * thread, every put seen once, in order. */
static void driven_watch_resumes(void) {
  char dir[] = "/tmp/etcdc-c-resume-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  int port = -1;
  int l = loopback_listener(&port);
  CHECK(l >= 0);
  close(l);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
  etcdc_node_options *no = etcdc_node_options_new();
  OK(etcdc_node_options_set_data_dir(no, dir));
  OK(etcdc_node_options_set_listen_client_urls(no, url));
  OK(etcdc_node_options_set_timing_ms(no, 50, 300));
  etcdc_node *node = NULL;
  OK(etcdc_node_start(no, &node));
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(url, NULL, &c));
  etcdc_cq *cq = NULL;
  OK(etcdc_cq_new_driven(&cq));
  etcdc_watch_options *wo = etcdc_watch_options_new();
  OK(etcdc_watch_options_set_prefix(wo));
  OK(etcdc_watch_options_set_queue(wo, cq));
  etcdc_watch *w = NULL;
  OK(etcdc_watch_start(c, S("resume/"), wo, NULL, &w));
  etcdc_watch_options_free(wo);
  enum { N = 20 };
  int seen[N] = {0}, events = 0;
  int64_t last = 0;
  char key[32];
  for (int round = 0; round < 2; round++) {
    for (int i = round * N / 2; i < (round + 1) * N / 2; i++) {
      snprintf(key, sizeof key, "resume/%02d", i);
      /* Right after a restart the member may still be electing itself: try again. */
      etcdc_status s = ETCDC_ERR_UNAVAILABLE;
      for (int t = 0; t < 100 && (s = etcdc_put(c, S(key), S("v"), NULL, NULL)) != ETCDC_OK; t++) sleep_ms(50);
      OK(s);
    }
    /* Driven here only: until then the queue has not read a byte of the events. */
    long until = now_ms() + 15000;
    while (events < (round + 1) * N / 2 && now_ms() < until) {
      OK(etcdc_watch_next_async(w, cq, (void *)9, NULL));
      etcdc_completion *done = NULL;
      if (etcdc_cq_next(cq, 15000, &done) != ETCDC_OK) break;
      const etcdc_watch_response *r = etcdc_completion_watch_response(done);
      CHECK(r != NULL);
      for (size_t i = 0; r && i < etcdc_watch_response_len(r); i++, events++) {
        const etcdc_kv *kv = etcdc_event_kv(etcdc_watch_response_event(r, i));
        size_t n = 0;
        const uint8_t *k = etcdc_kv_key(kv, &n);
        int at = n == 9 ? (k[7] - '0') * 10 + (k[8] - '0') : -1;
        CHECK(at >= 0 && at < N && etcdc_kv_mod_revision(kv) > last);
        if (at >= 0 && at < N) seen[at]++;
        last = etcdc_kv_mod_revision(kv);
      }
      etcdc_completion_free(done);
    }
    if (round == 0) {
      /* The member goes away under the watch and comes back on the same dir and port. */
      OK(etcdc_node_stop(node));
      OK(etcdc_node_start(no, &node));
    }
  }
  CHECK(events == N);
  for (int i = 0; i < N; i++) CHECK(seen[i] == 1);
  OK(etcdc_watch_free(w));
  OK(etcdc_cq_free(cq));
  OK(etcdc_client_free(c));
  OK(etcdc_node_stop(node));
  etcdc_node_options_free(no);
  char cmd[sizeof dir + 16];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

/* The suite against the remote client through one queue (`puts` in the long run). */
static void remote_suite(etcdc_client *c, etcdc_cq *cq, int puts) {
  every_call(c, cq);
  streams_and_recipes(c, cq);
  long_run(c, cq, puts, puts >= 20000);
  nobody_answers(cq);
}

int main(void) {
  etcdc_cq *cq = NULL;
  EXPECT(etcdc_cq_new(NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  OK(etcdc_cq_new(NULL, &cq));
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &c));
  callback_queue(c);
  remote_suite(c, cq, 20000);

  /* One queue serves clients of both backends. */
  on_embedded_node(on_node, cq);
  OK(etcdc_cq_free(cq));

  /* The same through a driven queue, waited on inside etcdc_cq_next. */
  driven_only(c);
  driven_inside = 1;
  OK(etcdc_cq_new_driven(&cq));
  remote_suite(c, cq, 20000);
  on_embedded_node(on_node, cq);
  OK(etcdc_cq_free(cq));

  /* And as an epoll loop drives one: every completion through its fd. */
  driven_fd(c);
  driven_watch_resumes();
  via_fd = 1;
  OK(etcdc_cq_new_driven(&cq));
  remote_suite(c, cq, 5000);
  OK(etcdc_cq_free(cq));
  OK(etcdc_client_free(c));
  return check_report("test_async");
}
