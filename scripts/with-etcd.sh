#!/usr/bin/env bash
# Runs a command against a fresh single-member etcd on free loopback ports with a temporary
# data dir, then stops etcd. The command sees ETCDC_ENDPOINTS=http://127.0.0.1:PORT.
# Extra etcd flags may come from ETCD_EXTRA_FLAGS (e.g. --enable-v2=true for the benchmark).
#   scripts/with-etcd.sh ctest --test-dir build/c-tests
set -euo pipefail
ETCD=${ETCD_BIN:-/usr/bin/etcd}
[ -x "$ETCD" ] || { echo "with-etcd: $ETCD not found (scripts/deps.sh installs it)" >&2; exit 1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    port_in_use "$p" || { echo "$p"; return; }
  done
  echo "with-etcd: no free port" >&2; exit 1
}

dir=$(mktemp -d)
client_port=$(free_port)
peer_port=$(free_port)
[ "$peer_port" != "$client_port" ] || peer_port=$(free_port)
client="http://127.0.0.1:$client_port"
peer="http://127.0.0.1:$peer_port"
# shellcheck disable=SC2086
"$ETCD" --name single --data-dir "$dir/data" \
  --listen-client-urls "$client" --advertise-client-urls "$client" \
  --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
  --initial-cluster "single=$peer" --log-level warn --logger zap \
  ${ETCD_EXTRA_FLAGS:-} >"$dir/etcd.log" 2>&1 &
etcd_pid=$!
cleanup() {
  kill "$etcd_pid" 2>/dev/null || true
  wait "$etcd_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  if ETCDCTL_API=3 etcdctl --endpoints "$client" --command-timeout=1s endpoint health >/dev/null 2>&1; then
    break
  fi
  kill -0 "$etcd_pid" 2>/dev/null || { cat "$dir/etcd.log" >&2; exit 1; }
  sleep 0.1
done
export ETCDC_ENDPOINTS="$client"
"$@"
