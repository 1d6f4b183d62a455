/* The path off cetcd: cetcd's example usage (set / get / lsdir / watch) ported call for call
 * to etcdc_v2.h, plus every other v2 call and its v2 error code, on real etcd and on an
 * embedded node in this process. */
#include <stdlib.h>
#include <unistd.h>

#include <etcdc_v2.h>

#include "common.h"

static int value_of(const etcdc_v2_response *r, const char *want) {
  size_t n = 0;
  const uint8_t *v = etcdc_v2_node_value(etcdc_v2_response_node(r), &n);
  return v && n == strlen(want) && memcmp(v, want, n) == 0;
}

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int sets, deletes, drops;
} watched;

static void on_change(void *user_data, const etcdc_v2_response *r) {
  watched *w = (watched *)user_data;
  pthread_mutex_lock(&w->mu);
  if (etcdc_v2_response_action(r) == ETCDC_V2_DELETE) w->deletes++;
  else w->sets++;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static void on_v2_drop(void *user_data) {
  watched *w = (watched *)user_data;
  pthread_mutex_lock(&w->mu);
  w->drops++;
  pthread_mutex_unlock(&w->mu);
}

static int wait_count(watched *w, int *field, int want) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&w->mu);
  while (*field < want && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0) {
  }
  int ok = *field >= want;
  pthread_mutex_unlock(&w->mu);
  return ok;
}

