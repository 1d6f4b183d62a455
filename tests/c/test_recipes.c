/* The recipes through the C API, on real etcd and on an embedded node in this process:
 * registration (pull form) and discovery (fd + pull, picks), a session's mutex and
 * election with an observer, an ordered queue, and bad input with clear statuses. */
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include "common.h"

static int bytes_are(const uint8_t *p, size_t n, const char *want) {
  return p && n == strlen(want) && memcmp(p, want, n) == 0;
}

static int leader_is(const etcdc_leader *l, const char *want) {
  size_t n = 0;
  const uint8_t *v = etcdc_leader_value(l, &n);
  return bytes_are(v, n, want);
}

static int item_is(const etcdc_queue_item *it, const char *want) {
  size_t n = 0;
  const uint8_t *v = etcdc_queue_item_value(it, &n);
  return bytes_are(v, n, want);
}

/* The next discovery change, which must be `want` for instance `id`. */
static void expect_change(etcdc_discovery *d, etcdc_discovery_change want, const char *id) {
  etcdc_discovery_event *e = NULL;
  OK(etcdc_discovery_next(d, 10000, &e));
  if (!e) return;
  CHECK(etcdc_discovery_event_change(e) == want);
  CHECK(strcmp(etcdc_instance_id(etcdc_discovery_event_instance(e)), id) == 0);
  etcdc_discovery_event_free(e);
}

