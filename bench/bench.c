/* etcdc benchmark driver. One row per run:
 *   impl op callers ops qps p50_us p99_us
 * impl: "etcdc" (the C ABI) or "v2curl" (etcd's v2 HTTP API through libcurl, as cetcd did).
 * op: put (64-byte values); range (one key, linearizable; v2: ?quorum=true); srange (one key,
 * served locally: v3 serializable, v2's default GET); watch (put-to-event latency of one
 * watcher while `callers` threads put; for the asynchronous impls the watch is pulled through
 * the same queue as the puts, and on a driven queue it runs there too, unless
 * BENCH_WATCH_ON_RUNTIME=1).
 * Usage: etcdc_bench IMPL OP CALLERS SECONDS ENDPOINT */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <etcdc.h>

static const char *impl, *op, *endpoint;
static int seconds;
static etcdc_client *client;
static atomic_int stop_flag = 0;
static atomic_int recording = 0; /* samples count only inside the measured window */

typedef struct {
  int id;
  uint64_t *lat; /* nanoseconds */
  size_t n, cap;
  int errors;
} worker;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void record(worker *w, uint64_t ns) {
  if (!atomic_load(&recording)) return;
  if (w->n == w->cap) {
    w->cap = w->cap ? w->cap * 2 : 4096;
    w->lat = (uint64_t *)realloc(w->lat, w->cap * sizeof *w->lat);
  }
  w->lat[w->n++] = ns;
}

static size_t discard(void *p, size_t s, size_t n, void *u) {
  (void)p;
  (void)u;
  return s * n;
}

static void value_with_time(char *value, size_t len) {
  memset(value, 'x', len);
  snprintf(value, len, "%020" PRIu64, now_ns());
  value[20] = 'x';
}

static int is_range(void) { return strcmp(op, "range") == 0 || strcmp(op, "srange") == 0; }

static void *run_etcdc(void *arg) {
  worker *w = (worker *)arg;
  char key[64], value[64];
  int i = 0;
  etcdc_get_options *serializable = etcdc_get_options_new();
  etcdc_get_options_set_serializable(serializable, true);
  const etcdc_get_options *get_opts = strcmp(op, "srange") == 0 ? serializable : NULL;
  while (!atomic_load(&stop_flag)) {
    snprintf(key, sizeof key, "bench/%d/%d", w->id, i++ % 1000);
    uint64_t t0 = now_ns();
    etcdc_status s;
    if (is_range()) {
      etcdc_get_result *r = NULL;
      s = etcdc_get(client, (const uint8_t *)"bench/range", 11, get_opts, &r);
      etcdc_get_result_free(r);
    } else {
      value_with_time(value, sizeof value);
      s = etcdc_put(client, (const uint8_t *)key, strlen(key), (const uint8_t *)value, sizeof value, NULL, NULL);
    }
    if (s != ETCDC_OK) {
      if (w->errors++ < 3) fprintf(stderr, "etcdc: %s: %s\n", etcdc_status_str(s), etcdc_last_error());
      continue;
    }
    if (strcmp(op, "watch") != 0) record(w, now_ns() - t0);
  }
  etcdc_get_options_free(serializable);
  return NULL;
}

static void *run_v2(void *arg) {
  worker *w = (worker *)arg;
  CURL *h = curl_easy_init();
  char url[256], body[128], value[64];
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  int i = 0;
  while (!atomic_load(&stop_flag)) {
    if (is_range()) {
      snprintf(url, sizeof url, "%s/v2/keys/bench/range%s", endpoint, strcmp(op, "range") == 0 ? "?quorum=true" : "");
      curl_easy_setopt(h, CURLOPT_URL, url);
      curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
      snprintf(url, sizeof url, "%s/v2/keys/bench/%d/%d", endpoint, w->id, i++ % 1000);
      value_with_time(value, sizeof value);
      snprintf(body, sizeof body, "value=%.*s", (int)sizeof value - 1, value);
      curl_easy_setopt(h, CURLOPT_URL, url);
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    }
    uint64_t t0 = now_ns();
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    if (rc != CURLE_OK || code >= 300) {
      if (w->errors++ < 3) fprintf(stderr, "v2: %s, HTTP %ld\n", curl_easy_strerror(rc), code);
      continue;
    }
    record(w, now_ns() - t0);
  }
  curl_easy_cleanup(h);
  return NULL;
}

/* The watch's latencies: from the time a putter stamped into the value to the event. */
static worker watch_latencies;
static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;

static void record_events(const etcdc_watch_response *r) {
  uint64_t now = now_ns();
  pthread_mutex_lock(&watch_mu);
  for (size_t i = 0; i < etcdc_watch_response_len(r); i++) {
    size_t n = 0;
    const uint8_t *v = etcdc_kv_value(etcdc_event_kv(etcdc_watch_response_event(r, i)), &n);
    if (n >= 20) {
      char stamp[21];
      memcpy(stamp, v, 20);
      stamp[20] = 0;
      record(&watch_latencies, now - strtoull(stamp, NULL, 10));
    }
  }
  pthread_mutex_unlock(&watch_mu);
}

