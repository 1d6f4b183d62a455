/* A lock, a leader election and a job queue — the same keys as Go's concurrency package and
 * etcdctl lock / elect, and etcd v2's in-order keys. Usage: coordination [endpoints] */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <etcdc.h>

#define BYTES(s) (const uint8_t *)(s), strlen(s)

static int fail(const char *what, etcdc_status s) {
  fprintf(stderr, "%s: %s: %s\n", what, etcdc_status_str(s), etcdc_last_error());
  return 1;
}

int main(int argc, char **argv) {
  const char *endpoints = argc > 1 ? argv[1] : getenv("ETCDC_ENDPOINTS");
  etcdc_client *c = NULL;
  etcdc_status s = etcdc_client_connect(endpoints ? endpoints : "http://127.0.0.1:2379", NULL, &c);
  if (s != ETCDC_OK) return fail("connect", s);

  /* A session: one lease, kept alive, that locks and leadership hang on. */
  etcdc_session *session = NULL;
  if ((s = etcdc_session_start(c, 10, NULL, &session)) != ETCDC_OK) return fail("session", s);

  etcdc_mutex *m = NULL;
  if ((s = etcdc_mutex_new(session, BYTES("/locks/report"), &m)) != ETCDC_OK) return fail("mutex", s);
  if ((s = etcdc_mutex_lock(m, 5000)) != ETCDC_OK) return fail("lock", s);
  size_t n = 0;
  const uint8_t *key = etcdc_mutex_key(m, &n);
  printf("locked %.*s, fencing token %" PRId64 "\n", (int)n, (const char *)key, etcdc_mutex_revision(m));
  etcdc_mutex_unlock(m, 0);
  etcdc_mutex_free(m);

  etcdc_election *e = NULL;
  if ((s = etcdc_election_new(session, BYTES("/elect/msg"), &e)) != ETCDC_OK) return fail("election", s);
  if ((s = etcdc_election_campaign(e, BYTES("msg-server-1"), 5000)) != ETCDC_OK) return fail("campaign", s);
  etcdc_leader *l = NULL;
  if ((s = etcdc_election_leader(c, BYTES("/elect/msg"), 0, &l)) != ETCDC_OK) return fail("leader", s);
  const uint8_t *v = etcdc_leader_value(l, &n);
  printf("leader: %.*s\n", (int)n, (const char *)v);
  int ok = n == strlen("msg-server-1");
  etcdc_leader_free(l);
  etcdc_election_resign(e, 0);
  etcdc_election_free(e);

  for (int i = 0; i < 3; i++) {
    char job[32];
    snprintf(job, sizeof job, "job-%d", i);
    if ((s = etcdc_queue_enqueue(c, "/queue/jobs", BYTES(job), 0, NULL)) != ETCDC_OK) return fail("enqueue", s);
  }
  etcdc_queue_item *it = NULL;
  while (etcdc_queue_dequeue(c, "/queue/jobs", false, 0, &it) == ETCDC_OK) {
    v = etcdc_queue_item_value(it, &n);
    printf("dequeued %.*s\n", (int)n, (const char *)v);
    etcdc_queue_item_free(it);
  }

  etcdc_session_free(session);
  etcdc_client_free(c);
  return ok ? 0 : 1;
}
