#!/usr/bin/env bash
# Runs a command against a fresh single-member etcd on free loopback ports with a temporary
# data dir, then stops etcd. The command sees ETCDC_ENDPOINTS=http://127.0.0.1:PORT.
# Extra etcd flags may come from ETCD_EXTRA_FLAGS (e.g. --enable-v2=true for the benchmark).
#   scripts/with-etcd.sh ctest --test-dir build/c-tests
# With --secure, etcd requires TLS, a client certificate and a user: certificates made by
# scripts/make-certs.sh in ETCDC_CERTS, users root (password rootpw) and app (apppw, may read
# and write under /secure/), auth enabled; ETCDC_ENDPOINTS is https://, ETCDC_USER=app and
# ETCDC_PASSWORD=apppw.
#   scripts/with-etcd.sh --secure build/c-tests/test_secure
set -euo pipefail
secure=""
if [ "${1:-}" = "--secure" ]; then
  secure=1
  shift
fi
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

scheme=http
tls_flags=()
ctl_flags=()
if [ -n "$secure" ]; then
  certs="$dir/certs"
  "$(dirname "$0")/make-certs.sh" "$certs"
  scheme=https
  tls_flags=(--cert-file "$certs/server.pem" --key-file "$certs/server-key.pem"
    --trusted-ca-file "$certs/ca.pem" --client-cert-auth)
  # etcdctl as root, by its certificate's common name.
  ctl_flags=(--cacert "$certs/ca.pem" --cert "$certs/root.pem" --key "$certs/root-key.pem")
fi
ctl() { ETCDCTL_API=3 etcdctl "${ctl_flags[@]}" --endpoints "$client" --command-timeout=5s "$@"; }

# Starts etcd on two free ports; true once it answers. A port taken between the check and
# etcd's bind (tests run in parallel) fails the start, and the caller tries new ports.
start_etcd() {
  client_port=$(free_port)
  peer_port=$(free_port)
  [ "$peer_port" != "$client_port" ] || peer_port=$(free_port)
  client="$scheme://127.0.0.1:$client_port"
  peer="http://127.0.0.1:$peer_port"
  rm -rf "$dir/data"
  # shellcheck disable=SC2086
  "$ETCD" --name single --data-dir "$dir/data" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "single=$peer" --log-level warn --logger zap "${tls_flags[@]}" \
    ${ETCD_EXTRA_FLAGS:-} >"$dir/etcd.log" 2>&1 &
  etcd_pid=$!
  for _ in $(seq 1 100); do
    if ctl --command-timeout=1s endpoint health >/dev/null 2>&1; then
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
if [ -n "$secure" ]; then
  {
    ctl user add root:rootpw
    ctl role add root
    ctl user grant-role root root
    ctl user add app:apppw
    ctl role add app
    ctl role grant-permission app readwrite /secure/ --prefix
    ctl user grant-role app app
    ctl auth enable
  } >/dev/null
  export ETCDC_CERTS="$certs" ETCDC_USER=app ETCDC_PASSWORD=apppw
fi
export ETCDC_ENDPOINTS="$client"
"$@"