/* etcdc's asynchronous API: one thread keeps `inflight` calls going through a completion
 * queue (etcdc-driven: a driven queue, the calls' I/O on this thread; etcdc-epoll: the same
 * queue in an epoll loop, sleeping on its fd and taking completions without waiting); each
 * call's tag is its start time. */
static int async_inflight;
static int async_driven;
static int async_epoll;

/* The next completion: waited for inside etcdc_cq_next, or as an epoll loop takes it. */
static etcdc_status next_completion(etcdc_cq *cq, int ep, etcdc_completion **c) {
  if (ep < 0) return etcdc_cq_next(cq, -1, c);
  for (;;) {
    etcdc_status s = etcdc_cq_next(cq, 0, c);
    if (s != ETCDC_ERR_TIMEOUT) return s;
    struct epoll_event ev;
    if (epoll_wait(ep, &ev, 1, -1) < 0 && errno != EINTR) return ETCDC_ERR_INTERNAL;
  }
}

static void *run_async(void *arg) {
  worker *w = (worker *)arg;
  etcdc_cq *cq = NULL;
  if ((async_driven ? etcdc_cq_new_driven(&cq) : etcdc_cq_new(NULL, &cq)) != ETCDC_OK) return NULL;
  int ep = -1, fd = -1;
  if (async_epoll) {
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (ep < 0 || etcdc_cq_fd(cq, &fd) != ETCDC_OK || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) return NULL;
  }
  etcdc_get_options *serializable = etcdc_get_options_new();
  etcdc_get_options_set_serializable(serializable, true);
  const etcdc_get_options *get_opts = strcmp(op, "srange") == 0 ? serializable : NULL;
  /* The watch: its responses are one more operation in the queue, tagged with its handle. */
  etcdc_watch *watch = NULL;
  if (strcmp(op, "watch") == 0) {
    etcdc_watch_options *o = etcdc_watch_options_new();
    etcdc_watch_options_set_prefix(o);
    const char *on_runtime = getenv("BENCH_WATCH_ON_RUNTIME");
    if (!(on_runtime && strcmp(on_runtime, "1") == 0)) etcdc_watch_options_set_queue(o, cq);
    etcdc_status s = etcdc_watch_start(client, (const uint8_t *)"bench/", 6, o, NULL, &watch);
    etcdc_watch_options_free(o);
    if (s != ETCDC_OK || etcdc_watch_next_async(watch, cq, watch, NULL) != ETCDC_OK) {
      fprintf(stderr, "etcdc async watch: %s\n", etcdc_last_error());
      w->errors++;
      return NULL;
    }
  }
  char key[64], value[64];
  int i = 0, inflight = 0;
  for (;;) {
    while (inflight < async_inflight && !atomic_load(&stop_flag)) {
      void *tag = (void *)(uintptr_t)now_ns();
      etcdc_status s;
      if (is_range()) {
        s = etcdc_get_async(client, (const uint8_t *)"bench/range", 11, get_opts, cq, tag, NULL);
      } else {
        snprintf(key, sizeof key, "bench/a/%d", i++ % 1000);
        value_with_time(value, sizeof value);
        s = etcdc_put_async(client, (const uint8_t *)key, strlen(key), (const uint8_t *)value, sizeof value, NULL, cq, tag, NULL);
      }
      if (s != ETCDC_OK) {
        if (w->errors++ < 3) fprintf(stderr, "etcdc async: %s\n", etcdc_last_error());
        break;
      }
      inflight++;
    }
    if (inflight == 0) break;
    etcdc_completion *c = NULL;
    if (next_completion(cq, ep, &c) != ETCDC_OK) break;
    if (watch && etcdc_completion_tag(c) == watch) {
      const etcdc_watch_response *r = etcdc_completion_watch_response(c);
      if (r) record_events(r);
      etcdc_completion_free(c);
      if (!r || etcdc_watch_next_async(watch, cq, watch, NULL) != ETCDC_OK) break;
      continue;
    }
    inflight--;
    if (etcdc_completion_status(c) != ETCDC_OK) {
      if (w->errors++ < 3) fprintf(stderr, "etcdc async: %s\n", etcdc_completion_message(c));
    } else if (strcmp(op, "watch") != 0) {
      record(w, now_ns() - (uint64_t)(uintptr_t)etcdc_completion_tag(c));
    }
    etcdc_completion_free(c);
  }
  etcdc_get_options_free(serializable);
  etcdc_watch_free(watch);
  etcdc_cq_free(cq);
  if (ep >= 0) close(ep);
  return NULL;
}

