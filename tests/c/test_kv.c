/* Keys, values and transactions through the C API against a real etcd. */
#include "common.h"

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
  OK(etcdc_create(c, S("leader"), S("a"), NULL, NULL));
  EXPECT(etcdc_create(c, S("leader"), S("b"), NULL, NULL), ETCDC_ERR_COMPARE_FAILED);
  EXPECT(etcdc_cas(c, S("leader"), S("x"), S("b"), NULL, NULL), ETCDC_ERR_COMPARE_FAILED);
  /* (NULL, 0) is the empty value, as for every buffer: not "absent". */
  EXPECT(etcdc_cas(c, S("leader"), NULL, 0, S("b"), NULL, NULL), ETCDC_ERR_COMPARE_FAILED);
  OK(etcdc_put(c, S("empty"), NULL, 0, NULL, NULL));
  OK(etcdc_cas(c, S("empty"), NULL, 0, S("now set"), NULL, NULL));
  EXPECT(etcdc_cas(c, S("leader"), NULL, 3, S("b"), NULL, NULL), ETCDC_ERR_INVALID_ARGUMENT);
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

int main(void) {
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &c));
  keys_and_values(c);
  transactions(c);
  OK(etcdc_client_free(c));
  return check_report("test_kv");
}
