/* A host process that leaves SIGPIPE at its default disposition (most C programs do) must
 * never be killed by a write etcdc makes to a connection whose peer has gone (seen with
 * members SIGKILLed under load). Every thread etcdc starts blocks SIGPIPE: checked in /proc
 * (this check fails when the blocking is removed). Large puts to a server that resets every
 * connection must fail with a status, not a signal — also through a driven completion queue,
 * whose writes are made on the caller's thread. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

/* Accepts connections, reads a little, and resets them (SO_LINGER 0). */
static void *resetting_server(void *arg) {
  int listener = *(int *)arg;
  for (;;) {
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) return NULL;
    char buf[4096];
    if (read(fd, buf, sizeof buf) < 0) {
      close(fd);
      continue;
    }
    struct linger l;
    l.l_onoff = 1;
    l.l_linger = 0;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
  }
}

/* Accepts connections and closes them at once: the client's next writes meet EPIPE. */
static void *closing_server(void *arg) {
  int listener = *(int *)arg;
  for (;;) {
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) return NULL;
    close(fd);
  }
}

/* A loopback listener served by `serve` on its own thread; its URL goes to `endpoint`. */
static void serve_on_loopback(void *(*serve)(void *), int *listener, char *endpoint, size_t len) {
  *listener = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(*listener, (struct sockaddr *)&a, sizeof a) == 0);
  CHECK(listen(*listener, 64) == 0);
  socklen_t alen = sizeof a;
  CHECK(getsockname(*listener, (struct sockaddr *)&a, &alen) == 0);
  pthread_t server;
  CHECK(pthread_create(&server, NULL, serve, listener) == 0);
  snprintf(endpoint, len, "http://127.0.0.1:%d", ntohs(a.sin_port));
}

/* True if every thread named etcdc-* has SIGPIPE (bit 13) in its blocked mask. */
static int etcdc_threads_block_sigpipe(int *seen) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return 0;
  int ok = 1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[300], comm[64] = "", line[256];
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (!fgets(comm, sizeof comm, f)) comm[0] = '\0';
    fclose(f);
    if (strncmp(comm, "etcdc-", 6) != 0) continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
    f = fopen(path, "r");
    if (!f) continue;
    while (fgets(line, sizeof line, f)) {
      if (strncmp(line, "SigBlk:", 7) == 0) {
        unsigned long long mask = strtoull(line + 7, NULL, 16);
        (*seen)++;
        if (!(mask & (1ULL << (SIGPIPE - 1)))) {
          fprintf(stderr, "thread %s (%.*s) does not block SIGPIPE\n", e->d_name, (int)strcspn(comm, "\n"), comm);
          ok = 0;
        }
      }
    }
    fclose(f);
  }
  closedir(d);
  return ok;
}

int main(void) {
  signal(SIGPIPE, SIG_DFL);

  static int resetting, closing;
  char endpoint[64], closing_endpoint[64];
  serve_on_loopback(resetting_server, &resetting, endpoint, sizeof endpoint);
  serve_on_loopback(closing_server, &closing, closing_endpoint, sizeof closing_endpoint);
  etcdc_client *c = NULL;
  OK(etcdc_client_connect(endpoint, NULL, &c));
  etcdc_put_options *o = etcdc_put_options_new();
  OK(etcdc_put_options_set_timeout_ms(o, 300));
  static uint8_t value[1 << 20];
  memset(value, 'v', sizeof value);
  for (int i = 0; i < 30; i++) {
    etcdc_status s = etcdc_put(c, S("k"), value, sizeof value, o, NULL);
    CHECK(s != ETCDC_OK);
  }

  /* A driven queue writes on this thread: the same puts through one, to both servers (the
   * closing one raised SIGPIPE here in every run before the queue blocked it), and then this
   * thread's mask is as it was, with no SIGPIPE left pending. */
  etcdc_client *closed = NULL;
  OK(etcdc_client_connect(closing_endpoint, NULL, &closed));
  etcdc_cq *cq = NULL;
  OK(etcdc_cq_new_driven(&cq));
  for (int i = 0; i < 60; i++) {
    OK(etcdc_put_async(i % 2 ? closed : c, S("k"), value, sizeof value, o, cq, NULL, NULL));
    etcdc_completion *done = NULL;
    OK(etcdc_cq_next(cq, 5000, &done));
    CHECK(etcdc_completion_status(done) != ETCDC_OK);
    etcdc_completion_free(done);
  }
  OK(etcdc_cq_free(cq));
  OK(etcdc_client_free(closed));
  sigset_t mask, pending;
  CHECK(pthread_sigmask(SIG_BLOCK, NULL, &mask) == 0 && !sigismember(&mask, SIGPIPE));
  CHECK(sigpending(&pending) == 0 && !sigismember(&pending, SIGPIPE));
  etcdc_put_options_free(o);

  /* The event thread too: it runs callbacks, and starts with the first push stream. */
  etcdc_client *real = NULL;
  OK(etcdc_client_connect(endpoints_from_env(), NULL, &real));
  etcdc_watch_callback cb;
  shared_state st;
  state_init(&st);
  cb.call = on_watch;
  cb.drop = NULL;
  cb.user_data = &st;
  etcdc_watch *w = NULL;
  OK(etcdc_watch_start(real, S("sigpipe"), NULL, &cb, &w));
  int seen = 0;
  CHECK(etcdc_threads_block_sigpipe(&seen));
  CHECK(seen >= 2); /* runtime workers and the event thread */
  OK(etcdc_watch_free(w));
  OK(etcdc_client_free(real));
  OK(etcdc_client_free(c));
  return check_report("test_sigpipe");
}
