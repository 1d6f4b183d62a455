/* etcd v3 from C with libcurl alone, over etcd's JSON gateway (POST /v3/...): the way off
 * the v2 HTTP API for a service that keeps its libcurl code and takes no gRPC. Works the
 * same against etcd 3.4 and etcdc-node. Keys and values travel as base64, 64-bit numbers
 * as JSON strings.
 *
 *   gateway_curl [http://127.0.0.1:2379]     (default: the first of $ETCDC_ENDPOINTS)
 *
 * put, get, compare-and-swap, a key under a lease kept alive, and a watch read as a stream
 * inside a curl_multi loop while puts go on: three events, each printed as it arrives. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64(const char *in, char *out) {
  size_t n = strlen(in), o = 0;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned char)in[i] << 16;
    if (i + 1 < n) v |= (unsigned char)in[i + 1] << 8;
    if (i + 2 < n) v |= (unsigned char)in[i + 2];
    out[o++] = B64[v >> 18 & 63];
    out[o++] = B64[v >> 12 & 63];
    out[o++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? B64[v & 63] : '=';
  }
  out[o] = 0;
}

static void unb64(const char *in, size_t n, char *out) {
  unsigned v = 0, bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < n && in[i] != '='; i++) {
    const char *p = strchr(B64, in[i]);
    if (!p) break;
    v = v << 6 | (unsigned)(p - B64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (char)(v >> bits & 0xff);
    }
  }
  out[o] = 0;
}

/* The string value of the first "field":"..." at or after `from` (NULL if none); `end`
 * gets where it ended. Enough for the gateway's answers: keys, values and numbers (which
 * the gateway writes as strings) never hold a quote. */
static const char *field(const char *from, const char *name, char *out, size_t cap,
                         const char **end) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":\"", name);
  const char *p = strstr(from, pat);
  if (!p) return NULL;
  p += strlen(pat);
  const char *q = strchr(p, '"');
  if (!q || (size_t)(q - p) >= cap) return NULL;
  memcpy(out, p, (size_t)(q - p));
  out[q - p] = 0;
  if (end) *end = q;
  return out;
}

struct buf {
  char *data;
  size_t len;
};

static size_t collect(char *p, size_t size, size_t n, void *user) {
  struct buf *b = user;
  char *grown = realloc(b->data, b->len + size * n + 1);
  if (!grown) return 0;
  b->data = grown;
  memcpy(b->data + b->len, p, size * n);
  b->len += size * n;
  b->data[b->len] = 0;
  return size * n;
}

static const char *endpoint;

/* POSTs `json` to `path`; the answer's body in `out` (free it). 0 on HTTP 200. */
static int call(const char *path, const char *json, struct buf *out) {
  char url[512];
  snprintf(url, sizeof url, "%s%s", endpoint, path);
  out->data = calloc(1, 1);
  out->len = 0;
  CURL *c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(c);
  if (rc != CURLE_OK) {
    fprintf(stderr, "%s: %s\n", url, curl_easy_strerror(rc));
    return -1;
  }
  if (status != 200) {
    fprintf(stderr, "%s: HTTP %ld %s\n", url, status, out->data);
    return -1;
  }
  return 0;
}

static int put(const char *key, const char *value, const char *lease, char *revision) {
  char k[256], v[256], json[768];
  b64(key, k);
  b64(value, v);
  snprintf(json, sizeof json, "{\"key\":\"%s\",\"value\":\"%s\",\"lease\":\"%s\"}", k, v,
           lease ? lease : "0");
  struct buf out;
  int rc = call("/v3/kv/put", json, &out);
  if (rc == 0 && revision && !field(out.data, "revision", revision, 32, NULL)) rc = -1;
  free(out.data);
  return rc;
}

/* The watch stream: complete lines are taken as they arrive; each event is printed. */
struct watch {
  struct buf pending;
  int events;
};

static size_t on_watch(char *p, size_t size, size_t n, void *user) {
  struct watch *w = user;
  if (collect(p, size, n, &w->pending) != size * n) return 0;
  char *line;
  while ((line = w->pending.data) && strchr(line, '\n')) {
    char *nl = strchr(line, '\n');
    *nl = 0;
    const char *at = line;
    char key[256], value[256], rev[32], text[256], ktext[256];
    while (field(at, "key", key, sizeof key, &at) && field(at, "mod_revision", rev, sizeof rev, NULL) &&
           field(at, "value", value, sizeof value, &at)) {
      unb64(key, strlen(key), ktext);
      unb64(value, strlen(value), text);
      printf("watch: %s = %s at revision %s\n", ktext, text, rev);
      w->events++;
    }
    size_t used = (size_t)(nl - line) + 1;
    memmove(w->pending.data, nl + 1, w->pending.len - used + 1);
    w->pending.len -= used;
  }
  return size * n;
}

