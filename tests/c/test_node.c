/* The embedded node through the C ABI: a one-member node from only a data dir, a client
 * bound to it using the ordinary calls, its status, a restart on the same dir with all data
 * back, a watch from history into live events, a second node refused on a dir in use, and bad options. */
#include <unistd.h>

#include "common.h"

static void fill(etcdc_client *c) {
  for (int i = 0; i < 50; i++) {
    char key[32], value[32];
    snprintf(key, sizeof key, "node/k/%02d", i);
    snprintf(value, sizeof value, "v%d", i);
    OK(etcdc_put(c, S(key), S(value), NULL, NULL));
  }
}

static int64_t count(etcdc_client *c) {
  etcdc_get_options *o = etcdc_get_options_new();
  OK(etcdc_get_options_set_prefix(o));
  etcdc_get_result *r = NULL;
  int64_t n = -1;
  if (etcdc_get(c, S("node/k/"), o, &r) == ETCDC_OK) n = etcdc_get_result_count(r);
  etcdc_get_result_free(r);
  etcdc_get_options_free(o);
  return n;
}

int main(void) {
  char dir[] = "/tmp/etcdc-node-test-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char data[sizeof dir + 16];
  snprintf(data, sizeof data, "%s/data", dir);

  etcdc_node_options *o = etcdc_node_options_new();
  OK(etcdc_node_options_set_data_dir(o, data));
  EXPECT(etcdc_node_options_set_initial_cluster_state(o, "sideways"), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_node_options_set_initial_cluster(o, "a:b"), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_node_options_set_timing_ms(o, 100, 200), ETCDC_ERR_INVALID_ARGUMENT);
  OK(etcdc_node_options_set_timing_ms(o, 50, 300));

  etcdc_node *n = NULL;
  OK(etcdc_node_start(o, &n));
  etcdc_client *c = NULL;
  OK(etcdc_node_client(n, NULL, &c));
  fill(c);
  CHECK(count(c) == 50);
  /* A transaction and a lease through the same calls as against etcd. */
  OK(etcdc_create(c, S("node/owner"), S("me"), NULL, NULL));
  EXPECT(etcdc_create(c, S("node/owner"), S("you"), NULL, NULL), ETCDC_ERR_COMPARE_FAILED);
  int64_t lease = 0;
  OK(etcdc_lease_grant(c, 30, 0, 0, &lease, NULL));
  CHECK(lease > 0);
  /* A watch from the revision of the first put: history, then live events, in order. */
  etcdc_watch_options *wo = etcdc_watch_options_new();
  OK(etcdc_watch_options_set_prefix(wo));
  OK(etcdc_watch_options_set_start_revision(wo, 2));
  etcdc_watch *w = NULL;
  OK(etcdc_watch_start(c, S("node/k/"), wo, NULL, &w));
  etcdc_watch_options_free(wo);
  OK(etcdc_put(c, S("node/k/live"), S("x"), NULL, NULL));
  int got = 0, live = 0;
  int64_t last = 0;
  etcdc_watch_response *r = NULL;
  while (got < 51 && etcdc_watch_next(w, 5000, &r) == ETCDC_OK) {
    for (size_t i = 0; i < etcdc_watch_response_len(r); i++) {
      const etcdc_kv *kv = etcdc_event_kv(etcdc_watch_response_event(r, i));
      CHECK(etcdc_kv_mod_revision(kv) > last);
      last = etcdc_kv_mod_revision(kv);
      live += value_is(kv, "x");
      got++;
    }
    etcdc_watch_response_free(r);
  }
  CHECK(got == 51 && live == 1);
  OK(etcdc_watch_free(w));

  uint64_t id = 0, leader = 0, term = 0, applied = 0;
  bool is_leader = false;
  OK(etcdc_node_status(n, &id, &leader, &term, &applied, &is_leader));
  CHECK(id == 0x8e9e05c52164694dULL); /* etcd's id for the default member */
  CHECK(leader == id && is_leader && term >= 1 && applied > 50);
  OK(etcdc_node_status(n, NULL, NULL, NULL, NULL, NULL));

  /* One process per data dir. */
  etcdc_node *second = NULL;
  EXPECT(etcdc_node_start(o, &second), ETCDC_ERR_FAILED_PRECONDITION);
  EXPECT_MESSAGE("in use");
  CHECK(second == NULL);

  int64_t before = count(c);
  CHECK(before == 51);
  OK(etcdc_client_free(c));
  OK(etcdc_node_stop(n));
  EXPECT(etcdc_node_status(n, &id, NULL, NULL, NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  OK(etcdc_node_stop(NULL));

  /* Started again on the same dir: everything is back. */
  OK(etcdc_node_start(o, &n));
  OK(etcdc_node_client(n, NULL, &c));
  int64_t back = -1;
  for (int i = 0; i < 100 && (back = count(c)) != before; i++) sleep_ms(50);
  CHECK(back == before);
  OK(etcdc_client_free(c));
  OK(etcdc_node_stop(n));
  etcdc_node_options_free(o);

  EXPECT(etcdc_node_start(NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  char cmd[sizeof dir + 16];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  return check_report("test_node");
}