static void run(etcdc_client *c, void *unused) {
  (void)unused;
  etcdc_v2_response *r = NULL;
  /* cetcd's example: set, get, lsdir. */
  OK(etcdc_v2_set(c, "/radar/service", "hello", 0, &r));
  CHECK(etcdc_v2_response_action(r) == ETCDC_V2_SET && value_of(r, "hello"));
  CHECK(etcdc_v2_last_error_code() == 0);
  uint64_t created = etcdc_v2_node_modified_index(etcdc_v2_response_node(r));
  etcdc_v2_response_free(r);
  OK(etcdc_v2_get(c, "/radar/service", &r));
  CHECK(etcdc_v2_response_action(r) == ETCDC_V2_GET && value_of(r, "hello"));
  CHECK(etcdc_v2_node_modified_index(etcdc_v2_response_node(r)) == created);
  etcdc_v2_response_free(r);
  OK(etcdc_v2_set(c, "/radar/nodes/a", "1", 0, &r));
  etcdc_v2_response_free(r);
  OK(etcdc_v2_lsdir(c, "/radar", 1, 1, &r));
  const etcdc_v2_node *dir = etcdc_v2_response_node(r);
  CHECK(etcdc_v2_node_is_dir(dir) && etcdc_v2_node_count(dir) == 2);
  const etcdc_v2_node *sub = etcdc_v2_node_child(dir, 0);
  CHECK(strcmp(etcdc_v2_node_key(sub), "/radar/nodes") == 0 && etcdc_v2_node_is_dir(sub));
  CHECK(etcdc_v2_node_count(sub) == 1 && strcmp(etcdc_v2_node_key(etcdc_v2_node_child(sub, 0)), "/radar/nodes/a") == 0);
  CHECK(strcmp(etcdc_v2_node_key(etcdc_v2_node_child(dir, 1)), "/radar/service") == 0);
  CHECK(etcdc_v2_node_child(dir, 2) == NULL);
  etcdc_v2_response_free(r);

  /* v2's error codes beside the status; no output on a failure. */
  r = NULL;
  EXPECT(etcdc_v2_get(c, "/radar/missing", &r), ETCDC_ERR_NOT_FOUND);
  CHECK(etcdc_v2_last_error_code() == ETCDC_V2_KEY_NOT_FOUND);
  EXPECT(etcdc_v2_create(c, "/radar/service", "again", 0, &r), ETCDC_ERR_FAILED_PRECONDITION);
  CHECK(etcdc_v2_last_error_code() == ETCDC_V2_NODE_EXIST);
  EXPECT(etcdc_v2_update(c, "/radar/missing", "x", 0, false, &r), ETCDC_ERR_NOT_FOUND);
  CHECK(etcdc_v2_last_error_code() == ETCDC_V2_KEY_NOT_FOUND);
  EXPECT(etcdc_v2_cmp_and_swap(c, "/radar/service", "new", "wrong", 0, &r), ETCDC_ERR_COMPARE_FAILED);
  CHECK(etcdc_v2_last_error_code() == ETCDC_V2_TEST_FAILED);
  EXPECT_MESSAGE("Compare failed");
  EXPECT(etcdc_v2_rmdir(c, "/radar", false, &r), ETCDC_ERR_FAILED_PRECONDITION);
  CHECK(etcdc_v2_last_error_code() == ETCDC_V2_DIR_NOT_EMPTY);
  EXPECT(etcdc_v2_set(c, "no-slash", "x", 0, &r), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_v2_set(c, NULL, "x", 0, &r), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_v2_set(c, "/k", "x", 0, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  CHECK(r == NULL);

  /* Compare-and-swap and -delete, by value and by index. */
  OK(etcdc_v2_cmp_and_swap(c, "/radar/service", "v2", "hello", 0, &r));
  CHECK(etcdc_v2_response_action(r) == ETCDC_V2_CAS && value_of(r, "v2"));
  uint64_t index = etcdc_v2_node_modified_index(etcdc_v2_response_node(r));
  const etcdc_v2_node *prev = etcdc_v2_response_prev_node(r);
  size_t n = 0;
  const uint8_t *pv = etcdc_v2_node_value(prev, &n);
  CHECK(prev && n == 5 && memcmp(pv, "hello", 5) == 0);
  etcdc_v2_response_free(r);
  r = NULL;
  EXPECT(etcdc_v2_cmp_and_swap_by_index(c, "/radar/service", "v3", index - 1, 0, &r), ETCDC_ERR_COMPARE_FAILED);
  CHECK(r == NULL);
  OK(etcdc_v2_cmp_and_swap_by_index(c, "/radar/service", "v3", index, 0, &r));
  etcdc_v2_response_free(r);
  EXPECT(etcdc_v2_cmp_and_delete(c, "/radar/service", "v2", &r), ETCDC_ERR_COMPARE_FAILED);
  OK(etcdc_v2_cmp_and_delete(c, "/radar/service", "v3", &r));
  CHECK(etcdc_v2_response_action(r) == ETCDC_V2_CAD);
  etcdc_v2_response_free(r);
  EXPECT(etcdc_v2_delete(c, "/radar/service", &r), ETCDC_ERR_NOT_FOUND);

  /* A TTL, refreshed without a write (v2's heartbeat). */
  OK(etcdc_v2_create(c, "/leader", "me", 5, &r));
  CHECK(etcdc_v2_node_ttl(etcdc_v2_response_node(r)) == 5);
  uint64_t leader_index = etcdc_v2_node_modified_index(etcdc_v2_response_node(r));
  etcdc_v2_response_free(r);
  OK(etcdc_v2_update(c, "/leader", NULL, 5, true, &r));
  etcdc_v2_response_free(r);
  OK(etcdc_v2_get(c, "/leader", &r));
  CHECK(etcdc_v2_node_modified_index(etcdc_v2_response_node(r)) == leader_index);
  CHECK(etcdc_v2_node_ttl(etcdc_v2_response_node(r)) > 0);
  etcdc_v2_response_free(r);

  /* In-order keys. */
  char first[64] = {0};
  for (int i = 0; i < 3; i++) {
    OK(etcdc_v2_create_in_order(c, "/queue", i == 0 ? "a" : "b", 0, &r));
    if (i == 0) snprintf(first, sizeof first, "%s", etcdc_v2_node_key(etcdc_v2_response_node(r)));
    else CHECK(strcmp(etcdc_v2_node_key(etcdc_v2_response_node(r)), first) > 0);
    etcdc_v2_response_free(r);
  }
  CHECK(strlen(first) == strlen("/queue/") + 20);

  /* Watches: a callback from now (recursive), and a pull watcher from an index. */
  watched w;
  memset(&w, 0, sizeof w);
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  etcdc_v2_watch_callback cb = {on_change, on_v2_drop, &w};
  etcdc_v2_watcher *live = NULL, *past = NULL;
  OK(etcdc_v2_watch(c, "/radar", 0, true, &cb, &live));
  OK(etcdc_v2_set(c, "/radar/nodes/b", "2", 0, &r));
  etcdc_v2_response_free(r);
  OK(etcdc_v2_delete(c, "/radar/nodes/a", &r));
  etcdc_v2_response_free(r);
  CHECK(wait_count(&w, &w.sets, 1) && wait_count(&w, &w.deletes, 1));
  OK(etcdc_v2_watcher_free(live));
  CHECK(w.drops == 1);
  OK(etcdc_v2_watch(c, "/leader", leader_index, false, NULL, &past));
  OK(etcdc_v2_watcher_next(past, 5000, &r));
  CHECK(etcdc_v2_response_action(r) == ETCDC_V2_CREATE && value_of(r, "me"));
  etcdc_v2_response_free(r);
  OK(etcdc_v2_watcher_free(past));

  OK(etcdc_v2_rmdir(c, "/radar", true, &r));
  etcdc_v2_response_free(r);
  EXPECT(etcdc_v2_get(c, "/radar", &r), ETCDC_ERR_NOT_FOUND);
}

int main(void) {
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &c));
  run(c, NULL);
  OK(etcdc_client_free(c));
  on_embedded_node(run, NULL);
  return check_report("test_v2");
}
