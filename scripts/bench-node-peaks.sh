#!/usr/bin/env bash
# Benchmark (not a test): peak memory (VmHWM) of etcdc-node against real etcd 3.4, side by side
# in one run, where a snapshot of the whole store moves — the moments a steady-state RSS does
# not show. The same load for both: 100 writers × 3,000 puts of 256 bytes over 100,000 keys
# (300,000 revisions, no compaction).
#   1. three members (--snapshot-count 10000), the third SIGKILLed before the load: the
#      leader's peak while it holds the log and tries to reach the dead member; then the third
#      restarted, catching up by snapshot: its peak and how long until it serves every key;
#   2. one member, then `etcdctl snapshot save`: its peak while it streams the backup.
#   scripts/bench-node-peaks.sh      # about 3 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --locked --bin etcdc-node --example tonic_baseline 2>/dev/null
TONIC="$PWD/target/release/examples/tonic_baseline"
NODE="$PWD/target/release/etcdc-node"
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
. scripts/free-port.sh
hwm() { awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$1/status"; }
keys() { # url -> how many bench/ keys it serves from its own store
  ETCDCTL_API=3 etcdctl --endpoints "$1" --command-timeout=2s get bench/ --prefix --keys-only \
    --limit 1 --consistency=s -w fields 2>/dev/null | awk '/"Count"/ { print $3 }'
}
until_serving() { # url
  for _ in $(seq 1 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$1" --command-timeout=1s put /warm x >/dev/null 2>&1 && return
    sleep 0.1
  done
}
load() { BENCH_VALUE_BYTES=256 BENCH_PUTS_PER_CALLER=3000 "$TONIC" tasks put 100 300 "$1" >/dev/null; }

echo "etcd $(/usr/bin/etcd --version | head -1 | cut -d' ' -f3) vs etcdc-node, $(nproc) cores, peak RSS (VmHWM) in MB"
echo
echo "| moment | etcd | node | node/etcd |"
echo "|---|---:|---:|---:|"
declare -A peak
for s in etcd node; do
  bin=/usr/bin/etcd; [ "$s" = node ] && bin=$NODE
  declare -a c p pid
  for i in 1 2 3; do c[$i]=$(free_port); p[$i]=$(free_port); done
  cluster="${s}1=http://127.0.0.1:${p[1]},${s}2=http://127.0.0.1:${p[2]},${s}3=http://127.0.0.1:${p[3]}"
  member() { # i
    "$bin" --name "$s$1" --data-dir "$dir/$s$1" --snapshot-count 10000 \
      --listen-client-urls "http://127.0.0.1:${c[$1]}" --advertise-client-urls "http://127.0.0.1:${c[$1]}" \
      --listen-peer-urls "http://127.0.0.1:${p[$1]}" --initial-advertise-peer-urls "http://127.0.0.1:${p[$1]}" \
      --initial-cluster "$cluster" --initial-cluster-token "peaks-$s" >>"$dir/$s$1.log" 2>&1 &
    pid[$1]=$!; pids+=("${pid[$1]}")
  }
  for i in 1 2 3; do member "$i"; done
  until_serving "http://127.0.0.1:${c[1]}"
  kill -9 "${pid[3]}"; wait "${pid[3]}" 2>/dev/null || true
  load "http://127.0.0.1:${c[1]}"
  leader=$(( $(hwm "${pid[1]}") > $(hwm "${pid[2]}") ? $(hwm "${pid[1]}") : $(hwm "${pid[2]}") ))
  peak[$s,leader]=$leader
  want=$(keys "http://127.0.0.1:${c[1]}")
  member 3
  started=$(date +%s%N)
  for _ in $(seq 1 1200); do [ "$(keys "http://127.0.0.1:${c[3]}")" = "$want" ] && break; sleep 0.1; done
  [ "$(keys "http://127.0.0.1:${c[3]}")" = "$want" ] || { echo "${s}3 never caught up" >&2; exit 1; }
  peak[$s,caught]="$(hwm "${pid[3]}") MB in $(( ($(date +%s%N) - started) / 1000000 )) ms"
  peak[$s,catchup]=$(hwm "${pid[3]}")
  for i in 1 2 3; do kill "${pid[$i]}"; wait "${pid[$i]}" 2>/dev/null || true; done

  # One member, then a backup.
  cs=$(free_port); ps=$(free_port)
  "$bin" --name "${s}b" --data-dir "$dir/${s}b" \
    --listen-client-urls "http://127.0.0.1:$cs" --advertise-client-urls "http://127.0.0.1:$cs" \
    --listen-peer-urls "http://127.0.0.1:$ps" --initial-advertise-peer-urls "http://127.0.0.1:$ps" \
    --initial-cluster "${s}b=http://127.0.0.1:$ps" >"$dir/${s}b.log" 2>&1 &
  one=$!; pids+=("$one")
  until_serving "http://127.0.0.1:$cs"
  load "http://127.0.0.1:$cs"
  peak[$s,loaded]=$(hwm "$one")
  # etcdctl 3.4 wants a bare host:port for snapshot save.
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$cs" snapshot save "$dir/$s.backup" >/dev/null 2>&1
  peak[$s,backup]=$(hwm "$one")
  peak[$s,size]=$(( $(stat -c %s "$dir/$s.backup") / 1048576 ))
  kill "$one"; wait "$one" 2>/dev/null || true
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
echo "| leader of 3, a member down, after the load | ${peak[etcd,leader]} | ${peak[node,leader]} | $(ratio "${peak[etcd,leader]}" "${peak[node,leader]}") |"
echo "| that member restarted, caught up by snapshot | ${peak[etcd,catchup]} | ${peak[node,catchup]} | $(ratio "${peak[etcd,catchup]}" "${peak[node,catchup]}") |"
echo "| one member after the load | ${peak[etcd,loaded]} | ${peak[node,loaded]} | $(ratio "${peak[etcd,loaded]}" "${peak[node,loaded]}") |"
echo "| the same member after \`etcdctl snapshot save\` | ${peak[etcd,backup]} | ${peak[node,backup]} | $(ratio "${peak[etcd,backup]}" "${peak[node,backup]}") |"
echo
echo "catch-up: etcd ${peak[etcd,caught]}, node ${peak[node,caught]}; backup size: etcd ${peak[etcd,size]} MB, node ${peak[node,size]} MB"
