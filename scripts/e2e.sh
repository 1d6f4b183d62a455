#!/usr/bin/env bash
# etcd's own end-to-end tests (etcd 3.4's tests/e2e, from Debian's golang-etcd-server-dev,
# built offline with Debian's Go in GOPATH mode) against real etcd and against etcdc-node,
# side by side: each test runs once with etcd as the `etcd` binary and once with etcdc-node
# (both with the real etcdctl), and the script prints a table of PASS/FAIL per test and the
# tests that pass on etcd and fail on the node. Not a test of the suite: it takes a while.
# The e2e tests use fixed loopback ports (20000 and up): each run of a test gets a network
# namespace of its own (unshare; only its loopback up) and a temp dir of its own, so runs go
# in parallel (JOBS, default 4) and beside the project's own tests without sharing a port.
#   scripts/e2e.sh                        # the ctl_v3 tests (etcdctl against a cluster)
#   scripts/e2e.sh 'TestCtlV3Put$|TestCtlV3Watch'   # a regular expression of test names
#   scripts/e2e.sh .                      # every test
#   NODE_BIN=target/debug/etcdc-node JOBS=2 scripts/e2e.sh  # another build of the node
set -euo pipefail
cd "$(dirname "$0")/.."
src=/usr/share/gocode/src/go.etcd.io/etcd
target=${CARGO_TARGET_DIR:-$PWD/target}
work=$target/e2e

# One run of one test against one server, inside its namespace: prints "test server result".
if [ "${1:-}" = --one ]; then
  t=$2 s=$3 tmp=$work/tmp/$2.$3
  rm -rf "$tmp" && mkdir -p "$tmp/tests/e2e"
  # Run where the source tree's tests/e2e would be: some tests name fixtures by relative
  # paths (../../integration/fixtures), and a test's own files land in its temp dir.
  ln -s "$src/integration" "$tmp/integration"
  ip link set lo up
  out=$(cd "$tmp/tests/e2e" && TMPDIR=$tmp timeout 300 "$work/e2e.test" -test.run "^$t\$" -test.v \
    -test.timeout 280s -bin-dir "$work/$s" -cert-dir "$src/integration/fixtures" 2>&1 || true)
  rm -rf "$tmp"
  if grep -q "^--- PASS: $t " <<<"$out"; then
    echo "$t $s PASS"
  else
    printf '%s\n' "$out" >"$work/logs/$t.$s.log"
    echo "$t $s FAIL"
  fi
  exit 0
fi

pattern=${1:-'^TestCtlV3'}
scripts/deps.sh
pkgs=()
command -v go >/dev/null || pkgs+=(golang-go)
[ -d "$src/tests/e2e" ] || pkgs+=(golang-etcd-server-dev)
if [ ${#pkgs[@]} -gt 0 ]; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null
fi
rm -rf "$work/logs" "$work/tmp"
mkdir -p "$work/etcd" "$work/node" "$work/logs"
if [ -z "${NODE_BIN:-}" ]; then
  cargo build --release --locked --bin etcdc-node 2>/dev/null
  NODE_BIN=$target/release/etcdc-node
fi
GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE="$work/cache" \
  go test -c -o "$work/e2e.test" go.etcd.io/etcd/tests/e2e
ln -sf /usr/bin/etcd "$work/etcd/etcd"
ln -sf "$(realpath "$NODE_BIN")" "$work/node/etcd"
for s in etcd node; do ln -sf /usr/bin/etcdctl "$work/$s/etcdctl"; done

tests=$("$work/e2e.test" -test.list "$pattern" | grep '^Test' || true)
[ -n "$tests" ] || { echo "no e2e test matches $pattern" >&2; exit 1; }
userns=-r; [ "$(id -u)" = 0 ] && userns=
declare -A result
while read -r t s r; do
  result[$t,$s]=$r
done < <(for t in $tests; do echo "$t etcd"; echo "$t node"; done |
  xargs -P "${JOBS:-4}" -L 1 unshare $userns -n bash "$0" --one)

echo "etcd's e2e tests (etcd 3.4.23's tests/e2e, $pattern), $(nproc) cores"
echo
echo "| test | etcd | node |"
echo "|---|---|---|"
passed=0 both=0 failing=()
for t in $tests; do
  echo "| $t | ${result[$t,etcd]} | ${result[$t,node]} |"
  if [ "${result[$t,etcd]}" = PASS ]; then
    both=$((both + 1))
    if [ "${result[$t,node]}" = PASS ]; then passed=$((passed + 1)); else failing+=("$t"); fi
  fi
done
echo
echo "the node passes $passed of the $both tests etcd passes; logs of failures in $work/logs"
[ ${#failing[@]} -eq 0 ] || echo "failing on the node only: ${failing[*]}"
