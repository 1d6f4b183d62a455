/* The C API end to end against a real etcd: keys, transactions, watches (callback and pull),
 * leases and the keeper, members and status. */
#include <poll.h>
#include <pthread.h>
#include <sys/wait.h>
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

static void state_init(shared_state *s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  s->in_order = 1;
}

/* Waits until *field >= want, at most 10 s. */
static int wait_for(shared_state *s, int *field, int want) {
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

static void on_watch(void *user_data, const etcdc_watch_response *r) {
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

static void on_drop(void *user_data) {
  shared_state *s = (shared_state *)user_data;
  pthread_mutex_lock(&s->mu);
  s->drops++;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void on_lease(void *user_data, const etcdc_lease_event *e) {
  shared_state *s = (shared_state *)user_data;
  pthread_mutex_lock(&s->mu);
  if (etcdc_lease_event_state(e) == ETCDC_LEASE_ALIVE) s->lease_alive++;
  if (etcdc_lease_event_state(e) == ETCDC_LEASE_LOST) s->lease_lost++;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

static int value_is(const etcdc_kv *kv, const char *want) {
  size_t n = 0;
  const uint8_t *v = etcdc_kv_value(kv, &n);
  return v && n == strlen(want) && memcmp(v, want, n) == 0;
}

static void keys_and_values(etcdc_client *c) {
  etcdc_put_result *p = NULL;
  OK(etcdc_put(c, S("svc/login/1"), S("10.0.0.1:8000"), NULL, &p));
  int64_t rev = etcdc_header_revision(etcdc_put_result_header(p));
  CHECK(rev > 0);
  CHECK(etcdc_header_cluster_id(etcdc_put_result_header(p)) != 0);
  CHECK(etcdc_put_result_prev_kv(p) == NULL);
  etcdc_put_result_free(p);

  etcdc_put_options *po = etcdc_put_options_new();
  OK(etcdc_put_options_set_prev_kv(po, true));
  OK(etcdc_put(c, S("svc/login/1"), S("10.0.0.1:8001"), po, &p));
  CHECK(value_is(etcdc_put_result_prev_kv(p), "10.0.0.1:8000"));
  etcdc_put_result_free(p);
  etcdc_put_options_free(po);
  OK(etcdc_put(c, S("svc/login/2"), S("10.0.0.2:8000"), NULL, NULL));
  OK(etcdc_put(c, S("svc/msg/1"), S(""), NULL, NULL));

  etcdc_get_result *g = NULL;
  OK(etcdc_get(c, S("svc/login/1"), NULL, &g));
  CHECK(etcdc_get_result_len(g) == 1);
  const etcdc_kv *kv = etcdc_get_result_kv(g, 0);
  CHECK(value_is(kv, "10.0.0.1:8001"));
  CHECK(etcdc_kv_version(kv) == 2);
  CHECK(etcdc_kv_create_revision(kv) == rev);
  CHECK(etcdc_kv_mod_revision(kv) == rev + 1);
  CHECK(etcdc_get_result_kv(g, 1) == NULL);
  etcdc_get_result_free(g);

  etcdc_get_options *go = etcdc_get_options_new();
  OK(etcdc_get_options_set_prefix(go));
  OK(etcdc_get_options_set_sort(go, ETCDC_SORT_BY_KEY, ETCDC_SORT_DESCEND));
  OK(etcdc_get_options_set_limit(go, 2));
  OK(etcdc_get(c, S("svc/"), go, &g));
  CHECK(etcdc_get_result_len(g) == 2);
  CHECK(etcdc_get_result_count(g) == 3);
  CHECK(etcdc_get_result_more(g));
  size_t n = 0;
  const uint8_t *k = etcdc_kv_key(etcdc_get_result_kv(g, 0), &n);
  CHECK(n == strlen("svc/msg/1") && memcmp(k, "svc/msg/1", n) == 0);
  CHECK(value_is(etcdc_get_result_kv(g, 0), ""));
  etcdc_get_result_free(g);
  etcdc_get_options_free(go);

  /* Everything: an empty key with the prefix option. */
  go = etcdc_get_options_new();
  OK(etcdc_get_options_set_prefix(go));
  OK(etcdc_get_options_set_count_only(go, true));
  OK(etcdc_get(c, NULL, 0, go, &g));
  CHECK(etcdc_get_result_count(g) >= 3);
  CHECK(etcdc_get_result_len(g) == 0);
  etcdc_get_result_free(g);
  etcdc_get_options_free(go);

  etcdc_delete_options *dopt = etcdc_delete_options_new();
  OK(etcdc_delete_options_set_prefix(dopt));
  OK(etcdc_delete_options_set_prev_kv(dopt, true));
  etcdc_delete_result *d = NULL;
  OK(etcdc_delete(c, S("svc/login/"), dopt, &d));
  CHECK(etcdc_delete_result_deleted(d) == 2);
  CHECK(etcdc_delete_result_prev_len(d) == 2);
  CHECK(value_is(etcdc_delete_result_prev_kv(d, 1), "10.0.0.2:8000"));
  etcdc_delete_result_free(d);
  etcdc_delete_options_free(dopt);
}

static void transactions(etcdc_client *c) {
  /* Create-if-absent, then compare-and-swap on the value. */
  OK(etcdc_cas(c, S("leader"), NULL, 0, S("a"), NULL, NULL));
  EXPECT(etcdc_cas(c, S("leader"), NULL, 0, S("b"), NULL, NULL), ETCDC_ERR_COMPARE_FAILED);
  EXPECT(etcdc_cas(c, S("leader"), S("x"), S("b"), NULL, NULL), ETCDC_ERR_COMPARE_FAILED);
  etcdc_put_result *p = NULL;
  OK(etcdc_cas(c, S("leader"), S("a"), S("b"), NULL, &p));
  CHECK(etcdc_header_revision(etcdc_put_result_header(p)) > 0);
  etcdc_put_result_free(p);

  etcdc_txn *inner = etcdc_txn_new();
  OK(etcdc_txn_put(inner, ETCDC_TXN_THEN, S("txn/inner"), S("1"), NULL));
  etcdc_txn *t = etcdc_txn_new();
  OK(etcdc_txn_compare_value(t, S("leader"), ETCDC_CMP_EQUAL, S("b")));
  OK(etcdc_txn_compare_version(t, S("leader"), ETCDC_CMP_GREATER, 1));
  OK(etcdc_txn_compare_create_revision(t, S("txn/inner"), ETCDC_CMP_EQUAL, 0));
  OK(etcdc_txn_compare_mod_revision(t, S("leader"), ETCDC_CMP_GREATER, 0));
  OK(etcdc_txn_compare_lease(t, S("leader"), ETCDC_CMP_EQUAL, 0));
  OK(etcdc_txn_put(t, ETCDC_TXN_THEN, S("txn/outer"), S("2"), NULL));
  OK(etcdc_txn_get(t, ETCDC_TXN_THEN, S("leader"), NULL));
  OK(etcdc_txn_txn(t, ETCDC_TXN_THEN, inner));
  OK(etcdc_txn_delete(t, ETCDC_TXN_ELSE, S("leader"), NULL));
  etcdc_txn_result *r = NULL;
  OK(etcdc_txn_commit(c, t, &r));
  CHECK(etcdc_txn_result_succeeded(r));
  CHECK(etcdc_txn_result_len(r) == 3);
  etcdc_op_type ty;
  OK(etcdc_txn_result_op_type(r, 1, &ty));
  CHECK(ty == ETCDC_OP_GET);
  CHECK(value_is(etcdc_get_result_kv(etcdc_txn_result_get(r, 1), 0), "b"));
  CHECK(etcdc_txn_result_put(r, 1) == NULL);
  CHECK(etcdc_txn_result_succeeded(etcdc_txn_result_txn(r, 2)));
  EXPECT(etcdc_txn_result_op_type(r, 3, &ty), ETCDC_ERR_INVALID_ARGUMENT);
  etcdc_txn_result_free(r);
  /* The same txn again: txn/inner now exists, so the else branch runs. */
  OK(etcdc_txn_commit(c, t, &r));
  CHECK(!etcdc_txn_result_succeeded(r));
  OK(etcdc_txn_result_op_type(r, 0, &ty));
  CHECK(ty == ETCDC_OP_DELETE);
  CHECK(etcdc_delete_result_deleted(etcdc_txn_result_delete(r, 0)) == 1);
  etcdc_txn_result_free(r);
  etcdc_txn_free(t);
}

static void watch_with_callback(etcdc_client *c) {
  shared_state s;
  state_init(&s);
  etcdc_watch_callback cb;
  cb.call = on_watch;
  cb.drop = on_drop;
  cb.user_data = &s;
  etcdc_watch_options *o = etcdc_watch_options_new();
  OK(etcdc_watch_options_set_prefix(o));
  OK(etcdc_watch_options_set_prev_kv(o, true));
  etcdc_watch *w = NULL;
  OK(etcdc_watch_start(c, S("w/"), o, &cb, &w));
  for (int i = 0; i < 50; i++) {
    char key[16];
    snprintf(key, sizeof key, "w/%d", i % 7);
    OK(etcdc_put(c, S(key), S("v"), NULL, NULL));
  }
  CHECK(wait_for(&s, &s.events, 50));
  CHECK(s.in_order);
  OK(etcdc_watch_request_progress(w));
  OK(etcdc_watch_free(w));
  CHECK(s.drops == 1); /* free waited for drop */
  int calls = s.calls;
  OK(etcdc_put(c, S("w/after"), S("v"), NULL, NULL));
  sleep_ms(200);
  CHECK(s.calls == calls); /* nothing after free */

  /* Freed from inside its own callback: no deadlock, drop exactly once after the call. */
  shared_state s2;
  state_init(&s2);
  cb.user_data = &s2;
  etcdc_watch *w2 = NULL;
  OK(etcdc_watch_start(c, S("w/"), o, &cb, &w2));
  pthread_mutex_lock(&s2.mu);
  s2.self = w2;
  pthread_mutex_unlock(&s2.mu);
  OK(etcdc_put(c, S("w/x"), S("1"), NULL, NULL));
  CHECK(wait_for(&s2, &s2.drops, 1));
  OK(etcdc_put(c, S("w/x"), S("2"), NULL, NULL));
  sleep_ms(200);
  CHECK(s2.calls == 1);
  CHECK(s2.drops == 1);
  EXPECT(etcdc_watch_free(w2), ETCDC_ERR_INVALID_ARGUMENT);
  etcdc_watch_options_free(o);
}

static void watch_pull_with_poll(etcdc_client *c) {
  etcdc_watch *w = NULL;
  OK(etcdc_watch_start(c, S("pull"), NULL, NULL, &w));
  int fd = -1;
  OK(etcdc_watch_fd(w, &fd));
  CHECK(fd >= 0);
  etcdc_watch_response *r = NULL;
  EXPECT(etcdc_watch_next(w, 0, &r), ETCDC_ERR_TIMEOUT);
  struct pollfd pfd;
  pfd.fd = fd;
  pfd.events = POLLIN;
  pfd.revents = 0;
  CHECK(poll(&pfd, 1, 0) == 0);
  OK(etcdc_put(c, S("pull"), S("1"), NULL, NULL));
  OK(etcdc_put(c, S("pull"), S("2"), NULL, NULL));
  CHECK(poll(&pfd, 1, 5000) == 1);
  int got = 0;
  while (got < 2 && etcdc_watch_next(w, 5000, &r) == ETCDC_OK) {
    CHECK(etcdc_watch_response_kind(r) == ETCDC_WATCH_EVENTS);
    for (size_t i = 0; i < etcdc_watch_response_len(r); i++) {
      const etcdc_event *e = etcdc_watch_response_event(r, i);
      CHECK(etcdc_event_type(e) == ETCDC_EVENT_PUT);
      CHECK(value_is(etcdc_event_kv(e), got == 0 ? "1" : "2"));
      got++;
    }
    etcdc_watch_response *kept = etcdc_watch_response_clone(r);
    etcdc_watch_response_free(r);
    CHECK(etcdc_watch_response_len(kept) >= 1);
    etcdc_watch_response_free(kept);
  }
  CHECK(got == 2);
  pfd.revents = 0;
  CHECK(poll(&pfd, 1, 0) == 0); /* drained: no longer readable */
  OK(etcdc_watch_free(w));
}

static void leases(etcdc_client *c) {
  int64_t id = 0, ttl = 0;
  OK(etcdc_lease_grant(c, 2, 0, 0, &id, &ttl));
  CHECK(id > 0 && ttl == 2);
  etcdc_put_options *po = etcdc_put_options_new();
  OK(etcdc_put_options_set_lease(po, id));
  OK(etcdc_put(c, S("svc/msg/10.0.0.9"), S("up"), po, NULL));
  etcdc_put_options_free(po);

  shared_state s;
  state_init(&s);
  etcdc_lease_callback cb;
  cb.call = on_lease;
  cb.drop = on_drop;
  cb.user_data = &s;
  etcdc_lease_keeper *k = NULL;
  OK(etcdc_lease_keeper_start(c, &cb, &k));
  OK(etcdc_lease_keeper_add(k, id));
  OK(etcdc_lease_keeper_add(k, id)); /* no-op */
  CHECK(wait_for(&s, &s.lease_alive, 1));
  sleep_ms(4000); /* twice the TTL */
  etcdc_lease_info *info = NULL;
  OK(etcdc_lease_time_to_live(c, id, true, 0, &info));
  CHECK(etcdc_lease_info_ttl(info) > 0);
  CHECK(etcdc_lease_info_granted_ttl(info) == 2);
  CHECK(etcdc_lease_info_keys_len(info) == 1);
  size_t n = 0;
  const uint8_t *key = etcdc_lease_info_key(info, 0, &n);
  CHECK(n == strlen("svc/msg/10.0.0.9") && memcmp(key, "svc/msg/10.0.0.9", n) == 0);
  etcdc_lease_info_free(info);

  etcdc_lease_list *list = NULL;
  OK(etcdc_leases(c, 0, &list));
  int found = 0;
  for (size_t i = 0; i < etcdc_lease_list_len(list); i++) found |= etcdc_lease_list_id(list, i) == id;
  CHECK(found);
  etcdc_lease_list_free(list);

  OK(etcdc_lease_revoke(c, id, 0));
  CHECK(wait_for(&s, &s.lease_lost, 1));
  OK(etcdc_lease_keeper_free(k));
  CHECK(s.drops == 1);

  /* Pull form: a lease that does not exist is reported lost. */
  OK(etcdc_lease_keeper_start(c, NULL, &k));
  OK(etcdc_lease_keeper_add(k, 0x5151));
  etcdc_lease_event *e = NULL;
  OK(etcdc_lease_keeper_next(k, 5000, &e));
  CHECK(etcdc_lease_event_id(e) == 0x5151);
  CHECK(etcdc_lease_event_state(e) == ETCDC_LEASE_LOST);
  CHECK(strlen(etcdc_lease_event_reason(e)) > 0);
  etcdc_lease_event_free(e);
  /* A lost lease leaves the keeper: granted anew under the same id, it can be kept again. */
  int64_t again = 0;
  OK(etcdc_lease_grant(c, 5, 0x5151, 0, &again, NULL));
  CHECK(again == 0x5151);
  OK(etcdc_lease_keeper_add(k, 0x5151));
  OK(etcdc_lease_keeper_next(k, 5000, &e));
  CHECK(etcdc_lease_event_state(e) == ETCDC_LEASE_ALIVE);
  CHECK(etcdc_lease_event_ttl(e) == 5);
  etcdc_lease_event_free(e);
  OK(etcdc_lease_keeper_free(k));
}

static void cluster(etcdc_client *c) {
  etcdc_member_list *m = NULL;
  OK(etcdc_cluster_members(c, 0, &m));
  CHECK(etcdc_member_list_len(m) == 1);
  CHECK(etcdc_member_list_id(m, 0) != 0);
  CHECK(strcmp(etcdc_member_list_name(m, 0), "single") == 0);
  CHECK(etcdc_member_list_client_urls_len(m, 0) == 1);
  CHECK(strcmp(etcdc_member_list_client_url(m, 0, 0), endpoints_from_env()) == 0);
  CHECK(etcdc_member_list_name(m, 1) == NULL);
  etcdc_member_list_free(m);

  etcdc_endpoint_status *st = NULL;
  OK(etcdc_endpoint_status_get(c, endpoints_from_env(), 0, &st));
  CHECK(strncmp(etcdc_endpoint_status_version(st), "3.", 2) == 0);
  CHECK(etcdc_endpoint_status_leader(st) == etcdc_header_member_id(etcdc_endpoint_status_header(st)));
  CHECK(etcdc_endpoint_status_raft_index(st) > 0);
  CHECK(etcdc_endpoint_status_db_size(st) > 0);
  etcdc_endpoint_status_free(st);
  EXPECT(etcdc_endpoint_status_get(c, "http://127.0.0.1:9", 0, &st), ETCDC_ERR_INVALID_ARGUMENT);
}

/* A child process cannot use what its parent started: it is told so until it re-initialises. */
static void after_fork(void) {
  pid_t pid = fork();
  if (pid == 0) {
    etcdc_client *c = NULL;
    int ok = etcdc_client_connect(endpoints_from_env(), NULL, &c) == ETCDC_ERR_FORKED;
    ok = ok && strstr(etcdc_last_error(), "etcdc_reinit_after_fork") != NULL;
    ok = ok && etcdc_reinit_after_fork() == ETCDC_OK;
    ok = ok && etcdc_client_connect(endpoints_from_env(), NULL, &c) == ETCDC_OK;
    ok = ok && etcdc_put(c, S("forked"), S("child"), NULL, NULL) == ETCDC_OK;
    ok = ok && etcdc_client_free(c) == ETCDC_OK;
    if (!ok) fprintf(stderr, "child: %s\n", etcdc_last_error());
    _exit(ok ? 0 : 1);
  }
  CHECK(pid > 0);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void) {
  printf("etcdc %s\n", etcdc_version());
  CHECK(strcmp(etcdc_version(), ETCDC_VERSION_STRING) == 0);
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &c));
  keys_and_values(c);
  transactions(c);
  watch_with_callback(c);
  watch_pull_with_poll(c);
  leases(c);
  cluster(c);
  after_fork();
  etcdc_get_result *g = NULL;
  etcdc_get_options *serializable = etcdc_get_options_new();
  OK(etcdc_get_options_set_serializable(serializable, true));
  OK(etcdc_get(c, S("forked"), serializable, &g));
  CHECK(etcdc_get_result_len(g) == 1 && value_is(etcdc_get_result_kv(g, 0), "child"));
  etcdc_get_result_free(g);
  etcdc_get_options_free(serializable);
  OK(etcdc_client_free(c));
  return check_report("test_api");
}
