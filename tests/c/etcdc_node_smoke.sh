#!/usr/bin/env bash
# The installed etcdc-node, configured as etcd's systemd unit does (ETCD_* variables only),
# serves etcdctl and GET /health on a free loopback port and stops on SIGTERM. Stopped by its own pid.
set -eu
node="$1"
dir=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
. "$(dirname "$0")/../../scripts/free-port.sh"
cport=$(free_port); pport=$(free_port)
ETCD_NAME=smoke ETCD_DATA_DIR="$dir/data" \
ETCD_LISTEN_CLIENT_URLS="http://127.0.0.1:$cport" ETCD_ADVERTISE_CLIENT_URLS="http://127.0.0.1:$cport" \
ETCD_LISTEN_PEER_URLS="http://127.0.0.1:$pport" ETCD_INITIAL_ADVERTISE_PEER_URLS="http://127.0.0.1:$pport" \
ETCD_INITIAL_CLUSTER="smoke=http://127.0.0.1:$pport" \
  "$node" 2>"$dir/log" &
pid=$!
ctl() { ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$cport" --command-timeout=2s "$@"; }
i=0
until ctl put /smoke ok >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -lt 100 ] || { cat "$dir/log"; exit 1; }
  kill -0 "$pid" || { cat "$dir/log"; exit 1; }
  sleep 0.1
done
[ "$(ctl get /smoke --print-value-only)" = ok ]
# etcd's HTTP health check on the client URL, as load balancers and unit files use it.
exec 3<>"/dev/tcp/127.0.0.1/$cport"
printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
health=$(timeout 5 cat <&3)
exec 3<&- 3>&-
echo "$health" | grep -q '"health":"true"' || { echo "no health: $health"; exit 1; }
kill -TERM "$pid"
wait "$pid"
pid=""
grep -q "stopping" "$dir/log"
[ -d "$dir/data/wal" ]
echo "etcdc-node smoke: ok"
