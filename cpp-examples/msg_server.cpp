// The chat system's msg server on etcdc: reads its config file, discovers the login servers
// under LoginServiceDir over the remote client, keeps its routing table current from the
// discovery events (printing each change with a timestamp), and routes every request to a
// login server picked by PickPolicy — trying the next one when a pick does not answer.
// One epoll loop drives everything, with etcdc in its pull/fd form, as the chat system's
// servers are single-threaded reactors. Line protocol on ListenPort:
//   route  -> "OK <login server's answer>" or "FAIL <why>"
//   stats  -> "requests=N failed=N retried=N table=N <id>=<count>..."
// SIGTERM or SIGINT: exits 0. A bad config: a message and exit code 2.
// Usage: msg_server <config file>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include <etcdc.hpp>

namespace {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "Key = Value" lines, '#' comments.
std::map<std::string, std::string> read_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot read config " + path + ": " + std::strerror(errno));
  std::map<std::string, std::string> out;
  std::string line;
  for (int n = 1; std::getline(in, line); n++) {
    line = line.substr(0, line.find('#'));
    auto trim = [](std::string s) {
      s.erase(0, s.find_first_not_of(" \t\r"));
      s.erase(s.find_last_not_of(" \t\r") + 1);
      return s;
    };
    if (trim(line).empty()) continue;
    auto eq = line.find('=');
    if (eq == std::string::npos)
      throw ConfigError(path + ":" + std::to_string(n) + ": expected \"Key = Value\", got \"" + trim(line) + "\"");
    out[trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return out;
}

struct Config {
  std::string endpoints, dir, listen_ip, name;
  int port = 0;
  int64_t timeout_ms = 5000;
  etcdc::Pick policy = etcdc::Pick::RoundRobin;
  etcdc::ClientOptions client;  // TLS and the user, when the cluster asks for them
};

Config parse(const std::map<std::string, std::string>& kv) {
  auto need = [&](const std::string& k) {
    auto it = kv.find(k);
    if (it == kv.end() || it->second.empty()) throw ConfigError("config is missing " + k);
    return it->second;
  };
  auto number = [&](const std::string& k, long lo, long hi) {
    std::string v = need(k);
    char* end = nullptr;
    errno = 0;
    long n = std::strtol(v.c_str(), &end, 10);
    if (errno || *end || n < lo || n > hi)
      throw ConfigError(k + " must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got \"" + v + "\"");
    return n;
  };
  Config c;
  if (kv.count("RegisterCenterEndpoints")) {
    c.endpoints = need("RegisterCenterEndpoints");
  } else {
    c.endpoints = "http://" + need("RegisterCenterIp") + ":" + std::to_string(number("RegisterCenterPort", 1, 65535));
  }
  c.dir = need("LoginServiceDir");
  c.listen_ip = need("ListenIP");
  c.port = static_cast<int>(number("ListenPort", 1, 65535));
  c.timeout_ms = number("DiscoveryTTL", 100, 3600 * 1000);
  c.name = kv.count("Name") ? kv.at("Name") : "msg_server";
  // TLS (https:// endpoints) and etcd's authentication, all optional.
  auto opt = [&](const std::string& k) { return kv.count(k) ? kv.at(k) : std::string(); };
  c.client.tls_ca_file = opt("TlsCaFile");
  c.client.tls_cert_file = opt("TlsCertFile");
  c.client.tls_key_file = opt("TlsKeyFile");
  c.client.user = opt("User");
  c.client.password = opt("Password");
  std::string p = kv.count("PickPolicy") ? kv.at("PickPolicy") : "round-robin";
  if (p == "round-robin") c.policy = etcdc::Pick::RoundRobin;
  else if (p == "random") c.policy = etcdc::Pick::Random;
  else if (p == "least-in-flight") c.policy = etcdc::Pick::LeastInFlight;
  else if (p == "weighted") c.policy = etcdc::Pick::Weighted;
  else throw ConfigError("PickPolicy must be round-robin, random, least-in-flight or weighted, got \"" + p + "\"");
  return c;
}

long long now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// One request to a login server: its one-line answer, or empty when it did not answer.
std::string ask(const std::string& addr, const char* request) {
  auto colon = addr.rfind(':');
  if (colon == std::string::npos) return "";
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::atoi(addr.c_str() + colon + 1)));
  if (inet_pton(AF_INET, addr.substr(0, colon).c_str(), &a.sin_addr) != 1) return "";
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{0, 500000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      send(fd, request, std::strlen(request), MSG_NOSIGNAL) > 0) {
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n > 0) {
      out.assign(buf, static_cast<size_t>(n));
      while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    }
  }
  close(fd);
  return out;
}