static void on_watch(void *user_data, const etcdc_watch_response *r) {
  (void)user_data;
  record_events(r);
}

/* CPU time this process has used, user + system, in microseconds. */
static double cpu_us(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 + (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s etcdc|etcdc-async|etcdc-driven|etcdc-epoll|v2curl put|range|srange|watch CALLERS SECONDS ENDPOINT\n", argv[0]);
    return 2;
  }
  impl = argv[1];
  op = argv[2];
  int callers = atoi(argv[3]);
  seconds = atoi(argv[4]);
  endpoint = argv[5];
  int v2 = strcmp(impl, "v2curl") == 0;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  etcdc_runtime_set_threads(2);
  if (etcdc_client_connect(endpoint, NULL, &client) != ETCDC_OK) {
    fprintf(stderr, "connect: %s\n", etcdc_last_error());
    return 1;
  }
  etcdc_put(client, (const uint8_t *)"bench/range", 11, (const uint8_t *)"0123456789abcdef", 16, NULL, NULL);
  if (v2) {
    /* v2 has its own keyspace: seed the key the range op reads. */
    CURL *h = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "%s/v2/keys/bench/range", endpoint);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "value=0123456789abcdef");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_perform(h);
    curl_easy_cleanup(h);
  }

  /* etcdc-async and -driven: one thread with CALLERS calls in flight; the others: CALLERS
   * threads. */
  async_epoll = strcmp(impl, "etcdc-epoll") == 0;
  async_driven = async_epoll || strcmp(impl, "etcdc-driven") == 0;
  int async = async_driven || strcmp(impl, "etcdc-async") == 0;
  int watching = strcmp(op, "watch") == 0;
  etcdc_watch *watch = NULL;
  if (watching && !async) {
    if (v2) return 3; /* v2's long-poll watch is not comparable: no row */
    etcdc_watch_options *o = etcdc_watch_options_new();
    etcdc_watch_options_set_prefix(o);
    etcdc_watch_callback cb = {on_watch, NULL, NULL};
    if (etcdc_watch_start(client, (const uint8_t *)"bench/", 6, o, &cb, &watch) != ETCDC_OK) return 1;
    etcdc_watch_options_free(o);
  }

  int report_callers = callers;
  if (async) {
    async_inflight = callers;
    callers = 1;
  }
  worker *ws = (worker *)calloc((size_t)callers, sizeof *ws);
  pthread_t *ts = (pthread_t *)calloc((size_t)callers, sizeof *ts);
  for (int i = 0; i < callers; i++) {
    ws[i].id = i;
    pthread_create(&ts[i], NULL, v2 ? run_v2 : async ? run_async : run_etcdc, &ws[i]);
  }
  struct timespec warm = {1, 0};
  nanosleep(&warm, NULL); /* warm-up: connections, first requests */
  atomic_store(&recording, 1);
  uint64_t t0 = now_ns();
  double cpu0 = cpu_us();
  struct timespec run = {seconds, 0};
  nanosleep(&run, NULL);
  atomic_store(&recording, 0);
  double cpu = cpu_us() - cpu0;
  double elapsed = (double)(now_ns() - t0) / 1e9;
  atomic_store(&stop_flag, 1);
  for (int i = 0; i < callers; i++) pthread_join(ts[i], NULL);
  if (watch) etcdc_watch_free(watch); /* waits for a running callback: samples are final */
  int errors = 0;
  for (int i = 0; i < callers; i++) errors += ws[i].errors;
  worker *sources = watching ? &watch_latencies : ws;
  int nsources = watching ? 1 : callers;
  size_t total = 0;
  for (int i = 0; i < nsources; i++) total += sources[i].n;
  uint64_t *all = (uint64_t *)malloc((total ? total : 1) * sizeof *all);
  size_t k = 0;
  for (int i = 0; i < nsources; i++) {
    if (sources[i].n) memcpy(all + k, sources[i].lat, sources[i].n * sizeof *all);
    k += sources[i].n;
  }

  qsort(all, total, sizeof *all, cmp_u64);
  double p50 = total ? (double)all[total / 2] / 1e3 : 0;
  double p99 = total ? (double)all[(size_t)((double)total * 0.99)] / 1e3 : 0;
  /* Client CPU per operation: the whole process (callers, etcdc's runtime, event thread). */
  printf("%s %s %d %zu %.0f %.0f %.0f %d %.1f\n", impl, op, report_callers, total, (double)total / elapsed, p50, p99, errors,
         total ? cpu / (double)total : 0);
  for (int i = 0; i < callers; i++) free(ws[i].lat);
  free(watch_latencies.lat);
  free(all);
  free(ws);
  free(ts);
  etcdc_client_free(client);
  curl_global_cleanup();
  return 0;
}
