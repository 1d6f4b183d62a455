#!/usr/bin/env bash
# The chat servers' scenario, on built binaries:
#   demo-scenario.sh <login_server> <msg_server> [--remote | --tls] [--check]
# Three login servers each embed one member of a three-member cluster (with --remote: they
# and the msg servers use a real etcd this script starts) and register under /login_servers;
# two msg servers discover them over the remote client and route requests to them. Then:
# the spread of requests; a login server SIGKILLed (not the Raft leader) and how soon both
# msg servers drop it; its restart and return; the Raft leader's process SIGKILLed, and
# writes and discovery going on. A summary table of what each step measured closes it.
# --tls: the embedded cluster requires TLS and client certificates (made by
# scripts/make-certs.sh) on its client and peer URLs, and etcd's authentication: the msg
# servers connect with a CA, a client certificate and a user that may only read the
# login servers' directory.
# --check: shorter timings, and exit 1 unless the killed server left every routing table
# within RegisterTTL + 1 s, came back after its restart, and no request failed.
# Every process is started here and stopped by its own PID on exit, also on Ctrl-C.
set -euo pipefail
login_bin=$(realpath "$1")
msg_bin=$(realpath "$2")
shift 2
remote=0
check=0
tls=0
for arg in "$@"; do
  case $arg in
    --remote) remote=1 ;;
    --check) check=1 ;;
    --tls) tls=1 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done
[ "$remote" = 0 ] || [ "$tls" = 0 ] || { echo "--tls runs the embedded cluster, not --remote" >&2; exit 2; }
. "$(dirname "$0")/free-port.sh"

work=$(mktemp -d)
declare -A pid=()
cleanup() {
  for name in "${!pid[@]}"; do kill -TERM "${pid[$name]}" 2>/dev/null || true; done
  for name in "${!pid[@]}"; do wait "${pid[$name]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scheme=http
ctl=(env ETCDCTL_API=3 etcdctl)
if [ "$tls" = 1 ]; then
  scheme=https
  certs="$work/certs"
  "$(dirname "$0")/make-certs.sh" "$certs"
  # etcdctl as root, by its client certificate's common name.
  ctl+=(--cacert "$certs/ca.pem" --cert "$certs/root.pem" --key "$certs/root-key.pem")
fi

now_ms() { date +%s%3N; }
say() { printf '\n== %s\n' "$*"; }
die() { echo "demo: $*" >&2; for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done >&2; exit 1; }

if [ "$check" = 1 ]; then ttl_ms=1000; election_ms=500; else ttl_ms=2000; election_ms=1000; fi
ids=(0001-0001 0001-0002 0001-0003)

# Waits (bounded) until `file` has a line matching the awk condition; prints that line.
wait_line() {
  local file=$1 cond=$2 limit=$3 line
  local until=$(( $(now_ms) + limit ))
  while [ "$(now_ms)" -lt "$until" ]; do
    line=$(awk "$cond {print; exit}" "$file" 2>/dev/null || true)
    if [ -n "$line" ]; then echo "$line"; return 0; fi
    sleep 0.05
  done
  return 1
}

# One request through a msg server: its answer line.
request() {
  local port=$1 line=""
  if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
    printf 'route\n' >&3
    IFS= read -r -t 3 line <&3 || line="FAIL no answer"
    exec 3<&- 3>&-
  else
    line="FAIL cannot connect"
  fi
  echo "$line"
}

ask() { # ask <port> <request>
  local line=""
  exec 4<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf '%s\n' "$2" >&4
  IFS= read -r -t 3 line <&4 || true
  exec 4<&- 4>&-
  echo "$line"
}

# ---- the cluster and the login servers ----
# Ports: free, and each handed out once in this run.
taken=" "
take_port() { # take_port <variable>
  local p
  while :; do
    p=$(free_port)
    case $taken in *" $p "*) continue ;; esac
    taken+="$p "
    printf -v "$1" '%s' "$p"
    return
  done
}
client_port=() peer_port=() svc_port=() msg_port=()
for i in 0 1 2; do
  take_port "client_port[$i]"; take_port "peer_port[$i]"; take_port "svc_port[$i]"
done
take_port "msg_port[0]"; take_port "msg_port[1]"
initial=""
for i in 0 1 2; do initial+="login$((i+1))=$scheme://127.0.0.1:${peer_port[i]},"; done
initial=${initial%,}

