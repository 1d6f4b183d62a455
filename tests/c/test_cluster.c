/* Members, endpoint status, the version, and life after fork() through the C API. */
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

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

/* A child process cannot use what its parent started: it is told so until it re-initialises
 * (the check is a fork handler's flag, not a getpid per call: a grandchild too). */
static void after_fork(void) {
  pid_t pid = fork();
  if (pid == 0) {
    etcdc_client *c = NULL;
    int ok = etcdc_client_connect(endpoints_from_env(), NULL, &c) == ETCDC_ERR_FORKED;
    ok = ok && strstr(etcdc_last_error(), "etcdc_reinit_after_fork") != NULL;
    ok = ok && etcdc_reinit_after_fork() == ETCDC_OK;
    ok = ok && etcdc_client_connect(endpoints_from_env(), NULL, &c) == ETCDC_OK;
    ok = ok && etcdc_put(c, S("forked"), S("child"), NULL, NULL) == ETCDC_OK;
    /* Its own child is told the same about what it started. */
    pid_t grandchild = ok ? fork() : -1;
    if (grandchild == 0) _exit(etcdc_put(c, S("forked"), S("grandchild"), NULL, NULL) == ETCDC_ERR_FORKED ? 0 : 1);
    int status = 1;
    ok = ok && grandchild > 0 && waitpid(grandchild, &status, 0) == grandchild && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    ok = ok && etcdc_client_free(c) == ETCDC_OK;
    if (!ok) fprintf(stderr, "child: %s\n", etcdc_last_error());
    _exit(ok ? 0 : 1);
  }
  CHECK(pid > 0);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void on_log(void *user_data, const etcdc_log_record *r) {
  shared_state *s = (shared_state *)user_data;
  pthread_mutex_lock(&s->mu);
  if (etcdc_log_record_level(r) == ETCDC_LOG_DEBUG && strstr(etcdc_log_record_message(r), "retrying")) s->events++;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* Logs go to the host's callback (nothing on stderr by default), counters count retries. */
static void logs_and_counters(void) {
  shared_state s;
  state_init(&s);
  etcdc_log_callback cb = {on_log, on_drop, &s};
  OK(etcdc_set_log_callback(ETCDC_LOG_DEBUG, &cb));
  char endpoints[512];
  snprintf(endpoints, sizeof endpoints, "http://127.0.0.1:1,%s", endpoints_from_env());
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoints, NULL, &c));
  for (int i = 0; i < 4; i++) {
    etcdc_get_result *g = NULL;
    OK(etcdc_get(c, S("any"), NULL, &g));
    etcdc_get_result_free(g);
  }
  /* At least the first call meets the dead endpoint and is retried on the live one; later
   * calls may skip it while it backs off, so how many more retry depends on timing. */
  CHECK(etcdc_client_counter(c, ETCDC_COUNTER_RETRIES) >= 1);
  CHECK(etcdc_client_counter(c, ETCDC_COUNTER_RECONNECTS) == 0);
  CHECK(etcdc_client_counter(NULL, ETCDC_COUNTER_RETRIES) == 0);
  CHECK(wait_for(&s, &s.events, 1));
  OK(etcdc_set_log_callback(ETCDC_LOG_DEBUG, NULL));
  CHECK(wait_for(&s, &s.drops, 1));
  shared_state bad;
  state_init(&bad);
  etcdc_log_callback bad_cb = {on_log, on_drop, &bad};
  EXPECT(etcdc_set_log_callback((etcdc_log_level)9, &bad_cb), ETCDC_ERR_INVALID_ARGUMENT);
  CHECK(bad.drops == 1); /* drop runs when the registration fails */
  OK(etcdc_client_free(c));
}

int main(void) {
  logs_and_counters();
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &c));
  printf("etcdc %s\n", etcdc_version());
  CHECK(strcmp(etcdc_version(), ETCDC_VERSION_STRING) == 0);
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
  return check_report("test_cluster");
}