// etcdc's own log (reconnects, resumed watches, a watch it cannot make), on etcdc's event
// thread: one whole line per write, so it does not tear the main loop's lines.
void on_log(void* name, const etcdc_log_record* r) {
  std::string line = std::to_string(now_ms()) + " " + *static_cast<std::string*>(name) + " etcdc: " +
                     etcdc_log_record_message(r) + "\n";
  std::cout << line << std::flush;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: msg_server <config file>\n";
    return 2;
  }
  Config cfg;
  try {
    cfg = parse(read_config(argv[1]));
  } catch (const ConfigError& e) {
    std::cerr << "msg_server: " << e.what() << "\n";
    return 2;
  }
  auto log = [&](const std::string& what) { std::cout << now_ms() << " " << cfg.name << " " << what << std::endl; };
  etcdc_log_callback log_cb = {on_log, [](void* name) { delete static_cast<std::string*>(name); }, new std::string(cfg.name)};
  etcdc_set_log_callback(ETCDC_LOG_INFO, &log_cb);

  // Signals as a descriptor, blocked before etcdc starts threads (they inherit the mask).
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  int sfd = signalfd(-1, &stop, SFD_CLOEXEC);

  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(cfg.port));
  if (inet_pton(AF_INET, cfg.listen_ip.c_str(), &a.sin_addr) != 1 || bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      listen(lfd, 128) != 0) {
    std::cerr << "msg_server: cannot listen on " << cfg.listen_ip << ":" << cfg.port << ": " << std::strerror(errno) << "\n";
    return 2;
  }

  try {
    etcdc::ClientOptions co = cfg.client;
    co.timeout_ms = cfg.timeout_ms;
    auto client = etcdc::Client::connect(cfg.endpoints, co);
    auto discovery = etcdc::discover(client, cfg.dir);
    log("following " + cfg.dir + " on " + cfg.endpoints);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    auto watch_fd = [&](int fd) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    };
    int dfd = discovery.fd();
    watch_fd(sfd);
    watch_fd(lfd);
    watch_fd(dfd);

    long requests = 0, failed = 0, retried = 0;
    std::map<std::string, long> routed;
    for (bool running = true; running;) {
      epoll_event events[8];
      int n = epoll_wait(ep, events, 8, -1);
      if (n < 0 && errno == EINTR) continue;
      for (int i = 0; i < n; i++) {
        int fd = events[i].data.fd;
        if (fd == sfd) {
          running = false;
        } else if (fd == dfd) {
          while (auto e = discovery.next(0)) {
            const char* sign = e->change == etcdc::Change::Added ? "+" : e->change == etcdc::Change::Removed ? "-" : "~";
            if (e->change == etcdc::Change::Ended) {
              log("discovery ended: " + std::string(etcdc::to_string(e->status)));
              running = false;
              break;
            }
            log(std::string(sign) + " " + e->instance.id + " " + e->instance.addr + " (" +
                std::to_string(discovery.snapshot().size()) + " in the table)");
          }
        } else if (fd == lfd) {
          int conn = accept(lfd, nullptr, nullptr);
          if (conn < 0) continue;
          timeval tv{1, 0};
          setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
          char req[64] = {0};
          ssize_t got = recv(conn, req, sizeof req - 1, 0);
          std::string reply;
          if (got > 0 && std::strncmp(req, "route", 5) == 0) {
            requests++;
            // A pick that does not answer (a server that just died) is retried on the next
            // one, so a request fails only when no login server answers at all.
            size_t attempts = discovery.snapshot().size() + 1;
            for (size_t k = 0; k < attempts && reply.empty(); k++) {
              auto login = discovery.pick(cfg.policy);
              if (!login) break;
              discovery.begin(login->id);
              std::string answer = ask(login->addr, "whoami\n");
              discovery.end(login->id);
              if (answer.empty()) {
                retried++;
                continue;
              }
              routed[login->id]++;
              reply = "OK " + answer + "\n";
            }
            if (reply.empty()) {
              failed++;
              reply = "FAIL no login server answered\n";
            }
          } else if (got > 0 && std::strncmp(req, "stats", 5) == 0) {
            std::ostringstream s;
            using C = etcdc::Client::Counter;
            s << "requests=" << requests << " failed=" << failed << " retried=" << retried
              << " table=" << discovery.snapshot().size() << " reconnects=" << client.counter(C::Reconnects)
              << " watch_resumes=" << client.counter(C::WatchResumes) << " etcd_retries=" << client.counter(C::Retries);
            for (auto& [id, count] : routed) s << " " << id << "=" << count;
            reply = s.str() + "\n";
          } else {
            reply = "ERROR unknown request\n";
          }
          ssize_t ignored = send(conn, reply.data(), reply.size(), MSG_NOSIGNAL);
          (void)ignored;
          close(conn);
        }
      }
    }
    log("stopping: requests=" + std::to_string(requests) + " failed=" + std::to_string(failed) +
        " retried=" + std::to_string(retried));
    close(ep);
  } catch (const etcdc::Error& e) {
    std::cerr << "msg_server: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