if [ "$remote" = 1 ]; then
  # A port taken between free_port and etcd's bind (tests run in parallel) kills etcd: then
  # new ports.
  for _ in 1 2 3 4 5; do
    take_port etcd_client; take_port etcd_peer
    rm -rf "$work/etcd"
    /usr/bin/etcd --name demo --data-dir "$work/etcd" \
      --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
      --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
      --initial-cluster "demo=http://127.0.0.1:$etcd_peer" --heartbeat-interval $((election_ms / 10)) \
      --election-timeout "$election_ms" --log-level warn --logger zap >"$work/etcd.log" 2>&1 &
    pid[etcd]=$!
    for _ in $(seq 1 100); do
      ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$etcd_client" --command-timeout=1s endpoint health >/dev/null 2>&1 && break 2
      kill -0 "${pid[etcd]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -TERM "${pid[etcd]}" 2>/dev/null || true; wait "${pid[etcd]}" 2>/dev/null || true; unset 'pid[etcd]'
  done
  [ -n "${pid[etcd]:-}" ] || die "etcd did not start"
  endpoints="http://127.0.0.1:$etcd_client"
else
  endpoints=""
  for i in 0 1 2; do endpoints+="$scheme://127.0.0.1:${client_port[i]},"; done
  endpoints=${endpoints%,}
fi

write_login_config() {
  local i=$1 f="$work/login$((i+1)).conf"
  {
    echo "# login server $((i+1)), in the chat system's config names"
    echo "ServiceId = ${ids[i]}"
    echo "ServiceDir = /login_servers"
    echo "HostIp = 127.0.0.1"
    echo "RegisterTTL = $ttl_ms"
    echo "ClientListenIP = 127.0.0.1"
    echo "ClientPort = ${svc_port[i]}"
    echo "HttpListenIP = 127.0.0.1"
    echo "HttpPort = $((8080 + i))"
    echo "MsgServerListenIP = 127.0.0.1"
    echo "MsgServerPort = $((8100 + i))"
    if [ "$remote" = 1 ]; then
      echo "RegisterCenterIp = 127.0.0.1"
      echo "RegisterCenterPort = $etcd_client"
    else
      echo "EmbeddedNodeName = login$((i+1))"
      echo "EmbeddedDataDir = $work/data$((i+1))"
      echo "EmbeddedClientUrls = $scheme://127.0.0.1:${client_port[i]}"
      echo "EmbeddedPeerUrl = $scheme://127.0.0.1:${peer_port[i]}"
      echo "EmbeddedInitialCluster = $initial"
      echo "EmbeddedElectionMs = $election_ms"
      if [ "$tls" = 1 ]; then
        echo "EmbeddedCertFile = $certs/server.pem"
        echo "EmbeddedKeyFile = $certs/server-key.pem"
        echo "EmbeddedTrustedCaFile = $certs/ca.pem"
      fi
    fi
  } >"$f"
}

start_login() {
  local i=$1
  "$login_bin" "$work/login$((i+1)).conf" >>"$work/login$((i+1)).log" 2>&1 &
  pid[login$i]=$!
}

if [ "$remote" = 1 ]; then
  say "a real etcd at $endpoints; three login servers register with it"
elif [ "$tls" = 1 ]; then
  say "three login servers, each embedding one member of a three-member cluster that requires TLS and client certificates"
else
  say "three login servers, each embedding one member of a three-member cluster"
fi
for i in 0 1 2; do write_login_config "$i"; start_login "$i"; done
for i in 0 1 2; do
  wait_line "$work/login$((i+1)).log" '/ registered /' 30000 >/dev/null || die "login server ${ids[i]} did not register"
  grep -m1 ' registered ' "$work/login$((i+1)).log"
done

# ---- the msg servers ----
msg_security=""
if [ "$tls" = 1 ]; then
  say "etcd's authentication on: root, and a user msg that may only read /login_servers/"
  for cmd in "user add root --no-password" "role add root" "user grant-role root root" \
    "user add msg:msgpw" "role add discover" "role grant-permission discover read /login_servers/ --prefix" \
    "user grant-role msg discover" "auth enable"; do
    # shellcheck disable=SC2086
    "${ctl[@]}" --endpoints "$endpoints" $cmd || die "etcdctl $cmd failed"
  done
  msg_security="TlsCaFile = $certs/ca.pem
