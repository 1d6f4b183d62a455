/* Keys, values and compare-and-swap: a counter that several processes could increment
 * safely, and a "create only if absent" registration. Usage: kv_txn [endpoints] */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <etcdc.h>

#define KEY(s) (const uint8_t *)(s), strlen(s)

static int fail(const char *what, etcdc_status s) {
  fprintf(stderr, "%s: %s: %s\n", what, etcdc_status_str(s), etcdc_last_error());
  return 1;
}

/* Increments the decimal counter at `key` with an optimistic transaction: read it, then
 * write only if nobody changed it since (same mod revision); retry otherwise. */
static etcdc_status increment(etcdc_client *c, const char *key, long *out) {
  for (;;) {
    etcdc_get_result *g = NULL;
    etcdc_status s = etcdc_get(c, KEY(key), NULL, &g);
    if (s != ETCDC_OK) return s;
    long value = 0;
    int64_t mod = 0;
    if (etcdc_get_result_len(g) == 1) {
      const etcdc_kv *kv = etcdc_get_result_kv(g, 0);
      size_t n = 0;
      const uint8_t *v = etcdc_kv_value(kv, &n);
      char buf[32] = {0};
      memcpy(buf, v, n < sizeof buf - 1 ? n : sizeof buf - 1);
      value = strtol(buf, NULL, 10);
      mod = etcdc_kv_mod_revision(kv);
    }
    etcdc_get_result_free(g);

    char next[32];
    snprintf(next, sizeof next, "%ld", value + 1);
    etcdc_txn *t = etcdc_txn_new();
    etcdc_txn_compare_mod_revision(t, KEY(key), ETCDC_CMP_EQUAL, mod);
    etcdc_txn_put(t, ETCDC_TXN_THEN, KEY(key), KEY(next), NULL);
    etcdc_txn_result *r = NULL;
    s = etcdc_txn_commit(c, t, &r);
    etcdc_txn_free(t);
    if (s != ETCDC_OK) return s;
    bool won = etcdc_txn_result_succeeded(r);
    etcdc_txn_result_free(r);
    if (won) {
      *out = value + 1;
      return ETCDC_OK;
    }
  }
}

int main(int argc, char **argv) {
  const char *endpoints = argc > 1 ? argv[1] : getenv("ETCDC_ENDPOINTS");
  etcdc_client *c = NULL;
  etcdc_status s = etcdc_client_connect(endpoints ? endpoints : "http://127.0.0.1:2379", NULL, &c);
  if (s != ETCDC_OK) return fail("connect", s);

  long v = 0;
  for (int i = 0; i < 5; i++) {
    if ((s = increment(c, "example/counter", &v)) != ETCDC_OK) return fail("increment", s);
  }
  printf("counter = %ld\n", v);

  /* Create-if-absent: the first registration wins, the second is told so. */
  s = etcdc_create(c, KEY("example/owner"), KEY("login_server-1"), NULL, NULL);
  if (s != ETCDC_OK) return fail("first claim", s);
  s = etcdc_create(c, KEY("example/owner"), KEY("login_server-2"), NULL, NULL);
  printf("second claim: %s\n", etcdc_status_str(s));
  if (s != ETCDC_ERR_COMPARE_FAILED) return fail("second claim should fail", s);

  /* Read a whole prefix, sorted by key. */
  etcdc_get_options *o = etcdc_get_options_new();
  etcdc_get_options_set_prefix(o);
  etcdc_get_options_set_sort(o, ETCDC_SORT_BY_KEY, ETCDC_SORT_ASCEND);
  etcdc_get_result *g = NULL;
  s = etcdc_get(c, KEY("example/"), o, &g);
  etcdc_get_options_free(o);
  if (s != ETCDC_OK) return fail("get prefix", s);
  for (size_t i = 0; i < etcdc_get_result_len(g); i++) {
    const etcdc_kv *kv = etcdc_get_result_kv(g, i);
    size_t kn, vn;
    const uint8_t *k = etcdc_kv_key(kv, &kn), *val = etcdc_kv_value(kv, &vn);
    printf("%.*s = %.*s (version %" PRId64 ")\n", (int)kn, (const char *)k, (int)vn, (const char *)val,
           etcdc_kv_version(kv));
  }
  size_t n = etcdc_get_result_len(g);
  etcdc_get_result_free(g);
  etcdc_client_free(c);
  return (v == 5 && n == 2) ? 0 : 1;
}