int main(int argc, char **argv) {
  static char first[256];
  const char *env = getenv("ETCDC_ENDPOINTS");
  if (argc > 1) {
    endpoint = argv[1];
  } else if (env) {
    snprintf(first, sizeof first, "%.*s", (int)strcspn(env, ","), env);
    endpoint = first;
  } else {
    endpoint = "http://127.0.0.1:2379";
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  char rev[32], key[64], value[256], json[2048], b[256], c[256];
  struct buf out;

  if (put("/chat/gw/config", "v1", NULL, rev)) return 1;
  printf("put /chat/gw/config = v1 at revision %s\n", rev);

  b64("/chat/gw/config", b);
  snprintf(json, sizeof json, "{\"key\":\"%s\"}", b);
  if (call("/v3/kv/range", json, &out)) return 1;
  if (!field(out.data, "value", key, sizeof key, NULL)) return 1;
  unb64(key, strlen(key), value);
  free(out.data);
  printf("get /chat/gw/config = %s\n", value);
  if (strcmp(value, "v1") != 0) return 1;

  /* Compare-and-swap: v1 -> v2 only if the value is still v1. */
  b64("v1", c);
  char v2[16];
  b64("v2", v2);
  snprintf(json, sizeof json,
           "{\"compare\":[{\"target\":\"VALUE\",\"key\":\"%s\",\"value\":\"%s\"}],"
           "\"success\":[{\"request_put\":{\"key\":\"%s\",\"value\":\"%s\"}}]}",
           b, c, b, v2);
  if (call("/v3/kv/txn", json, &out)) return 1;
  int swapped = strstr(out.data, "\"succeeded\":true") != NULL;
  free(out.data);
  printf("compare-and-swap v1 -> v2: %s\n", swapped ? "swapped" : "not swapped");
  if (!swapped) return 1;

  /* A key under a lease, kept alive once. */
  char lease[32], ttl[32];
  if (call("/v3/lease/grant", "{\"TTL\":10}", &out)) return 1;
  if (!field(out.data, "ID", lease, sizeof lease, NULL)) return 1;
  free(out.data);
  if (put("/chat/gw/login/1", "10.0.0.1:8000", lease, NULL)) return 1;
  snprintf(json, sizeof json, "{\"ID\":\"%s\"}", lease);
  if (call("/v3/lease/keepalive", json, &out)) return 1;
  if (!field(out.data, "TTL", ttl, sizeof ttl, NULL)) return 1;
  free(out.data);
  printf("lease %s kept alive: TTL %s s\n", lease, ttl);

  /* A watch from the next revision, read in a curl_multi loop while three puts go on. */
  if (put("/chat/gw/config", "v3", NULL, rev)) return 1;
  char prefix[64], end[64];
  b64("/chat/gw/", prefix);
  b64("/chat/gw0", end);
  snprintf(json, sizeof json,
           "{\"create_request\":{\"key\":\"%s\",\"range_end\":\"%s\",\"start_revision\":\"%lld\"}}",
           prefix, end, atoll(rev) + 1);
  char url[512];
  snprintf(url, sizeof url, "%s/v3/watch", endpoint);
  struct watch w = {{calloc(1, 1), 0}, 0};
  CURL *h = curl_easy_init();
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_watch);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &w);
  CURLM *m = curl_multi_init();
  curl_multi_add_handle(m, h);
  for (int i = 0; i < 3; i++) {
    snprintf(value, sizeof value, "update %d", i);
    if (put("/chat/gw/config", value, NULL, NULL)) return 1;
  }
  int running = 1;
  for (int spins = 0; w.events < 3 && running && spins < 100; spins++) {
    curl_multi_perform(m, &running);
    curl_multi_poll(m, NULL, 0, 100, NULL);
  }
  curl_multi_remove_handle(m, h);
  curl_easy_cleanup(h);
  curl_multi_cleanup(m);
  free(w.pending.data);
  curl_global_cleanup();
  if (w.events != 3) {
    fprintf(stderr, "the watch saw %d events of 3\n", w.events);
    return 1;
  }
  printf("done\n");
  return 0;
}
