#!/usr/bin/env bash
# Benchmark (not a test): the embedded node's etcdc-node against real etcd, side by side in
# one run on this machine, same flags (one member each, loopback), same client (tonic async
# tasks: the lightest client here, so the server is what is measured). Per cell: QPS, p50 and
# p99 latency (µs) and the server's CPU per operation (µs, from /proc utime+stime), median of
# three rounds; then each server's RSS and data-dir size after the run. `watch 16`: 16
# callers put while one watch on their prefix measures put-to-event latency (QPS = events/s);
# `fanoutN 1`: one caller puts 100 times a second while N watchers of its prefix (over up to
# 100 streams) measure it (QPS = events delivered per second); `put100k`, `range1m`, ...:
# values of 100 KiB and 1 MiB; `srange 1`: one caller's serializable reads, the round trip a
# put at 1 caller pays on top of its sync (the floor of `put 1`).
# `tls:` cells: a second pair of servers that requires TLS and client certificates
# (scripts/make-certs.sh's); `auth:` cells: the same pair after `auth enable`, the callers
# a user with a token (checked on every request) whose role covers the keys; `flood:` cells:
# the same while 16 other callers authenticate with a wrong password without pause (the
# server's bcrypt checks; the CPU column then includes them).
# `--members 3`: instead, etcd and the node as 3-member clusters (each member its own
# process, loopback): one caller's serializable range on the leader (the round trip), put at
# 1, 16 and 256 callers on the leader and at 1 and 16 on a follower (which forwards),
# linearizable range on the leader and on a follower (which asks the leader for the read
# index), serializable range on a follower, watch; the CPU column sums every member's CPU
# per operation (replication included).
#   scripts/bench-node.sh              # 3 rounds of 2 s per cell
#   BENCH_SECONDS=5 scripts/bench-node.sh
#   scripts/bench-node.sh --members 3
#   BENCH_CELLS='^(put@leader|fanout)' scripts/bench-node.sh --members 3   # cells whose name matches
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS=1
if [ "${1:-}" = --members ]; then
  MEMBERS=${2:?--members N}
  [ "$MEMBERS" -ge 1 ] || { echo "--members N: N >= 1" >&2; exit 2; }
fi
scripts/deps.sh
cargo build --release --locked --bin etcdc-node --example tonic_baseline --example node_gets 2>/dev/null
SECONDS_PER=${BENCH_SECONDS:-2}
TONIC="$PWD/target/release/examples/tonic_baseline"
NODE="$PWD/target/release/etcdc-node"
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
. scripts/free-port.sh
. scripts/cluster.sh
scripts/make-certs.sh "$dir/certs" >/dev/null
export BENCH_TLS_DIR="$dir/certs"
tls_flags=(--cert-file "$dir/certs/server.pem" --key-file "$dir/certs/server-key.pem"
  --trusted-ca-file "$dir/certs/ca.pem" --client-cert-auth)
