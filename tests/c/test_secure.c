/* A C service on a cluster that requires TLS, a client certificate and a user (started by
 * `scripts/with-etcd.sh --secure`): every kind of call works with all three; without the
 * right certificate or password, or outside the user's permission, calls fail with a clear
 * status and message. Then the same on a node embedded in this process that requires all
 * three (users made with etcdctl). */
#include <stdlib.h>
#include <unistd.h>

#include "common.h"

static char path_buf[4][512];

/* $ETCDC_CERTS/name, in one of a few static buffers. */
static const char *cert(int slot, const char *name) {
  const char *dir = getenv("ETCDC_CERTS");
  if (!dir) {
    fprintf(stderr, "ETCDC_CERTS is not set: run through scripts/with-etcd.sh --secure\n");
    exit(2);
  }
  snprintf(path_buf[slot], sizeof path_buf[slot], "%s/%s", dir, name);
  return path_buf[slot];
}

/* A client with the CA `ca`, the certificate `who` (NULL: none) and a user (NULL: none). */
static etcdc_status connect_to(const char *endpoints, const char *ca, const char *who,
                               const char *user, const char *password, etcdc_client **c) {
  etcdc_client_options *o = etcdc_client_options_new();
  char cert_name[64], key_name[64];
  snprintf(cert_name, sizeof cert_name, "%s.pem", who ? who : "");
  snprintf(key_name, sizeof key_name, "%s-key.pem", who ? who : "");
  etcdc_status st = etcdc_client_options_set_tls_files(o, cert(0, ca), who ? cert(1, cert_name) : NULL,
                                                       who ? cert(2, key_name) : NULL);
  if (st == ETCDC_OK) st = etcdc_client_options_set_timeout_ms(o, 3000);
  if (st == ETCDC_OK && user) st = etcdc_client_options_set_user(o, user, password);
  if (st == ETCDC_OK) st = etcdc_client_connect(endpoints, o, c);
  etcdc_client_options_free(o);
  return st;
}

static etcdc_status connect_as(const char *ca, const char *who, const char *user,
                               const char *password, etcdc_client **c) {
  return connect_to(endpoints_from_env(), ca, who, user, password, c);
}

static void everything_works(etcdc_client *c) {
  /* Keys, a watch with a callback, a kept lease. */
  shared_state s;
  state_init(&s);
  etcdc_watch_callback wcb = {on_watch, on_drop, &s};
  etcdc_watch *w = NULL;
  OK(etcdc_watch_start(c, S("/secure/w"), NULL, &wcb, &w));
  OK(etcdc_put(c, S("/secure/k"), S("v"), NULL, NULL));
  etcdc_get_result *g = NULL;
  OK(etcdc_get(c, S("/secure/k"), NULL, &g));
  CHECK(etcdc_get_result_count(g) == 1);
  etcdc_get_result_free(g);
  OK(etcdc_put(c, S("/secure/w"), S("1"), NULL, NULL));
  CHECK(wait_for(&s, &s.events, 1));
  OK(etcdc_watch_free(w));

  int64_t id = 0;
  OK(etcdc_lease_grant(c, 5, 0, 0, &id, NULL));
  etcdc_lease_callback lcb = {on_lease, on_drop, &s};
  etcdc_lease_keeper *k = NULL;
  OK(etcdc_lease_keeper_start(c, &lcb, &k));
  OK(etcdc_lease_keeper_add(k, id));
  CHECK(wait_for(&s, &s.lease_alive, 1));
  OK(etcdc_lease_keeper_free(k));
  OK(etcdc_lease_revoke(c, id, 0));

  /* A lock, and a registration seen by discovery. */
  etcdc_session *session = NULL;
  OK(etcdc_session_start(c, 10, NULL, &session));
  etcdc_mutex *m = NULL;
  OK(etcdc_mutex_new(session, S("/secure/lock"), &m));
  OK(etcdc_mutex_lock(m, 0));
  OK(etcdc_mutex_unlock(m, 0));
  OK(etcdc_mutex_free(m));
  OK(etcdc_session_free(session));

  etcdc_registration *r = NULL;
  OK(etcdc_register(c, "/secure/msg_servers", "0001", "127.0.0.1:8001", NULL, NULL, &r));
  etcdc_discovery *d = NULL;
  OK(etcdc_discover(c, "/secure/msg_servers", NULL, &d));
  etcdc_discovery_event *e = NULL;
  OK(etcdc_discovery_next(d, 10000, &e));
  if (e) {
    CHECK(etcdc_discovery_event_change(e) == ETCDC_INSTANCE_ADDED);
    etcdc_discovery_event_free(e);
  }
  OK(etcdc_discovery_free(d));
  OK(etcdc_registration_free(r));

  /* A driven queue's own connection: TLS, the client certificate and the user's token are
   * set up on the caller's thread, and a forbidden key is refused there as anywhere. */
  etcdc_cq *cq = NULL;
  OK(etcdc_cq_new_driven(&cq));
  OK(etcdc_put_async(c, S("/secure/driven"), S("v"), NULL, cq, (void *)1, NULL));
  OK(etcdc_put_async(c, S("/elsewhere"), S("v"), NULL, cq, (void *)2, NULL));
  for (int i = 0; i < 2; i++) {
    etcdc_completion *done = NULL;
    OK(etcdc_cq_next(cq, 10000, &done));
    if (!done) break;
    if (etcdc_completion_tag(done) == (void *)1) CHECK(etcdc_completion_status(done) == ETCDC_OK);
    else CHECK(etcdc_completion_status(done) == ETCDC_ERR_PERMISSION);
    etcdc_completion_free(done);
  }
  OK(etcdc_cq_free(cq));
}