TlsCertFile = $certs/app.pem
TlsKeyFile = $certs/app-key.pem
User = msg
Password = msgpw"
fi
for m in 0 1; do
  cat >"$work/msg$((m+1)).conf" <<EOF
# msg server $((m+1))
Name = msg$((m+1))
RegisterCenterEndpoints = $endpoints
DiscoveryTTL = 5000
LoginServiceDir = /login_servers
ListenIP = 127.0.0.1
ListenPort = ${msg_port[m]}
PickPolicy = $([ "$m" = 0 ] && echo round-robin || echo least-in-flight)
$msg_security
EOF
  "$msg_bin" "$work/msg$((m+1)).conf" >"$work/msg$((m+1)).log" 2>&1 &
  pid[msg$m]=$!
done
say "two msg servers discover them (round-robin and least-in-flight)"
for m in 0 1; do
  wait_line "$work/msg$((m+1)).log" '/\(3 in the table\)/' 20000 >/dev/null || die "msg server $((m+1)) did not see three login servers"
  cat "$work/msg$((m+1)).log"
done

# ---- requests: the spread ----
say "200 requests through the msg servers"
declare -A spread=()
failed_spread=0
for n in $(seq 1 200); do
  answer=$(request "${msg_port[$((n % 2))]}")
  case $answer in
    OK*) id=$(echo "$answer" | awk '{print $2}'); spread[$id]=$(( ${spread[$id]:-0} + 1 )) ;;
    *) failed_spread=$((failed_spread + 1)) ;;
  esac
done
spread_text=""
for id in "${ids[@]}"; do spread_text+="$id: ${spread[$id]:-0}  "; done
echo "$spread_text(failed: $failed_spread)"

# Background traffic during each fault: one request per msg server every 10 ms.
traffic_start() {
  : >"$work/traffic.log"
  ( while :; do for p in "${msg_port[@]}"; do request "$p"; done; sleep 0.01; done ) >>"$work/traffic.log" 2>/dev/null &
  pid[traffic]=$!
}
traffic_stop() {
  kill -TERM "${pid[traffic]}" 2>/dev/null || true
  wait "${pid[traffic]}" 2>/dev/null || true
  unset 'pid[traffic]'
  traffic_total=$(grep -c . "$work/traffic.log" || true)
  traffic_failed=$(grep -c '^FAIL' "$work/traffic.log" || true)
}

leader_index() {
  for i in 0 1 2; do
    [ -n "${pid[login$i]:-}" ] || continue
    if ask "${svc_port[i]}" status 2>/dev/null | grep -q 'leader=1'; then echo "$i"; return; fi
  done
  echo ""
}

# Both msg servers drop (or regain) login server `id` after t: the later of the two times.
seen_by_both() { # seen_by_both <sign> <id> <after ms> <limit ms>
  local worst=0 line ts
  for m in 1 2; do
    line=$(wait_line "$work/msg$m.log" "\$1 > $3 && \$3 == \"$1\" && \$4 == \"$2\"" "$4") || return 1
    ts=${line%% *}
    [ "$ts" -gt "$worst" ] && worst=$ts
  done
  echo "$worst"
}

secs() { awk -v ms="$1" 'BEGIN { printf "%.2f s", ms / 1000 }'; }

# ---- fault 1: a login server that is not the leader dies ----
victim=0
if [ "$remote" = 0 ]; then
  leader=$(leader_index)
  for i in 0 1 2; do [ "$i" != "$leader" ] && { victim=$i; break; }; done
fi
say "SIGKILL login server ${ids[victim]} (pid ${pid[login$victim]})"
traffic_start
t0=$(now_ms)
kill -KILL "${pid[login$victim]}"; wait "${pid[login$victim]}" 2>/dev/null || true; unset "pid[login$victim]"
gone=$(seen_by_both - "${ids[victim]}" "$t0" $((ttl_ms + 15000))) || die "the msg servers did not drop ${ids[victim]}"
detect_ms=$((gone - t0))
sleep 0.3
traffic_stop
kill_total=$traffic_total kill_failed=$traffic_failed
echo "both msg servers dropped ${ids[victim]} after $(secs $detect_ms) (RegisterTTL $ttl_ms ms); requests failed: $kill_failed of $kill_total"

