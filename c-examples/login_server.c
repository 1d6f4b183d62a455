/* The chat system's login server on etcdc: reads its config file (the chat system's names),
 * embeds one member of the etcd-compatible cluster (or connects to an etcd), registers
 * itself under <ServiceDir>/<ServiceId> with a lease of RegisterTTL, keeps the registration
 * through member failures, and answers a tiny line protocol on ClientPort:
 *   whoami  -> "<ServiceId> <HostIp>:<ClientPort> msg=<the msg server address it hands out>"
 *   status  -> "<ServiceId> leader=<0|1> member=<hex id> term=<n> applied=<n>" (embedded)
 * SIGTERM or SIGINT: unregisters, stops the member, exits 0. A bad config: a message and
 * exit code 2. Usage: login_server <config file> */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <etcdc.h>

/* ---- config: "Key = Value" lines, '#' comments ---- */

#define MAX_KEYS 64
static struct {
  char key[64];
  char value[1024];
} config[MAX_KEYS];
static int config_len;

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  char *end = s + strlen(s);
  while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n')) *--end = 0;
  return s;
}

static int read_config(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "login_server: cannot read config %s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[1200];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    n++;
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *l = trim(line);
    if (!*l) continue;
    char *eq = strchr(l, '=');
    if (!eq) {
      fprintf(stderr, "login_server: %s:%d: expected \"Key = Value\", got \"%s\"\n", path, n, l);
      fclose(f);
      return -1;
    }
    *eq = 0;
    char *k = trim(l), *v = trim(eq + 1);
    if (!*k || strlen(k) >= sizeof config[0].key || strlen(v) >= sizeof config[0].value || config_len == MAX_KEYS) {
      fprintf(stderr, "login_server: %s:%d: bad or oversize entry\n", path, n);
      fclose(f);
      return -1;
    }
    strcpy(config[config_len].key, k);
    strcpy(config[config_len].value, v);
    config_len++;
  }
  fclose(f);
  return 0;
}

static const char *get(const char *key) {
  for (int i = 0; i < config_len; i++)
    if (strcmp(config[i].key, key) == 0) return config[i].value;
  return NULL;
}

static const char *need(const char *key) {
  const char *v = get(key);
  if (!v || !*v) {
    fprintf(stderr, "login_server: config is missing %s\n", key);
    exit(2);
  }
  return v;
}

static long need_number(const char *key, long min, long max) {
  const char *v = need(key);
  char *end = NULL;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || *end || n < min || n > max) {
    fprintf(stderr, "login_server: %s must be a number in [%ld, %ld], got \"%s\"\n", key, min, max, v);
    exit(2);
  }
  return n;
}

/* ---- helpers ---- */

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *id;

#define LOG(...)                                       \
  do {                                                 \
    printf("%lld login_server[%s] ", now_ms(), id);    \
    printf(__VA_ARGS__);                               \
    printf("\n");                                      \
    fflush(stdout);                                    \
  } while (0)

static int fail(const char *what, etcdc_status s) {
  LOG("%s: %s: %s", what, etcdc_status_str(s), etcdc_last_error());
  return 1;
}

/* etcdc's own log (reconnects, resumed watches), on etcdc's event thread. */
static void on_log(void *user_data, const etcdc_log_record *r) {
  (void)user_data;
  LOG("etcdc: %s", etcdc_log_record_message(r));
}

static int stop_pipe[2];
static void on_signal(int sig) {
  (void)sig;
  ssize_t ignored = write(stop_pipe[1], "x", 1);
  (void)ignored;
}