static void permissions(etcdc_client *c) {
  etcdc_get_result *g = NULL;
  etcdc_watch *w = NULL;
  /* Outside the user's permission: refused, nothing read or written. */
  EXPECT(etcdc_put(c, S("/elsewhere"), S("v"), NULL, NULL), ETCDC_ERR_PERMISSION);
  EXPECT_MESSAGE("permission denied");
  EXPECT(etcdc_get(c, S("/elsewhere"), NULL, &g), ETCDC_ERR_PERMISSION);
  EXPECT(etcdc_watch_start(c, S("/elsewhere"), NULL, NULL, &w), ETCDC_ERR_PERMISSION);
}

static void refusals(void) {
  const char *user = getenv("ETCDC_USER");
  etcdc_client *c = NULL;

  OK(connect_as("ca.pem", "app", user, "wrong", &c));
  EXPECT(etcdc_put(c, S("/secure/k"), S("v"), NULL, NULL), ETCDC_ERR_AUTH);
  EXPECT_MESSAGE("authentication failed");
  OK(etcdc_client_free(c));

  /* No client certificate: the server ends the handshake. */
  OK(connect_as("ca.pem", NULL, user, getenv("ETCDC_PASSWORD"), &c));
  EXPECT(etcdc_put(c, S("/secure/k"), S("v"), NULL, NULL), ETCDC_ERR_UNAVAILABLE);
  EXPECT_MESSAGE("client certificate");
  OK(etcdc_client_free(c));

  /* A CA that did not sign the server's certificate. */
  OK(connect_as("other-ca.pem", "app", user, getenv("ETCDC_PASSWORD"), &c));
  EXPECT(etcdc_put(c, S("/secure/k"), S("v"), NULL, NULL), ETCDC_ERR_UNAVAILABLE);
  EXPECT_MESSAGE("not signed by a CA the client trusts");
  OK(etcdc_client_free(c));

  /* Bad user settings are refused where they are given. */
  etcdc_client_options *o = etcdc_client_options_new();
  EXPECT(etcdc_client_options_set_user(o, "", "x"), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_client_options_set_user(o, "app", NULL), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_client_options_set_user(NULL, "app", "x"), ETCDC_ERR_INVALID_ARGUMENT);
  OK(etcdc_client_options_set_user(o, NULL, NULL));
  etcdc_client_options_free(o);
}

