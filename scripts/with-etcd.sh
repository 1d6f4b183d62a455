#!/usr/bin/env bash
# Runs a command against a fresh single-member etcd on free loopback ports with a temporary
# data dir, then stops etcd. The command sees ETCDC_ENDPOINTS=http://127.0.0.1:PORT.
# Extra etcd flags may come from ETCD_EXTRA_FLAGS (e.g. --enable-v2=true for the benchmark).
#   scripts/with-etcd.sh ctest --test-dir build/c-tests
set -euo pipefail
ETCD=${ETCD_BIN:-/usr/bin/etcd}
[ -x "$ETCD" ] || { echo "with-etcd: $ETCD not found (scripts/deps.sh installs it)" >&2; exit 1; }

. "$(dirname "$0")/free-port.sh"

dir=$(mktemp -d)
etcd_pid=""
cleanup() {
  if [ -n "$etcd_pid" ]; then
    kill "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

# Starts etcd on two free ports; true once it answers. A port taken between the check and
# etcd's bind (tests run in parallel) fails the start, and the caller tries new ports.
start_etcd() {
  client_port=$(free_port)
  peer_port=$(free_port)
  [ "$peer_port" != "$client_port" ] || peer_port=$(free_port)
  client="http://127.0.0.1:$client_port"
  peer="http://127.0.0.1:$peer_port"
  rm -rf "$dir/data"
  # shellcheck disable=SC2086
  "$ETCD" --name single --data-dir "$dir/data" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "single=$peer" --log-level warn --logger zap \
    ${ETCD_EXTRA_FLAGS:-} >"$dir/etcd.log" 2>&1 &
  etcd_pid=$!
  for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints "$client" --command-timeout=1s endpoint health >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$etcd_pid" 2>/dev/null || { wait "$etcd_pid" 2>/dev/null; etcd_pid=""; return 1; }
    sleep 0.1
  done
  return 1
}

started=""
for _ in 1 2 3 4 5; do
  if start_etcd; then started=1; break; fi
  grep -q "address already in use" "$dir/etcd.log" || break
done
[ -n "$started" ] || { cat "$dir/etcd.log" >&2; exit 1; }
export ETCDC_ENDPOINTS="$client"
"$@"
