/* Watching a prefix two ways: a callback on etcdc's event thread, and the pull form driven
 * by poll() as an epoll-based server would. Usage: watch [endpoints] */
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <etcdc.h>

#define KEY(s) (const uint8_t *)(s), strlen(s)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int seen = 0;

static void print_events(const char *who, const etcdc_watch_response *r) {
  for (size_t i = 0; i < etcdc_watch_response_len(r); i++) {
    const etcdc_event *e = etcdc_watch_response_event(r, i);
    size_t kn;
    const uint8_t *k = etcdc_kv_key(etcdc_event_kv(e), &kn);
    printf("[%s] %s %.*s at revision %" PRId64 "\n", who, etcdc_event_type(e) == ETCDC_EVENT_PUT ? "PUT" : "DELETE",
           (int)kn, (const char *)k, etcdc_kv_mod_revision(etcdc_event_kv(e)));
  }
}

static void on_change(void *user_data, const etcdc_watch_response *r) {
  (void)user_data;
  print_events("callback", r);
  pthread_mutex_lock(&mu);
  seen += (int)etcdc_watch_response_len(r);
  pthread_mutex_unlock(&mu);
}

int main(int argc, char **argv) {
  const char *endpoints = argc > 1 ? argv[1] : getenv("ETCDC_ENDPOINTS");
  etcdc_client *c = NULL;
  if (etcdc_client_connect(endpoints ? endpoints : "http://127.0.0.1:2379", NULL, &c) != ETCDC_OK) {
    fprintf(stderr, "connect: %s\n", etcdc_last_error());
    return 1;
  }
  etcdc_watch_options *o = etcdc_watch_options_new();
  etcdc_watch_options_set_prefix(o);

  etcdc_watch_callback cb = {on_change, NULL, NULL};
  etcdc_watch *pushed = NULL, *pulled = NULL;
  if (etcdc_watch_start(c, KEY("routes/"), o, &cb, &pushed) != ETCDC_OK ||
      etcdc_watch_start(c, KEY("routes/"), o, NULL, &pulled) != ETCDC_OK) {
    fprintf(stderr, "watch: %s\n", etcdc_last_error());
    return 1;
  }
  etcdc_watch_options_free(o);

  etcdc_put(c, KEY("routes/user-1"), KEY("msg_server-a"), NULL, NULL);
  etcdc_put(c, KEY("routes/user-2"), KEY("msg_server-b"), NULL, NULL);
  etcdc_delete(c, KEY("routes/user-1"), NULL, NULL);

  int fd = -1;
  etcdc_watch_fd(pulled, &fd);
  int pulled_events = 0;
  while (pulled_events < 3) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) break;
    etcdc_watch_response *r = NULL;
    while (etcdc_watch_next(pulled, 0, &r) == ETCDC_OK) {
      print_events("poll", r);
      pulled_events += (int)etcdc_watch_response_len(r);
      etcdc_watch_response_free(r);
    }
  }
  etcdc_watch_free(pulled);
  /* The callback runs on another thread: give it up to 5 s to see the same three events. */
  for (int i = 0; i < 50; i++) {
    pthread_mutex_lock(&mu);
    int n = seen;
    pthread_mutex_unlock(&mu);
    if (n >= 3) break;
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL);
  }
  etcdc_watch_free(pushed);
  etcdc_client_free(c);
  printf("callback saw %d events, poll saw %d\n", seen, pulled_events);
  return seen == 3 && pulled_events == 3 ? 0 : 1;
}