# etcdctl as root, by its client certificate.
ctl_tls=(--cacert "$dir/certs/ca.pem" --cert "$dir/certs/root.pem" --key "$dir/certs/root-key.pem")
start() { # name binary [scheme flags...] -> "pid url"
  local name=$1 bin=$2 scheme=${3:-http} c p
  shift 3 2>/dev/null || shift 2
  local ctl=(); [ "$scheme" = https ] && ctl=("${ctl_tls[@]}")
  c=$(free_port); p=$(free_port)
  "$bin" --name "$name" --data-dir "$dir/$name" \
    --listen-client-urls "$scheme://127.0.0.1:$c" --advertise-client-urls "$scheme://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$name=http://127.0.0.1:$p" "$@" >"$dir/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    ETCDCTL_API=3 etcdctl "${ctl[@]}" --endpoints "$scheme://127.0.0.1:$c" --command-timeout=1s put /warm x >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "$pid $scheme://127.0.0.1:$c"
}
# Users root and app (read and write under bench/), then auth on.
enable_auth() {
  for cmd in "user add root --no-password" "role add root" "user grant-role root root" \
    "user add app:apppw" "role add app" "role grant-permission app readwrite bench/ --prefix" \
    "user grant-role app app" "auth enable"; do
    # shellcheck disable=SC2086
    ETCDCTL_API=3 etcdctl "${ctl_tls[@]}" --endpoints "$1" $cmd >/dev/null
  done
}
cpu_us() { # the CPU time of every pid given, in µs
  local p total=0
  for p in "$@"; do
    total=$(awk -v t="$total" '{ print t + ($14 + $15) * 1000000 / '"$(getconf CLK_TCK)"' }' "/proc/$p/stat")
  done
  echo "$total"
}
# The table of "$rows" (server cell callers qps p50 p99 cpu/op): medians of the rounds.
table() {
  echo "| cell | etcd QPS | node QPS | node/etcd | etcd p50/p99 µs | node p50/p99 µs | etcd CPU µs/op | node CPU µs/op |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  awk '
    function median(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } return a[int((n + 1) / 2)] }
    { k = $2 " " $3; s = $1; n[s, k]++; q[s, k, n[s, k]] = $4; p5[s, k, n[s, k]] = $5; p9[s, k, n[s, k]] = $6; c[s, k, n[s, k]] = $7; if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
    END {
      for (i = 1; i <= m; i++) {
        k = order[i]
        for (x = 1; x <= 2; x++) {
          s = (x == 1 ? "etcd" : "etcdc-node"); cnt = n[s, k]
          for (j = 1; j <= cnt; j++) { a[j] = q[s, k, j]; b[j] = p5[s, k, j]; d[j] = p9[s, k, j]; e[j] = c[s, k, j] }
          Q[x] = median(a, cnt); P5[x] = median(b, cnt); P9[x] = median(d, cnt); C[x] = median(e, cnt)
        }
        printf "| %s | %d | %d | %.2f | %d / %d | %d / %d | %d | %d |\n", k, Q[1], Q[2], (Q[1] > 0 ? Q[2] / Q[1] : 0), P5[1], P9[1], P5[2], P9[2], C[1], C[2]
      }
    }' "$1"
}
# A cell's operation and the client's settings for it, from its name: `fanoutN` is N
# watchers of one prefix (over at most 100 streams, up to 100 watches each) while each
# caller puts 100 times a second; `put100k`/`range100k`, `put1m`/`range1m`: values of
# 100 KiB and 1 MiB, over 16 keys per caller, the history compacted after each run so that
# neither server reaches its space quota. Sets `op` and `cell_env`.
cell_op() {
  local base=${1%@*}; base=${base#*:}
  cell_env=()
  case $base in
    fanout*)
      local n=${base#fanout}
      op=watch; cell_env=(BENCH_WATCHERS="$n" BENCH_WATCH_STREAMS=$(( n < 100 ? n : 100 )) BENCH_RATE=100) ;;
    *100k) op=${base%100k}; cell_env=(BENCH_VALUE_BYTES=102400 BENCH_KEYS=16) ;;
    *1m) op=${base%1m}; cell_env=(BENCH_VALUE_BYTES=1048576 BENCH_KEYS=16) ;;
    *) op=$base ;;
  esac
}
# One measured run: server-name cell-label op callers url pids... -> a row of "$rows"
# (the client runs with "${cell_env[@]}").
measure() {
  local name=$1 label=$2 op=$3 callers=$4 url=$5 before after line
  shift 5
  before=$(cpu_us "$@")
  line=$(env "${cell_env[@]}" "$TONIC" tasks "$op" "$callers" "$SECONDS_PER" "$url")
  after=$(cpu_us "$@")
  if [[ " ${cell_env[*]} " == *" BENCH_VALUE_BYTES="* ]]; then
    local rev ctl=(); [[ $url == https://* ]] && ctl=("${ctl_tls[@]}")
    rev=$(ETCDCTL_API=3 etcdctl "${ctl[@]}" --command-timeout=60s --endpoints "$url" get bench/range -w json | grep -o '"revision":[0-9]*' | head -1 | cut -d: -f2)
    ETCDCTL_API=3 etcdctl "${ctl[@]}" --command-timeout=60s --endpoints "$url" compaction --physical "$rev" >/dev/null
  fi
  # tonic OP CALLERS OPS QPS P50 P99 ERRORS -> server CELL CALLERS QPS P50 P99 CPU/op
  echo "$line" | awk -v s="$name" -v c="$label" -v cpu=$(( ${after%.*} - ${before%.*} )) '{ printf "%s %s %s %s %s %s %.0f\n", s, c, $3, $5, $6, $7, ($4 > 0 ? cpu / $4 : 0) }' >>"$rows"
}
machine() {
  echo "etcd $(/usr/bin/etcd --version | head -1 | cut -d' ' -f3) vs etcdc-node, $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), median of 3 rounds of ${SECONDS_PER} s per cell"
}
rows="$dir/rows"

if [ "$MEMBERS" -gt 1 ]; then
  read -r -a etcd_c < <(cluster etcd /usr/bin/etcd); pids+=("${etcd_c[@]:2}")
  read -r -a node_c < <(cluster node "$NODE"); pids+=("${node_c[@]:2}")
  for cell in "srange@leader 1" "put@leader 1" "put@leader 16" "put@leader 256" \
    "put@follower 1" "put@follower 16" "range@leader 16" "range@follower 16" "srange@follower 16" \
    "watch@leader 16" \
    "fanout1@leader 1" "fanout1000@leader 1" "fanout10000@leader 1" \
    "put100k@leader 16" "range100k@leader 16" "put1m@leader 4" "range1m@leader 4"; do
    set -- $cell
    [[ -z ${BENCH_CELLS:-} || $1 =~ $BENCH_CELLS ]] || continue
    cell_op "$1"; at=${1#*@}
    for round in 0 1 2; do
      for k in 0 1; do
        if [ $(( (k + round) % 2 )) = 0 ]; then name=etcd; c=("${etcd_c[@]}"); else name=etcdc-node; c=("${node_c[@]}"); fi
        url=${c[0]}; [ "$at" = follower ] && url=${c[1]}
        measure "$name" "$1" "$op" "$2" "$url" "${c[@]:2}"
      done
    done
  done
  echo "$MEMBERS-member clusters: $(machine); CPU summed over the members"
  echo
  table "$rows"
  echo
  for s in etcd node; do
    if [ "$s" = etcd ]; then c=("${etcd_c[@]}"); else c=("${node_c[@]}"); fi
    rss=0
    for p in "${c[@]:2}"; do rss=$(( rss + $(awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$p/status") )); done
    echo "$s: RSS $rss MB summed over the members"
  done
  exit 0
fi

read -r etcd_pid etcd_url < <(start etcd /usr/bin/etcd); pids+=("$etcd_pid")
read -r node_pid node_url < <(start node "$NODE"); pids+=("$node_pid")
read -r etcds_pid etcds_url < <(start etcd-tls /usr/bin/etcd https "${tls_flags[@]}"); pids+=("$etcds_pid")
read -r nodes_pid nodes_url < <(start node-tls "$NODE" https "${tls_flags[@]}"); pids+=("$nodes_pid")
for cell in "srange 1" "put 1" "put 16" "put 256" "range 16" "srange 16" "watch 16" \
  "fanout1 1" "fanout1000 1" "fanout10000 1" \
  "put100k 16" "range100k 16" "put1m 4" "range1m 4" \
  "tls:put 16" "tls:range 16" "auth:put 16" "auth:range 16" "flood:put 16"; do
  set -- $cell
  [[ -z ${BENCH_CELLS:-} || $1 =~ $BENCH_CELLS ]] || continue
  mode=plain; cell_op "$1"
  case $1 in tls:*|auth:*|flood:*) mode=${1%%:*} ;; esac
  if [ "$mode" != plain ] && [ "$mode" != tls ] && [ -z "${BENCH_USER:-}" ]; then
    enable_auth "$etcds_url"; enable_auth "$nodes_url"
    export BENCH_USER=app:apppw
  fi
  for round in 0 1 2; do
    for k in 0 1; do
      which=$(( (k + round) % 2 ))
      if [ "$which" = 0 ]; then name=etcd; pid=$etcd_pid; url=$etcd_url; else name=etcdc-node; pid=$node_pid; url=$node_url; fi
      if [ "$mode" != plain ]; then
        if [ "$which" = 0 ]; then pid=$etcds_pid; url=$etcds_url; else pid=$nodes_pid; url=$nodes_url; fi
      fi
      flood=""
      if [ "$mode" = flood ]; then
        "$TONIC" tasks badauth 16 $((SECONDS_PER + 2)) "$url" >"$dir/flood.out" &
        flood=$!
        sleep 1
      fi
      measure "$name" "$1" "$op" "$2" "$url" "$pid"
      if [ -n "$flood" ]; then
        wait "$flood"
        # tonic OP CALLERS OPS QPS ...: the wrong passwords refused per second.
        echo "$name $(awk '{ print int($5) }' "$dir/flood.out")" >>"$dir/flood"
      fi
    done
  done
done
unset BENCH_USER
touch "$dir/flood"
flood_rates=$(awk '{ r[$1] = r[$1] " " $2 } END { for (s in r) printf "%s:%s; ", s, r[s] }' "$dir/flood")
machine
echo
table "$rows"
echo
echo "flood: wrong passwords refused per second during the flood:put cells, per round: $flood_rates"
echo
for s in etcd node; do
  pid=$etcd_pid; [ "$s" = node ] && pid=$node_pid
  echo "$s: RSS $(awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$pid/status") MB, data dir $(du -sm "$dir/$s" | cut -f1) MB"
done
echo
# Chosen cells only: no memory or in-process figures.
[ -z "${BENCH_CELLS:-}" ] || exit 0
# Memory for 100,000 keys of 256 bytes: fresh servers, the same workload for both — 100
# writers each putting 3,000 times over 1,000 keys of their own (every key written 3 times,
# 300,000 revisions) — measured before and after a compaction at the head revision (the
# node keeps history in memory until compacted; etcd keeps it in bbolt).
read -r etcd2_pid etcd2_url < <(start etcd100k /usr/bin/etcd); pids+=("$etcd2_pid")
read -r node2_pid node2_url < <(start node100k "$NODE"); pids+=("$node2_pid")
for s in etcd node; do
  pid=$etcd2_pid; url=$etcd2_url; [ "$s" = node ] && { pid=$node2_pid; url=$node2_url; }
  BENCH_VALUE_BYTES=256 BENCH_PUTS_PER_CALLER=3000 "$TONIC" tasks put 100 300 "$url" >/dev/null
  fields=$(ETCDCTL_API=3 etcdctl --endpoints "$url" get bench/ --prefix --keys-only --limit 1 -w fields)
  count=$(echo "$fields" | awk '/"Count"/ { print $3 }')
  rev=$(echo "$fields" | awk '/"Revision"/ { print $3 }')
  rss() { awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$pid/status"; }
  before="RSS $(rss) MB, data dir $(du -sm "$dir/$s"100k | cut -f1) MB"
  ETCDCTL_API=3 etcdctl --endpoints "$url" compaction --physical "$rev" >/dev/null
  echo "$s with $count keys at revision $rev: $before; compacted: RSS $(rss) MB, data dir $(du -sm "$dir/$s"100k | cut -f1) MB"
done
echo
# The in-process client of an embedded member: no socket, no runtime hop for local reads.
"$PWD/target/release/examples/node_gets" "$dir/inproc" "$SECONDS_PER"