say "restart login server ${ids[victim]}"
traffic_start
t1=$(now_ms)
start_login "$victim"
back=$(seen_by_both + "${ids[victim]}" "$t1" 30000) || die "the msg servers did not see ${ids[victim]} come back"
back_ms=$((back - t1))
awk -v t="$t1" '$1 > t' "$work/login$((victim+1)).log"
sleep 0.3
traffic_stop
back_total=$traffic_total back_failed=$traffic_failed
echo "back in both routing tables after $(secs $back_ms); requests failed: $back_failed of $back_total"

# ---- fault 2: the Raft leader's process dies ----
if [ "$remote" = 0 ]; then
  leader=$(leader_index)
  [ -n "$leader" ] || die "no login server reports being the Raft leader"
  say "SIGKILL the Raft leader's process: login server ${ids[leader]} (pid ${pid[login$leader]})"
  traffic_start
  t2=$(now_ms)
  kill -KILL "${pid[login$leader]}"; wait "${pid[login$leader]}" 2>/dev/null || true; unset "pid[login$leader]"
  survivors=""
  for i in 0 1 2; do [ "$i" != "$leader" ] && survivors+="$scheme://127.0.0.1:${client_port[i]},"; done
  "${ctl[@]}" --endpoints "${survivors%,}" --command-timeout=15s put /demo/after-leader-kill ok >/dev/null \
    || die "no write was accepted after the leader died"
  write_ms=$(( $(now_ms) - t2 ))
  echo "a write succeeded $(secs $write_ms) after the kill"
  gone2=$(seen_by_both - "${ids[leader]}" "$t2" $((ttl_ms + election_ms * 4 + 15000))) || die "the msg servers did not drop the old leader"
  leader_detect_ms=$((gone2 - t2))
  sleep 0.3
  traffic_stop
  leader_total=$traffic_total leader_failed=$traffic_failed
  echo "both msg servers dropped ${ids[leader]} after $(secs $leader_detect_ms) (a new leader extends leases by their TTL, as etcd's); requests failed: $leader_failed of $leader_total"
  start_login "$leader"
  seen_by_both + "${ids[leader]}" "$t2" 30000 >/dev/null || die "${ids[leader]} did not come back"
  echo "${ids[leader]} restarted and rejoined"
fi

say "the msg servers' counters"
for m in 0 1; do echo "msg$((m+1)): $(ask "${msg_port[m]}" stats)"; done

say "stopping everything (SIGTERM: login servers unregister)"
for name in "${!pid[@]}"; do kill -TERM "${pid[$name]}" 2>/dev/null || true; done
for name in "${!pid[@]}"; do wait "${pid[$name]}" 2>/dev/null || true; done
pid=()

say "summary"
printf '%-44s | %s\n' "step" "measured"
printf '%-44s-+-%s\n' "--------------------------------------------" "------------------------------------------------"
printf '%-44s | %s\n' "200 requests over 3 login servers" "$spread_text(failed: $failed_spread)"
printf '%-44s | %s\n' "SIGKILL login server ${ids[victim]}" "left both routing tables in $(secs $detect_ms); failed requests: $kill_failed of $kill_total"
printf '%-44s | %s\n' "restart ${ids[victim]}" "back in both tables in $(secs $back_ms); failed requests: $back_failed of $back_total"
if [ "$remote" = 0 ]; then
  printf '%-44s | %s\n' "SIGKILL the Raft leader (${ids[leader]})" "writes after $(secs $write_ms); left tables in $(secs $leader_detect_ms); failed requests: $leader_failed of $leader_total"
fi

if [ "$check" = 1 ]; then
  problems=()
  [ "$detect_ms" -le $((ttl_ms + 1000)) ] || problems+=("the killed login server left the tables after ${detect_ms} ms > RegisterTTL + 1 s")
  total_failed=$((failed_spread + kill_failed + back_failed + ${leader_failed:-0}))
  [ "$total_failed" = 0 ] || problems+=("$total_failed requests failed while login servers were up")
  if [ "${#problems[@]}" -gt 0 ]; then
    printf 'demo check FAILED: %s\n' "${problems[@]}" >&2
    exit 1
  fi
  echo "demo check passed"
fi