static int listen_on(const char *ip, long port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void answer(int conn, etcdc_node *node, const char *addr, const char *msg_addr) {
  struct timeval tv = {1, 0};
  setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char req[64] = {0};
  ssize_t n = recv(conn, req, sizeof req - 1, 0);
  if (n <= 0) return;
  char out[256];
  if (strncmp(req, "whoami", 6) == 0) {
    snprintf(out, sizeof out, "%s %s msg=%s\n", id, addr, msg_addr);
  } else if (strncmp(req, "status", 6) == 0) {
    uint64_t member = 0, leader = 0, term = 0, applied = 0;
    bool is_leader = false;
    if (node && etcdc_node_status(node, &member, &leader, &term, &applied, &is_leader) == ETCDC_OK)
      snprintf(out, sizeof out, "%s leader=%d member=%" PRIx64 " term=%" PRIu64 " applied=%" PRIu64 "\n", id,
               is_leader ? 1 : 0, member, term, applied);
    else
      snprintf(out, sizeof out, "%s remote\n", id);
  } else {
    snprintf(out, sizeof out, "ERROR unknown request\n");
  }
  ssize_t ignored = send(conn, out, strlen(out), MSG_NOSIGNAL);
  (void)ignored;
}

static const char *state_name(etcdc_registration_state s) {
  switch (s) {
    case ETCDC_REGISTERED: return "registered";
    case ETCDC_REGISTRATION_RECONNECTING: return "reconnecting";
    case ETCDC_REGISTRATION_LOST: return "lost (registering again)";
    case ETCDC_REGISTRATION_CONFLICT: return "conflict (another live instance has the id)";
  }
  return "?";
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: login_server <config file>\n");
    return 2;
  }
  if (read_config(argv[1]) != 0) return 2;
  id = need("ServiceId");
  const char *dir = need("ServiceDir");
  const char *host = need("HostIp");
  long ttl_ms = need_number("RegisterTTL", 1, 3600 * 1000);
  const char *listen_ip = need("ClientListenIP");
  long port = need_number("ClientPort", 1, 65535);
  int embedded = get("EmbeddedNodeName") != NULL;
  if (!embedded && !get("RegisterCenterIp")) {
    fprintf(stderr, "login_server: config needs RegisterCenterIp/RegisterCenterPort (an etcd) or an "
                    "Embedded* block (a member of the embedded cluster)\n");
    return 2;
  }

  /* Signals become a readable pipe, before etcdc starts any thread. */
  if (pipe(stop_pipe) != 0) return 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  etcdc_log_callback log_cb = {on_log, NULL, NULL};
  etcdc_set_log_callback(ETCDC_LOG_INFO, &log_cb);

  etcdc_node *node = NULL;
  etcdc_client *client = NULL;
  etcdc_status s;
  if (embedded) {
    etcdc_node_options *o = etcdc_node_options_new();
    struct {
      const char *key;
      etcdc_status (*set)(etcdc_node_options *, const char *);
    } fields[] = {
        {"EmbeddedNodeName", etcdc_node_options_set_name},
        {"EmbeddedDataDir", etcdc_node_options_set_data_dir},
        {"EmbeddedClientUrls", etcdc_node_options_set_listen_client_urls},
        {"EmbeddedClientUrls", etcdc_node_options_set_advertise_client_urls},
        {"EmbeddedPeerUrl", etcdc_node_options_set_listen_peer_urls},
        {"EmbeddedPeerUrl", etcdc_node_options_set_initial_advertise_peer_urls},
        {"EmbeddedInitialCluster", etcdc_node_options_set_initial_cluster},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
      const char *v = need(fields[i].key);
      if ((s = fields[i].set(o, v)) != ETCDC_OK) {
        fprintf(stderr, "login_server: %s = %s: %s\n", fields[i].key, v, etcdc_last_error());
        return 2;
      }
    }
    if (get("EmbeddedElectionMs")) {
      long election = need_number("EmbeddedElectionMs", 10, 60000);
      if (etcdc_node_options_set_timing_ms(o, (uint64_t)election / 10, (uint64_t)election) != ETCDC_OK) {
        fprintf(stderr, "login_server: EmbeddedElectionMs: %s\n", etcdc_last_error());
        return 2;
      }
    }
    /* TLS for clients and peers, with client certificates required (optional). */
    if (get("EmbeddedCertFile")) {
      const char *cert = need("EmbeddedCertFile"), *key = need("EmbeddedKeyFile");
      const char *ca = need("EmbeddedTrustedCaFile");
      if (etcdc_node_options_set_client_tls(o, cert, key, ca, true) != ETCDC_OK ||
          etcdc_node_options_set_peer_tls(o, cert, key, ca, true) != ETCDC_OK) {
        fprintf(stderr, "login_server: TLS settings: %s\n", etcdc_last_error());
        return 2;
      }
    }
    if ((s = etcdc_node_start(o, &node)) != ETCDC_OK) return fail("start the embedded member", s);
    etcdc_node_options_free(o);
    if ((s = etcdc_node_client(node, NULL, &client)) != ETCDC_OK) return fail("client", s);
    LOG("embedded member %s started", need("EmbeddedNodeName"));
  } else {
    char url[300];
    snprintf(url, sizeof url, "http://%s:%ld", need("RegisterCenterIp"), need_number("RegisterCenterPort", 1, 65535));
    if ((s = etcdc_client_connect(url, NULL, &client)) != ETCDC_OK) return fail("connect", s);
  }

  /* Registration: the value carries every address of this server. */
  char addr[128], metadata[512], msg_addr[300];
  snprintf(addr, sizeof addr, "%s:%ld", host, port);
  snprintf(msg_addr, sizeof msg_addr, "%s:%s", get("MsgServerListenIP") ? get("MsgServerListenIP") : host,
           get("MsgServerPort") ? get("MsgServerPort") : "0");
  snprintf(metadata, sizeof metadata, "{\"http\":\"%s:%s\",\"msg\":\"%s:%s\"}",
           get("HttpListenIP") ? get("HttpListenIP") : host, get("HttpPort") ? get("HttpPort") : "0",
           get("MsgServerListenIP") ? get("MsgServerListenIP") : host, get("MsgServerPort") ? get("MsgServerPort") : "0");
  etcdc_registration_options *ro = etcdc_registration_options_new();
  if (etcdc_registration_options_set_ttl(ro, (ttl_ms + 999) / 1000) != ETCDC_OK ||
      etcdc_registration_options_set_metadata(ro, metadata) != ETCDC_OK) {
    fprintf(stderr, "login_server: %s\n", etcdc_last_error());
    return 2;
  }
  int lfd = listen_on(listen_ip, port);
  if (lfd < 0) {
    fprintf(stderr, "login_server: cannot listen on %s:%ld: %s\n", listen_ip, port, strerror(errno));
    return 2;
  }
  etcdc_registration *reg = NULL;
  for (;;) {
    s = etcdc_register(client, dir, id, addr, ro, NULL, &reg);
    if (s == ETCDC_OK) break;
    if (s == ETCDC_ERR_INVALID_ARGUMENT) {
      fprintf(stderr, "login_server: cannot register: %s\n", etcdc_last_error());
      return 2;
    }
    /* No quorum yet (the cluster is starting), or our previous life's lease is still alive
     * (a restart within RegisterTTL): try again, unless asked to stop. */
    LOG("not registered yet (%s: %s); retrying", etcdc_status_str(s), etcdc_last_error());
    struct pollfd p = {stop_pipe[0], POLLIN, 0};
    if (poll(&p, 1, 300) > 0) return 0;
  }
  etcdc_registration_options_free(ro);
  LOG("registered %s/%s at %s, lease %" PRIx64, dir, id, addr, (uint64_t)etcdc_registration_lease(reg));

  int rfd = -1;
  etcdc_registration_fd(reg, &rfd);
  struct pollfd fds[3] = {{stop_pipe[0], POLLIN, 0}, {lfd, POLLIN, 0}, {rfd, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents) break;
    if (fds[1].revents & POLLIN) {
      int conn = accept(lfd, NULL, NULL);
      if (conn >= 0) {
        answer(conn, node, addr, msg_addr);
        close(conn);
      }
    }
    if (fds[2].revents & POLLIN) {
      etcdc_registration_event *e = NULL;
      while (etcdc_registration_next(reg, 0, &e) == ETCDC_OK) {
        LOG("registration %s, lease %" PRIx64 " %s", state_name(etcdc_registration_event_state(e)),
            (uint64_t)etcdc_registration_event_lease(e), etcdc_registration_event_reason(e));
        etcdc_registration_event_free(e);
      }
    }
  }
  LOG("stopping: unregistering");
  etcdc_registration_free(reg);
  etcdc_client_free(client);
  etcdc_node_stop(node);
  close(lfd);
  return 0;
}