/* A loopback port nobody listens on now. */
static int free_port(void) {
  int port = -1;
  int fd = loopback_listener(&port);
  if (fd >= 0) close(fd);
  return port;
}

static void embedded_node(void) {
  char dir[] = "/tmp/etcdc-secure-node-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char url[64];
  snprintf(url, sizeof url, "https://127.0.0.1:%d", free_port());
  etcdc_node_options *o = etcdc_node_options_new();
  OK(etcdc_node_options_set_data_dir(o, dir));
  OK(etcdc_node_options_set_timing_ms(o, 50, 300));
  OK(etcdc_node_options_set_listen_client_urls(o, url));
  OK(etcdc_node_options_set_advertise_client_urls(o, url));
  /* A certificate needs its key; client certificates need a CA to check them. */
  EXPECT(etcdc_node_options_set_client_tls(o, cert(0, "server.pem"), NULL, NULL, false),
         ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT(etcdc_node_options_set_client_tls(o, cert(0, "server.pem"), cert(1, "server-key.pem"), NULL, true),
         ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("trusted_ca_file");
  /* An https URL without a certificate does not start. */
  etcdc_node *n = NULL;
  EXPECT(etcdc_node_start(o, &n), ETCDC_ERR_INVALID_ARGUMENT);
  EXPECT_MESSAGE("--cert-file");
  OK(etcdc_node_options_set_client_tls(o, cert(0, "server.pem"), cert(1, "server-key.pem"),
                                       cert(2, "ca.pem"), true));
  OK(etcdc_node_start(o, &n));
  /* Users and roles as on etcd, with the real etcdctl (as root, by its certificate). */
  const char *setup[] = {"user add root --no-password", "role add root", "user grant-role root root",
                         "user add app:apppw", "role add app",
                         "role grant-permission app readwrite /secure/ --prefix", "user grant-role app app",
                         "auth enable"};
  for (size_t i = 0; i < sizeof setup / sizeof setup[0]; i++) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "ETCDCTL_API=3 etcdctl --endpoints %s --cacert %s --cert %s --key %s %s >/dev/null", url,
             cert(0, "ca.pem"), cert(1, "root.pem"), cert(2, "root-key.pem"), setup[i]);
    CHECK(system(cmd) == 0);
  }
  etcdc_client *c = NULL;
  OK(connect_to(url, "ca.pem", "app", "app", "apppw", &c));
  if (c) {
    everything_works(c);
    permissions(c);
    OK(etcdc_client_free(c));
  }
  OK(connect_to(url, "ca.pem", "app", "app", "wrong", &c));
  EXPECT(etcdc_put(c, S("/secure/k"), S("v"), NULL, NULL), ETCDC_ERR_AUTH);
  EXPECT_MESSAGE("authentication failed");
  OK(etcdc_client_free(c));
  OK(connect_to(url, "ca.pem", NULL, NULL, NULL, &c));
  EXPECT(etcdc_put(c, S("/secure/k"), S("v"), NULL, NULL), ETCDC_ERR_UNAVAILABLE);
  EXPECT_MESSAGE("client certificate");
  OK(etcdc_client_free(c));
  OK(etcdc_node_stop(n));
  etcdc_node_options_free(o);
  char cmd[sizeof dir + 16];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

int main(void) {
  etcdc_client *c = NULL;
  /* The CA, a client certificate and a user, all three. */
  OK(connect_as("ca.pem", "app", getenv("ETCDC_USER"), getenv("ETCDC_PASSWORD"), &c));
  if (c) {
    everything_works(c);
    permissions(c);
    OK(etcdc_client_free(c));
  }
  /* The certificate alone names the user (its common name), as etcd does. */
  OK(connect_as("ca.pem", "app", NULL, NULL, &c));
  if (c) {
    OK(etcdc_put(c, S("/secure/by-cn"), S("v"), NULL, NULL));
    EXPECT(etcdc_put(c, S("/elsewhere"), S("v"), NULL, NULL), ETCDC_ERR_PERMISSION);
    OK(etcdc_client_free(c));
  }
  refusals();
  embedded_node();
  return check_report("test_secure");
}
