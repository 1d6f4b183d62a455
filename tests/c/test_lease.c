/* Leases and the keeper through the C API: callback and pull form, lost and re-added. */
#include "common.h"

static void leases(etcdc_client *c) {
  int64_t id = 0, ttl = 0;
  OK(etcdc_lease_grant(c, 2, 0, 0, &id, &ttl));
  CHECK(id > 0 && ttl == 2);
  etcdc_put_options *po = etcdc_put_options_new();
  OK(etcdc_put_options_set_lease(po, id));
  OK(etcdc_put(c, S("svc/msg/10.0.0.9"), S("up"), po, NULL));
  etcdc_put_options_free(po);

  shared_state s;
  state_init(&s);
  etcdc_lease_callback cb;
  cb.call = on_lease;
  cb.drop = on_drop;
  cb.user_data = &s;
  etcdc_lease_keeper *k = NULL;
  OK(etcdc_lease_keeper_start(c, &cb, &k));
  OK(etcdc_lease_keeper_add(k, id));
  OK(etcdc_lease_keeper_add(k, id)); /* no-op */
  CHECK(wait_for(&s, &s.lease_alive, 1));
  sleep_ms(4000); /* twice the TTL */
  etcdc_lease_info *info = NULL;
  OK(etcdc_lease_time_to_live(c, id, true, 0, &info));
  CHECK(etcdc_lease_info_ttl(info) > 0);
  CHECK(etcdc_lease_info_granted_ttl(info) == 2);
  CHECK(etcdc_lease_info_keys_len(info) == 1);
  size_t n = 0;
  const uint8_t *key = etcdc_lease_info_key(info, 0, &n);
  CHECK(n == strlen("svc/msg/10.0.0.9") && memcmp(key, "svc/msg/10.0.0.9", n) == 0);
  etcdc_lease_info_free(info);

  etcdc_lease_list *list = NULL;
  OK(etcdc_leases(c, 0, &list));
  int found = 0;
  for (size_t i = 0; i < etcdc_lease_list_len(list); i++) found |= etcdc_lease_list_id(list, i) == id;
  CHECK(found);
  etcdc_lease_list_free(list);

  OK(etcdc_lease_revoke(c, id, 0));
  CHECK(wait_for(&s, &s.lease_lost, 1));
  OK(etcdc_lease_keeper_free(k));
  CHECK(s.drops == 1);

  /* Pull form: a lease that does not exist is reported lost. */
  OK(etcdc_lease_keeper_start(c, NULL, &k));
  OK(etcdc_lease_keeper_add(k, 0x5151));
  etcdc_lease_event *e = NULL;
  OK(etcdc_lease_keeper_next(k, 5000, &e));
  CHECK(etcdc_lease_event_id(e) == 0x5151);
  CHECK(etcdc_lease_event_state(e) == ETCDC_LEASE_LOST);
  CHECK(strlen(etcdc_lease_event_reason(e)) > 0);
  etcdc_lease_event_free(e);
  /* A lost lease leaves the keeper: granted anew under the same id, it can be kept again. */
  int64_t again = 0;
  OK(etcdc_lease_grant(c, 5, 0x5151, 0, &again, NULL));
  CHECK(again == 0x5151);
  OK(etcdc_lease_keeper_add(k, 0x5151));
  OK(etcdc_lease_keeper_next(k, 5000, &e));
  CHECK(etcdc_lease_event_state(e) == ETCDC_LEASE_ALIVE);
  CHECK(etcdc_lease_event_ttl(e) == 5);
  etcdc_lease_event_free(e);
  OK(etcdc_lease_keeper_free(k));
}

int main(void) {
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &c));
  leases(c);
  OK(etcdc_client_free(c));
  return check_report("test_lease");
}
