/* Service registration and discovery: two login servers register under /login_servers, a
 * msg server discovers them, picks one per request, and sees one leave.
 * Usage: discovery [endpoints] */
#include <stdio.h>
#include <stdlib.h>

#include <etcdc.h>

static int fail(const char *what, etcdc_status s) {
  fprintf(stderr, "%s: %s: %s\n", what, etcdc_status_str(s), etcdc_last_error());
  return 1;
}

int main(int argc, char **argv) {
  const char *endpoints = argc > 1 ? argv[1] : getenv("ETCDC_ENDPOINTS");
  etcdc_client *c = NULL;
  etcdc_status s = etcdc_client_connect(endpoints ? endpoints : "http://127.0.0.1:2379", NULL, &c);
  if (s != ETCDC_OK) return fail("connect", s);

  /* Each login server: its key lives while its process does (lease TTL 5 s). */
  etcdc_registration_options *o = etcdc_registration_options_new();
  etcdc_registration_options_set_ttl(o, 5);
  etcdc_registration *a = NULL, *b = NULL;
  if ((s = etcdc_register(c, "/login_servers", "0001-0001", "127.0.0.1:8001", o, NULL, &a)) != ETCDC_OK)
    return fail("register a", s);
  etcdc_registration_options_set_metadata(o, "{\"weight\":3}");
  if ((s = etcdc_register(c, "/login_servers", "0001-0002", "127.0.0.1:8002", o, NULL, &b)) != ETCDC_OK)
    return fail("register b", s);
  etcdc_registration_options_free(o);

  /* The msg server: a table of login servers, kept current by a watch. */
  etcdc_discovery *d = NULL;
  if ((s = etcdc_discover(c, "/login_servers", NULL, &d)) != ETCDC_OK) return fail("discover", s);
  etcdc_discovery_event *e = NULL;
  for (int seen = 0; seen < 2 && etcdc_discovery_next(d, 5000, &e) == ETCDC_OK; seen++) {
    const etcdc_instance *i = etcdc_discovery_event_instance(e);
    printf("added %s at %s (metadata %s)\n", etcdc_instance_id(i), etcdc_instance_addr(i), etcdc_instance_metadata(i));
    etcdc_discovery_event_free(e);
  }
  for (int request = 0; request < 4; request++) {
    etcdc_instance *i = NULL;
    if ((s = etcdc_discovery_pick(d, ETCDC_PICK_ROUND_ROBIN, &i)) != ETCDC_OK) return fail("pick", s);
    printf("request %d -> %s\n", request, etcdc_instance_addr(i));
    etcdc_instance_free(i);
  }

  /* A login server leaves: the table follows. */
  etcdc_registration_free(a);
  if ((s = etcdc_discovery_next(d, 5000, &e)) != ETCDC_OK) return fail("next", s);
  int removed = etcdc_discovery_event_change(e) == ETCDC_INSTANCE_REMOVED;
  printf("removed %s\n", etcdc_instance_id(etcdc_discovery_event_instance(e)));
  etcdc_discovery_event_free(e);
  etcdc_instance *left = NULL;
  if ((s = etcdc_discovery_pick(d, ETCDC_PICK_WEIGHTED, &left)) != ETCDC_OK) return fail("pick", s);
  int ok = removed && left && etcdc_instance_weight(left) == 3;
  printf("now every request goes to %s\n", etcdc_instance_addr(left));
  etcdc_instance_free(left);

  etcdc_discovery_free(d);
  etcdc_registration_free(b);
  etcdc_client_free(c);
  return ok ? 0 : 1;
}