static void registration_and_discovery(etcdc_client *c) {
  etcdc_registration_options *o = etcdc_registration_options_new();
  OK(etcdc_registration_options_set_ttl(o, 5));
  OK(etcdc_registration_options_set_metadata(o, "{\"weight\":3}"));
  EXPECT(etcdc_registration_options_set_metadata(o, "{nope"), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_registration_options_set_ttl(o, 0), ETCDC_ERR_INVALID_ARGUMENT);

  etcdc_registration *r1 = NULL, *r2 = NULL, *dup = NULL;
  OK(etcdc_register(c, "/login_servers", "0001-0001", "127.0.0.1:8001", o, NULL, &r1));
  etcdc_registration_event *ev = NULL;
  OK(etcdc_registration_next(r1, 5000, &ev));
  CHECK(etcdc_registration_event_state(ev) == ETCDC_REGISTERED);
  CHECK(etcdc_registration_event_lease(ev) == etcdc_registration_lease(r1));
  etcdc_registration_event_free(ev);
  /* The value is Go naming's, readable by anyone. */
  etcdc_get_result *g = NULL;
  OK(etcdc_get(c, S("/login_servers/0001-0001"), NULL, &g));
  CHECK(etcdc_get_result_count(g) == 1);
  if (etcdc_get_result_count(g) == 1)
    CHECK(value_is(etcdc_get_result_kv(g, 0), "{\"Op\":0,\"Addr\":\"127.0.0.1:8001\",\"Metadata\":{\"weight\":3}}"));
  etcdc_get_result_free(g);
  /* A live duplicate is refused; bad ids and dirs are refused. */
  EXPECT(etcdc_register(c, "/login_servers", "0001-0001", "127.0.0.1:9", NULL, NULL, &dup), ETCDC_ERR_FAILED_PRECONDITION);
  EXPECT_MESSAGE("another live instance");
  CHECK(dup == NULL);
  EXPECT(etcdc_register(c, "/login_servers", "a/b", "127.0.0.1:9", NULL, NULL, &dup), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_register(c, "", "x", "127.0.0.1:9", NULL, NULL, &dup), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_register(c, NULL, "x", "127.0.0.1:9", NULL, NULL, &dup), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_register(c, "/login_servers", "x", "127.0.0.1:9", NULL, NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  etcdc_registration_callback no_call = {NULL, NULL, NULL};
  EXPECT(etcdc_register(c, "/login_servers", "x", "127.0.0.1:9", NULL, &no_call, &dup), ETCDC_ERR_INVALID_ARGUMENT);

  etcdc_discovery *d = NULL;
  EXPECT(etcdc_discover(c, "", NULL, &d), ETCDC_ERR_INVALID_ARGUMENT);
  OK(etcdc_discover(c, "/login_servers", NULL, &d));
  int fd = -1;
  OK(etcdc_discovery_fd(d, &fd));
  struct pollfd pfd = {fd, POLLIN, 0};
  CHECK(poll(&pfd, 1, 5000) == 1);
  expect_change(d, ETCDC_INSTANCE_ADDED, "0001-0001");
  OK(etcdc_register(c, "/login_servers", "0001-0002", "127.0.0.1:8002", NULL, NULL, &r2));
  expect_change(d, ETCDC_INSTANCE_ADDED, "0001-0002");

  /* Round-robin alternates; least-in-flight avoids the busy one; weighted favours weight 3. */
  etcdc_instance *a = NULL, *b = NULL;
  OK(etcdc_discovery_pick(d, ETCDC_PICK_ROUND_ROBIN, &a));
  OK(etcdc_discovery_pick(d, ETCDC_PICK_ROUND_ROBIN, &b));
  CHECK(a && b && strcmp(etcdc_instance_id(a), etcdc_instance_id(b)) != 0);
  OK(etcdc_discovery_begin(d, etcdc_instance_id(a)));
  for (int i = 0; i < 4; i++) {
    etcdc_instance *p = NULL;
    OK(etcdc_discovery_pick(d, ETCDC_PICK_LEAST_IN_FLIGHT, &p));
    CHECK(p && strcmp(etcdc_instance_id(p), etcdc_instance_id(b)) == 0);
    etcdc_instance_free(p);
  }
  OK(etcdc_discovery_end(d, etcdc_instance_id(a)));
  EXPECT(etcdc_discovery_begin(d, "nope"), ETCDC_ERR_NOT_FOUND);
  etcdc_instance_free(a);
  etcdc_instance_free(b);
  int heavy = 0;
  for (int i = 0; i < 400; i++) {
    etcdc_instance *p = NULL;
    OK(etcdc_discovery_pick(d, ETCDC_PICK_WEIGHTED, &p));
    heavy += p && etcdc_instance_weight(p) == 3;
    etcdc_instance_free(p);
  }
  CHECK(heavy > 240 && heavy < 360); /* about 3 in 4 */
  etcdc_instance_list *l = NULL;
  OK(etcdc_discovery_snapshot(d, &l));
  CHECK(etcdc_instance_list_len(l) == 2);
  CHECK(strcmp(etcdc_instance_addr(etcdc_instance_list_get(l, 0)), "127.0.0.1:8001") == 0);
  CHECK(etcdc_instance_list_get(l, 2) == NULL);
  etcdc_instance_list_free(l);

  /* Metadata in place, then an instance leaving. */
  OK(etcdc_registration_set_metadata(r1, "{\"weight\":1}", 0));
  expect_change(d, ETCDC_INSTANCE_UPDATED, "0001-0001");
  EXPECT(etcdc_registration_set_metadata(r1, "{", 0), ETCDC_ERR_INVALID_ARGUMENT);
  OK(etcdc_registration_free(r2));
  expect_change(d, ETCDC_INSTANCE_REMOVED, "0001-0002");
  OK(etcdc_registration_free(r1));
  expect_change(d, ETCDC_INSTANCE_REMOVED, "0001-0001");
  etcdc_instance *none = NULL;
  EXPECT(etcdc_discovery_pick(d, ETCDC_PICK_RANDOM, &none), ETCDC_ERR_NOT_FOUND);
  OK(etcdc_discovery_free(d));
  OK(etcdc_registration_free(NULL));
  EXPECT(etcdc_registration_free(r1), ETCDC_ERR_INVALID_ARGUMENT);
  etcdc_registration_options_free(o);
}

static void mutex_and_election(etcdc_client *c) {
  etcdc_session *s1 = NULL, *s2 = NULL;
  OK(etcdc_session_start(c, 10, NULL, &s1));
  OK(etcdc_session_start(c, 10, NULL, &s2));
  CHECK(etcdc_session_lease(s1) > 0);
  etcdc_mutex *m1 = NULL, *m2 = NULL, *bad = NULL;
  EXPECT(etcdc_mutex_new(s1, S(""), &bad), ETCDC_ERR_INVALID_ARGUMENT);
  OK(etcdc_mutex_new(s1, S("/locks/job"), &m1));
  OK(etcdc_mutex_new(s2, S("/locks/job"), &m2));
  OK(etcdc_mutex_lock(m1, 0));
  char want[64];
  snprintf(want, sizeof want, "/locks/job/%llx", (unsigned long long)etcdc_session_lease(s1));
  size_t n = 0;
  const uint8_t *key = etcdc_mutex_key(m1, &n);
  CHECK(bytes_are(key, n, want));
  CHECK(etcdc_mutex_revision(m1) > 0);
  EXPECT(etcdc_mutex_try_lock(m2, 0), ETCDC_ERR_FAILED_PRECONDITION);
  EXPECT_MESSAGE("Locked by another session");
  EXPECT(etcdc_mutex_lock(m2, 200), ETCDC_ERR_TIMEOUT);
  OK(etcdc_mutex_unlock(m1, 0));
  OK(etcdc_mutex_try_lock(m2, 0));
  OK(etcdc_mutex_unlock(m2, 0));
  OK(etcdc_mutex_free(m1));
  OK(etcdc_mutex_free(m2));

  etcdc_observer *obs = NULL;
  OK(etcdc_election_observe(c, S("/elect/svc"), NULL, &obs));
  etcdc_leader *l = NULL;
  EXPECT(etcdc_election_leader(c, S("/elect/svc"), 0, &l), ETCDC_ERR_NOT_FOUND);
  EXPECT_MESSAGE("election: no leader");
  etcdc_election *e1 = NULL, *e2 = NULL;
  OK(etcdc_election_new(s1, S("/elect/svc"), &e1));
  OK(etcdc_election_new(s2, S("/elect/svc"), &e2));
  OK(etcdc_election_campaign(e1, S("node-a"), 0));
  EXPECT(etcdc_election_campaign(e2, S("node-b"), 200), ETCDC_ERR_TIMEOUT);
  OK(etcdc_observer_next(obs, 10000, &l));
  CHECK(leader_is(l, "node-a"));
  etcdc_leader_free(l);
  OK(etcdc_election_proclaim(e1, S("node-a:2"), 0));
  OK(etcdc_observer_next(obs, 10000, &l));
  CHECK(leader_is(l, "node-a:2"));
  etcdc_leader_free(l);
  OK(etcdc_election_leader(c, S("/elect/svc"), 0, &l));
  CHECK(leader_is(l, "node-a:2"));
  CHECK(etcdc_leader_revision(l) > 0);
  etcdc_leader_free(l);
  EXPECT(etcdc_election_proclaim(e2, S("x"), 0), ETCDC_ERR_FAILED_PRECONDITION);
  OK(etcdc_election_resign(e1, 0));
  EXPECT(etcdc_election_leader(c, S("/elect/svc"), 0, &l), ETCDC_ERR_NOT_FOUND);
  OK(etcdc_election_free(e1));
  OK(etcdc_election_free(e2));
  OK(etcdc_observer_free(obs));
  /* Ending a session revokes its lease: whatever it held goes. */
  OK(etcdc_session_free(s1));
  OK(etcdc_session_free(s2));
  EXPECT(etcdc_mutex_new(s1, S("/locks/job"), &bad), ETCDC_ERR_INVALID_ARGUMENT);
}

static void queue(etcdc_client *c) {
  etcdc_queue_item *it = NULL;
  EXPECT(etcdc_queue_dequeue(c, "/jobs", false, 0, &it), ETCDC_ERR_NOT_FOUND);
  EXPECT(etcdc_queue_dequeue(c, "/jobs", true, 200, &it), ETCDC_ERR_TIMEOUT);
  EXPECT(etcdc_queue_enqueue(c, "", S("x"), 0, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  const char *jobs[] = {"first", "second", "third"};
  size_t n = 0;
  for (int i = 0; i < 3; i++) {
    OK(etcdc_queue_enqueue(c, "/jobs", S(jobs[i]), 0, i == 0 ? &it : NULL));
  }
  const uint8_t *k = etcdc_queue_item_key(it, &n);
  CHECK(k && n == strlen("/jobs/") + 20 && memcmp(k, "/jobs/", 6) == 0);
  etcdc_queue_item_free(it);
  for (int i = 0; i < 3; i++) {
    it = NULL;
    OK(etcdc_queue_dequeue(c, "/jobs", true, 0, &it));
    CHECK(item_is(it, jobs[i]));
    etcdc_queue_item_free(it);
  }
  EXPECT(etcdc_queue_dequeue(c, "/jobs", false, 0, &it), ETCDC_ERR_NOT_FOUND);
}

static void all(etcdc_client *c, void *unused) {
  (void)unused;
  registration_and_discovery(c);
  mutex_and_election(c);
  queue(c);
}

int main(void) {
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &c));
  all(c, NULL);
  OK(etcdc_client_free(c));
  /* The same on an embedded node in this process. */
  on_embedded_node(all, NULL);
  return check_report("test_recipes");
}
