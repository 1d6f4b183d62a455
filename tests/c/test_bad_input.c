/* Bad input through the C ABI: every case must give the right status and a message, never a
 * crash, a hang or a sanitizer report. */
#include <time.h>

#include "check.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int drops = 0;
static void count_drop(void *user_data) {
  (void)user_data;
  drops++;
}

static void null_arguments(etcdc_client *c) {
  etcdc_get_result *g = NULL;
  EXPECT(etcdc_get(NULL, S("k"), NULL, &g), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("client is NULL");
  CHECK(g == NULL);
  EXPECT(etcdc_get(c, NULL, 3, NULL, &g), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("key is NULL");
  EXPECT(etcdc_get(c, S("k"), NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("result_out is NULL");
  EXPECT(etcdc_get(c, NULL, 0, NULL, &g), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("key is empty");
  EXPECT(etcdc_put(c, S("k"), NULL, 5, NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("value is NULL");
  EXPECT(etcdc_put(NULL, S("k"), S("v"), NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_delete(NULL, S("k"), NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_txn_commit(c, NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_txn_put(NULL, ETCDC_TXN_THEN, S("k"), S("v"), NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_txn_txn(NULL, ETCDC_TXN_THEN, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_get_options_set_limit(NULL, 1), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_lease_grant(c, 10, 0, 0, NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_watch_start(c, S("k"), NULL, NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_client_connect(NULL, NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);

  /* Frees of NULL do nothing. */
  etcdc_get_result_free(NULL);
  etcdc_put_result_free(NULL);
  etcdc_delete_result_free(NULL);
  etcdc_txn_result_free(NULL);
  etcdc_txn_free(NULL);
  etcdc_get_options_free(NULL);
  etcdc_watch_response_free(NULL);
  OK(etcdc_watch_free(NULL));
  OK(etcdc_client_free(NULL));
  OK(etcdc_lease_keeper_free(NULL));

  /* Accessors on NULL return neutral values. */
  CHECK(etcdc_get_result_len(NULL) == 0);
  CHECK(etcdc_get_result_kv(NULL, 0) == NULL);
  CHECK(etcdc_kv_key(NULL, NULL) == NULL);
  CHECK(etcdc_header_revision(NULL) == 0);

  /* Status accessors on NULL fail as every status-returning call does: with a message. */
  EXPECT(etcdc_watch_response_status(NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("response is NULL");
  EXPECT(etcdc_lease_event_status(NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("event is NULL");
  EXPECT(etcdc_completion_status(NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("completion is NULL");
  EXPECT(etcdc_leader_status(NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("leader is NULL");
  EXPECT(etcdc_registration_event_status(NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("event is NULL");
  EXPECT(etcdc_discovery_event_status(NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("event is NULL");
}

static void invalid_options(etcdc_client *c) {
  etcdc_get_options *o = etcdc_get_options_new();
  EXPECT(etcdc_get_options_set_limit(o, -1), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_get_options_set_sort(o, 99, ETCDC_SORT_ASCEND), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("unknown sort target 99");
  EXPECT(etcdc_get_options_set_sort(o, ETCDC_SORT_BY_KEY, 7), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_get_options_set_revision(o, -5), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_get_options_set_range_end(o, NULL, 0), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_get_options_set_timeout_ms(o, -1), ETCDC_ERR_INVALID_ARGUMENT);
  etcdc_get_options_free(o);

  etcdc_txn *t = etcdc_txn_new();
  EXPECT(etcdc_txn_compare_value(t, S("k"), 9, S("v")), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_txn_put(t, 5, S("k"), S("v"), NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("unknown txn branch 5");
  EXPECT(etcdc_txn_txn(t, ETCDC_TXN_THEN, t), ETCDC_ERR_INVALID_ARGUMENT);
  etcdc_txn_free(t);

  int64_t id = 0;
  EXPECT(etcdc_lease_grant(c, 0, 0, 0, &id, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_lease_grant(c, 10, -3, 0, &id, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_compact(c, 0, false, 0), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_runtime_set_threads(4), ETCDC_ERR_FAILED_PRECONDITION);

  etcdc_client_options *co = etcdc_client_options_new();
  EXPECT(etcdc_client_options_set_timeout_ms(co, 0), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_client_options_set_connect_timeout_ms(co, -1), ETCDC_ERR_INVALID_ARGUMENT);
  etcdc_client_options_free(co);

  /* An unknown status value still has a name (an int: no out-of-range enum value is made,
   * which C++ forbids). */
  CHECK(strcmp(etcdc_status_str(1234), "ETCDC_UNKNOWN") == 0);
  CHECK(strcmp(etcdc_status_str(ETCDC_ERR_COMPACTED), "ETCDC_ERR_COMPACTED") == 0);
}

static void malformed_endpoints(void) {
  const char *bad[] = {"", "127.0.0.1", "ftp://127.0.0.1:2379", "http://", "http://127.0.0.1",
                       "http://127.0.0.1:2379/path", "http://[::1", "http://a:99999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    etcdc_client *c = NULL;
    EXPECT(etcdc_client_connect(bad[i], NULL, &c), ETCDC_ERR_INVALID_ARGUMENT);
    CHECK(c == NULL);
  }
  etcdc_client *c = NULL;
  /* One scheme per client. */
  EXPECT(etcdc_client_connect("https://127.0.0.1:2379,http://127.0.0.1:2380", NULL, &c),
         ETCDC_ERR_INVALID_ARGUMENT);
  /* TLS settings: a certificate needs its key; a missing file is named at connect; TLS
   * settings on http:// endpoints are refused, not ignored. */
  etcdc_client_options *o = etcdc_client_options_new();
  EXPECT(etcdc_client_options_set_tls_files(o, NULL, "/tmp/cert.pem", NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_client_options_set_tls_pem(o, (const uint8_t *)"x", 1, NULL, 0, NULL, 0), ETCDC_OK);
  EXPECT(etcdc_client_connect("https://127.0.0.1:2379", o, &c), ETCDC_ERR_INVALID_ARGUMENT);
  CHECK(strstr(etcdc_last_error(), "not PEM") != NULL);
  OK(etcdc_client_options_set_tls_files(o, "/nonexistent/ca.pem", NULL, NULL));
  EXPECT(etcdc_client_connect("https://127.0.0.1:2379", o, &c), ETCDC_ERR_INVALID_ARGUMENT);
  CHECK(strstr(etcdc_last_error(), "/nonexistent/ca.pem") != NULL);
  EXPECT(etcdc_client_options_set_tls_files(NULL, NULL, NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  etcdc_client_options_free(o);
  o = etcdc_client_options_new();
  OK(etcdc_client_options_set_tls_server_name(o, "etcd.example.com"));
  EXPECT(etcdc_client_connect("http://127.0.0.1:2379", o, &c), ETCDC_ERR_INVALID_ARGUMENT);
  CHECK(strstr(etcdc_last_error(), "use https://") != NULL);
  etcdc_client_options_free(o);
  CHECK(c == NULL);
}

static void unreachable_endpoint(void) {
  etcdc_client_options *o = etcdc_client_options_new();
  OK(etcdc_client_options_set_timeout_ms(o, 800));
  etcdc_client *c = NULL;
  OK(etcdc_client_connect("http://127.0.0.1:1", o, &c));
  etcdc_client_options_free(o);
  double start = now_s();
  EXPECT(etcdc_put(c, S("k"), S("v"), NULL, NULL), ETCDC_ERR_UNAVAILABLE);
  EXPECT_MESSAGE("127.0.0.1:1");
  double took = now_s() - start;
  CHECK(took < 2.0);
  etcdc_get_result *g = NULL;
  EXPECT(etcdc_get(c, S("k"), NULL, &g), ETCDC_ERR_UNAVAILABLE);
  etcdc_watch *w = NULL;
  EXPECT(etcdc_watch_start(c, S("k"), NULL, NULL, &w), ETCDC_ERR_UNAVAILABLE);
  CHECK(w == NULL);
  OK(etcdc_client_free(c));
}

static void server_limits(etcdc_client *c) {
  size_t big = 2 * 1024 * 1024;
  uint8_t *value = (uint8_t *)calloc(big, 1);
  EXPECT(etcdc_put(c, S("big"), value, big, NULL, NULL), ETCDC_ERR_TOO_LARGE);
  EXPECT(etcdc_put(c, S("big"), value, 1572864 + 100, NULL, NULL), ETCDC_ERR_TOO_LARGE);
  EXPECT_MESSAGE("etcdserver: request is too large");
  free(value);

  etcdc_txn *t = etcdc_txn_new();
  for (int i = 0; i < 129; i++) {
    char key[32];
    snprintf(key, sizeof key, "many/%d", i);
    OK(etcdc_txn_put(t, ETCDC_TXN_THEN, S(key), S("v"), NULL));
  }
  etcdc_txn_result *r = NULL;
  EXPECT(etcdc_txn_commit(c, t, &r), ETCDC_ERR_TOO_MANY_OPS);
  EXPECT_MESSAGE("etcdserver: too many operations in txn request");
  CHECK(r == NULL);
  etcdc_txn_free(t);

  etcdc_put_options *po = etcdc_put_options_new();
  OK(etcdc_put_options_set_lease(po, 0x7777777));
  EXPECT(etcdc_put(c, S("leased"), S("v"), po, NULL), ETCDC_ERR_NOT_FOUND);
  EXPECT_MESSAGE("etcdserver: requested lease not found");
  etcdc_put_options_free(po);
  EXPECT(etcdc_lease_revoke(c, 0x7777777, 0), ETCDC_ERR_NOT_FOUND);
  etcdc_lease_info *info = NULL;
  EXPECT(etcdc_lease_time_to_live(c, 0x7777777, false, 0, &info), ETCDC_ERR_NOT_FOUND);
  CHECK(info == NULL);
}

static void compacted_revision(etcdc_client *c) {
  etcdc_put_result *p1 = NULL, *p2 = NULL;
  OK(etcdc_put(c, S("compact-me"), S("1"), NULL, &p1));
  OK(etcdc_put(c, S("compact-me"), S("2"), NULL, &p2));
  int64_t r1 = etcdc_header_revision(etcdc_put_result_header(p1));
  int64_t r2 = etcdc_header_revision(etcdc_put_result_header(p2));
  etcdc_put_result_free(p1);
  etcdc_put_result_free(p2);
  OK(etcdc_compact(c, r2, true, 0));

  etcdc_get_options *o = etcdc_get_options_new();
  OK(etcdc_get_options_set_revision(o, r1));
  etcdc_get_result *g = NULL;
  EXPECT(etcdc_get(c, S("compact-me"), o, &g), ETCDC_ERR_COMPACTED);
  EXPECT_MESSAGE("etcdserver: mvcc: required revision has been compacted");
  OK(etcdc_get_options_set_revision(o, r2 + 1000));
  EXPECT(etcdc_get(c, S("compact-me"), o, &g), ETCDC_ERR_FUTURE_REVISION);
  etcdc_get_options_free(o);

  /* A watch from a compacted revision reports the compaction, then ends. */
  etcdc_watch_options *wo = etcdc_watch_options_new();
  OK(etcdc_watch_options_set_start_revision(wo, r1));
  etcdc_watch *w = NULL;
  OK(etcdc_watch_start(c, S("compact-me"), wo, NULL, &w));
  etcdc_watch_options_free(wo);
  etcdc_watch_response *resp = NULL;
  OK(etcdc_watch_next(w, 5000, &resp));
  CHECK(etcdc_watch_response_kind(resp) == ETCDC_WATCH_COMPACTED);
  CHECK(etcdc_watch_response_compact_revision(resp) == r2);
  etcdc_watch_response_free(resp);
  EXPECT(etcdc_watch_next(w, 1000, &resp), ETCDC_ERR_CLOSED);
  OK(etcdc_watch_free(w));
}

/* A length far beyond any request, with a buffer far shorter: refused before a byte is read
 * or allocated (it used to abort the process trying to allocate 1 TiB). */
static void huge_lengths(etcdc_client *c) {
  const size_t huge = (size_t)1 << 40;
  const uint8_t shorty[4] = {'a', 'b', 'c', 'd'};
  EXPECT(etcdc_put(c, shorty, huge, S("v"), NULL, NULL), ETCDC_ERR_TOO_LARGE);
  EXPECT_MESSAGE("key is too large");
  EXPECT(etcdc_put(c, S("k"), shorty, huge, NULL, NULL), ETCDC_ERR_TOO_LARGE);
  EXPECT_MESSAGE("value is too large");
  etcdc_get_result *g = NULL;
  EXPECT(etcdc_get(c, shorty, huge, NULL, &g), ETCDC_ERR_TOO_LARGE);
  EXPECT(etcdc_delete(c, shorty, huge, NULL, NULL), ETCDC_ERR_TOO_LARGE);
  EXPECT(etcdc_cas(c, S("k"), shorty, huge, S("v"), NULL, NULL), ETCDC_ERR_TOO_LARGE);
  EXPECT(etcdc_create(c, S("k"), shorty, huge, NULL, NULL), ETCDC_ERR_TOO_LARGE);
  etcdc_watch *w = NULL;
  EXPECT(etcdc_watch_start(c, shorty, huge, NULL, NULL, &w), ETCDC_ERR_TOO_LARGE);
  etcdc_txn *t = etcdc_txn_new();
  EXPECT(etcdc_txn_compare_value(t, S("k"), ETCDC_CMP_EQUAL, shorty, huge), ETCDC_ERR_TOO_LARGE);
  EXPECT(etcdc_txn_put(t, ETCDC_TXN_THEN, S("k"), shorty, huge, NULL), ETCDC_ERR_TOO_LARGE);
  etcdc_get_options *go = etcdc_get_options_new();
  EXPECT(etcdc_get_options_set_range_end(go, shorty, huge), ETCDC_ERR_TOO_LARGE);
  etcdc_get_options_free(go);
  /* A transaction's outcome is in its result: a NULL result_out is refused, nothing runs. */
  OK(etcdc_txn_put(t, ETCDC_TXN_THEN, S("txn-null-result"), S("v"), NULL));
  EXPECT(etcdc_txn_commit(c, t, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("result_out is NULL");
  etcdc_txn_free(t);
  etcdc_get_result *none = NULL;
  OK(etcdc_get(c, S("txn-null-result"), NULL, &none));
  CHECK(etcdc_get_result_len(none) == 0);
  etcdc_get_result_free(none);
}

static void stale_handles(etcdc_client *c) {
  etcdc_watch_callback cb;
  memset(&cb, 0, sizeof cb);
  cb.drop = count_drop;
  etcdc_watch *w = NULL;
  /* A callback without `call` is refused, and its drop still runs once. */
  EXPECT(etcdc_watch_start(c, S("k"), NULL, &cb, &w), ETCDC_ERR_INVALID_ARGUMENT);
  CHECK(drops == 1);

  OK(etcdc_watch_start(c, S("k"), NULL, NULL, &w));
  OK(etcdc_watch_free(w));
  EXPECT(etcdc_watch_free(w), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("watch is not a live handle (already freed, or not a watch handle at all)");
  etcdc_watch_response *resp = NULL;
  EXPECT(etcdc_watch_next(w, 0, &resp), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_watch_request_progress(w), ETCDC_ERR_INVALID_ARGUMENT);
  int fd = -1;
  EXPECT(etcdc_watch_fd(w, &fd), ETCDC_ERR_INVALID_ARGUMENT);
  /* A handle of another kind is not a watch. */
  EXPECT(etcdc_watch_request_progress((etcdc_watch *)c), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_lease_keeper_add((etcdc_lease_keeper *)c, 1), ETCDC_ERR_INVALID_ARGUMENT);
  /* A callback watch has nothing to pull. */
  etcdc_lease_keeper *k = NULL;
  OK(etcdc_lease_keeper_start(c, NULL, &k));
  EXPECT(etcdc_lease_keeper_remove(k, 42), ETCDC_ERR_NOT_FOUND);
  OK(etcdc_lease_keeper_free(k));
  EXPECT(etcdc_lease_keeper_add(k, 1), ETCDC_ERR_INVALID_ARGUMENT);

  etcdc_client *c2 = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &c2));
  OK(etcdc_client_free(c2));
  EXPECT(etcdc_put(c2, S("k"), S("v"), NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_client_free(c2), ETCDC_ERR_INVALID_ARGUMENT);
}

int main(void) {
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &c));
  null_arguments(c);
  invalid_options(c);
  malformed_endpoints();
  unreachable_endpoint();
  server_limits(c);
  compacted_revision(c);
  huge_lengths(c);
  stale_handles(c);
  OK(etcdc_client_free(c));
  return check_report("test_bad_input");
}
