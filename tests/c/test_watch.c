/* Watches through the C API: callback (free from inside it too) and pull with poll. */
#include <poll.h>
#include "common.h"

static void watch_with_callback(etcdc_client *c) {
  shared_state s;
  state_init(&s);
  etcdc_watch_callback cb;
  cb.call = on_watch;
  cb.drop = on_drop;
  cb.user_data = &s;
  etcdc_watch_options *o = etcdc_watch_options_new();
  OK(etcdc_watch_options_set_prefix(o));
  OK(etcdc_watch_options_set_prev_kv(o, true));
  etcdc_watch *w = NULL;
  OK(etcdc_watch_start(c, S("w/"), o, &cb, &w));
  for (int i = 0; i < 50; i++) {
    char key[16];
    snprintf(key, sizeof key, "w/%d", i % 7);
    OK(etcdc_put(c, S(key), S("v"), NULL, NULL));
  }
  CHECK(wait_for(&s, &s.events, 50));
  CHECK(s.in_order);
  OK(etcdc_watch_request_progress(w));
  OK(etcdc_watch_free(w));
  CHECK(s.drops == 1); /* free waited for drop */
  int calls = s.calls;
  OK(etcdc_put(c, S("w/after"), S("v"), NULL, NULL));
  sleep_ms(200);
  CHECK(s.calls == calls); /* nothing after free */

  /* Freed from inside its own callback: no deadlock, drop exactly once after the call. */
  shared_state s2;
  state_init(&s2);
  cb.user_data = &s2;
  etcdc_watch *w2 = NULL;
  OK(etcdc_watch_start(c, S("w/"), o, &cb, &w2));
  pthread_mutex_lock(&s2.mu);
  s2.self = w2;
  pthread_mutex_unlock(&s2.mu);
  OK(etcdc_put(c, S("w/x"), S("1"), NULL, NULL));
  CHECK(wait_for(&s2, &s2.drops, 1));
  OK(etcdc_put(c, S("w/x"), S("2"), NULL, NULL));
  sleep_ms(200);
  CHECK(s2.calls == 1);
  CHECK(s2.drops == 1);
  EXPECT(etcdc_watch_free(w2), ETCDC_ERR_INVALID_ARGUMENT);
  etcdc_watch_options_free(o);
}

static void watch_pull_with_poll(etcdc_client *c) {
  etcdc_watch *w = NULL;
  OK(etcdc_watch_start(c, S("pull"), NULL, NULL, &w));
  int fd = -1;
  OK(etcdc_watch_fd(w, &fd));
  CHECK(fd >= 0);
  etcdc_watch_response *r = NULL;
  EXPECT(etcdc_watch_next(w, 0, &r), ETCDC_ERR_TIMEOUT);
  struct pollfd pfd;
  pfd.fd = fd;
  pfd.events = POLLIN;
  pfd.revents = 0;
  CHECK(poll(&pfd, 1, 0) == 0);
  OK(etcdc_put(c, S("pull"), S("1"), NULL, NULL));
  OK(etcdc_put(c, S("pull"), S("2"), NULL, NULL));
  CHECK(poll(&pfd, 1, 5000) == 1);
  int got = 0;
  while (got < 2 && etcdc_watch_next(w, 5000, &r) == ETCDC_OK) {
    CHECK(etcdc_watch_response_kind(r) == ETCDC_WATCH_EVENTS);
    for (size_t i = 0; i < etcdc_watch_response_len(r); i++) {
      const etcdc_event *e = etcdc_watch_response_event(r, i);
      CHECK(etcdc_event_type(e) == ETCDC_EVENT_PUT);
      CHECK(value_is(etcdc_event_kv(e), got == 0 ? "1" : "2"));
      got++;
    }
    etcdc_watch_response *kept = etcdc_watch_response_clone(r);
    etcdc_watch_response_free(r);
    CHECK(etcdc_watch_response_len(kept) >= 1);
    etcdc_watch_response_free(kept);
  }
  CHECK(got == 2);
  pfd.revents = 0;
  CHECK(poll(&pfd, 1, 0) == 0); /* drained: no longer readable */
  OK(etcdc_watch_free(w));
}

int main(void) {
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &c));
  watch_with_callback(c);
  watch_pull_with_poll(c);
  OK(etcdc_client_free(c));
  return check_report("test_watch");
}
