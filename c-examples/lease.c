/* A lease with keep-alive: the key lives as long as the process keeps its lease alive, which
 * is how a service announces itself. Usage: lease [endpoints] */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <etcdc.h>

#define KEY(s) (const uint8_t *)(s), strlen(s)

static const char *state_name(etcdc_lease_state s) {
  switch (s) {
    case ETCDC_LEASE_ALIVE: return "ALIVE";
    case ETCDC_LEASE_RECONNECTING: return "RECONNECTING";
    case ETCDC_LEASE_LOST: return "LOST";
  }
  return "?";
}

static void on_state(void *user_data, const etcdc_lease_event *e) {
  (void)user_data;
  printf("lease %" PRIx64 ": %s (ttl %" PRId64 ") %s\n", (uint64_t)etcdc_lease_event_id(e),
         state_name(etcdc_lease_event_state(e)), etcdc_lease_event_ttl(e), etcdc_lease_event_reason(e));
}

static int key_exists(etcdc_client *c, const char *key) {
  etcdc_get_result *g = NULL;
  if (etcdc_get(c, KEY(key), NULL, &g) != ETCDC_OK) return -1;
  int n = (int)etcdc_get_result_len(g);
  etcdc_get_result_free(g);
  return n;
}

int main(int argc, char **argv) {
  const char *endpoints = argc > 1 ? argv[1] : getenv("ETCDC_ENDPOINTS");
  etcdc_client *c = NULL;
  if (etcdc_client_connect(endpoints ? endpoints : "http://127.0.0.1:2379", NULL, &c) != ETCDC_OK) return 1;

  int64_t lease = 0, ttl = 0;
  if (etcdc_lease_grant(c, 2, 0, 0, &lease, &ttl) != ETCDC_OK) {
    fprintf(stderr, "grant: %s\n", etcdc_last_error());
    return 1;
  }
  etcdc_put_options *po = etcdc_put_options_new();
  etcdc_put_options_set_lease(po, lease);
  etcdc_put(c, KEY("services/login/10.0.0.1:8000"), KEY("{\"weight\":1}"), po, NULL);
  etcdc_put_options_free(po);

  etcdc_lease_callback cb = {on_state, NULL, NULL};
  etcdc_lease_keeper *k = NULL;
  etcdc_lease_keeper_start(c, &cb, &k);
  etcdc_lease_keeper_add(k, lease);

  struct timespec five = {5, 0};
  nanosleep(&five, NULL);
  int alive = key_exists(c, "services/login/10.0.0.1:8000");
  printf("after 5 s (TTL %" PRId64 " s) the key %s\n", ttl, alive == 1 ? "is still there" : "is GONE");

  etcdc_lease_keeper_free(k); /* stop refreshing; the lease now runs out */
  struct timespec four = {4, 0};
  nanosleep(&four, NULL);
  int gone = key_exists(c, "services/login/10.0.0.1:8000");
  printf("4 s after the keeper stopped the key %s\n", gone == 0 ? "is gone" : "is STILL THERE");
  etcdc_client_free(c);
  return alive == 1 && gone == 0 ? 0 : 1;
}
